"""aiohttp application wiring: Binance-style middleware, /fapi routes and the /_sim admin app."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import NoReturn

import structlog
from aiohttp import web

from . import errors, routes_account, routes_market, routes_trade
from .admin import build_admin_app
from .auth import request_params
from .engine import Engine
from .faults import FaultInjector, Outage
from .ratelimit import TEN_SECONDS_MS, MinuteCounter
from .replay import load_replay
from .settings import SimSettings
from .state import STATE, SimState, error_reply, state_of
from shared.runtime.liveness import sd_notify

log = structlog.get_logger("exchange_sim")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@web.middleware
async def binance_envelope(request: web.Request, handler):
    """Turn ApiError into Binance error bodies and stamp the rate-limit headers."""
    if not request.path.startswith("/fapi/"):
        return await handler(request)
    state = state_of(request)
    outage = state.faults.outage(request.method, request.path)
    if outage is Outage.OVERLOADED and await _exempt_from_throttling(request):
        outage = None
    if outage is Outage.WAF_BLOCKED:  # the firewall's own page, before the API: none of its headers
        log.info("fault_injected", fault=f"outage:{outage.value}", path=request.path)
        return web.Response(status=403, text=errors.WAF_PAGE, content_type="text/html")
    try:
        if outage is not None:
            _raise_outage(state, outage, request.path)
        response = await handler(request)
    except errors.ApiError as exc:
        response = error_reply(exc)
    response.headers["X-MBX-USED-WEIGHT-1M"] = str(state.weight.current())
    if request.path == "/fapi/v1/order" and request.method == "POST":
        response.headers["X-MBX-ORDER-COUNT-10S"] = str(state.orders_10s.current())
        response.headers["X-MBX-ORDER-COUNT-1M"] = str(state.orders.current())
    # the path only: query strings carry signatures, which must never reach the logs
    log.info("request", method=request.method, path=request.path, status=response.status)
    return response


async def _exempt_from_throttling(request: web.Request) -> bool:
    """-1008 spares orders that reduce exposure (reduceOnly=true, closePosition=true)."""
    params = request_params(request.rel_url.raw_query_string, await request.text() if request.can_read_body else "")
    return any(params.get(name, "").lower() == "true" for name in ("reduceOnly", "closePosition"))


def _raise_outage(state: SimState, outage: Outage, path: str) -> NoReturn:
    """An injected outage of this endpoint (a Binance JSON error): raised before anything is read or executed."""
    log.info("fault_injected", fault=f"outage:{outage.value}", path=path)
    retry_after_s = state.faults.config.rate_limited_retry_after_s
    raise {
        Outage.SERVICE_UNAVAILABLE: errors.service_unavailable,
        Outage.OVERLOADED: errors.order_throttled,
        Outage.RATE_LIMITED: lambda: errors.too_many_requests(state.settings.weight_limit_per_minute, retry_after_s),
        Outage.IP_BANNED: lambda: errors.ip_banned(state.clock() + (retry_after_s or errors.BAN_WITHOUT_RETRY_AFTER_S)
                                                   * 1000, retry_after_s),
    }[outage]()


def build_app(settings: SimSettings, clock: Callable[[], int] | None = None) -> web.Application:
    clock = clock or wall_clock_ms
    engine = Engine(settings, clock, load_replay(settings.klines_csv))
    state = SimState(settings, clock, engine, FaultInjector(settings.seed), MinuteCounter(clock),
                     MinuteCounter(clock), MinuteCounter(clock, TEN_SECONDS_MS))
    app = web.Application(middlewares=[binance_envelope])
    app[STATE] = state
    routes_market.add_routes(app)
    routes_trade.add_routes(app)
    routes_account.add_routes(app)
    app.add_subapp("/_sim/", build_admin_app())
    return app


def configure_logging(level: str = "INFO") -> None:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(),
        # Only the simulator's own process calls this, and nothing reconfigures structlog after it, so
        # each module's lazy proxy may assemble its logger once instead of on every call.
        cache_logger_on_first_use=True,
    )


WATCHDOG_EVERY_S = 10.0


async def _watchdog() -> None:
    # A deliberate timer: it runs only while the event loop serving requests is alive.
    while True:
        sd_notify("WATCHDOG=1")
        await asyncio.sleep(WATCHDOG_EVERY_S)


async def _notify_systemd(app: web.Application) -> None:
    sd_notify("READY=1")
    app["watchdog"] = asyncio.get_running_loop().create_task(_watchdog())


def run(settings: SimSettings) -> None:
    configure_logging(settings.log_level)
    log.info("starting", host=settings.host, port=settings.port, seed=settings.seed,
             balance_usdt=str(settings.balance_usdt))
    app = build_app(settings)
    app.on_startup.append(_notify_systemd)
    web.run_app(app, host=settings.host, port=settings.port, print=None,
                access_log=None)
