"""Shared per-app state and request helpers used by every route module."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from . import errors
from .auth import authenticate_signed, check_api_key, request_params
from .engine import Engine
from .faults import FaultInjector
from .ratelimit import MinuteCounter
from .settings import SimSettings

Clock = Callable[[], int]
# what json.dumps(payload, separators=(",", ":")) builds on every call; encoders keep no state between calls
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass
class SimState:
    settings: SimSettings
    clock: Clock
    engine: Engine
    faults: FaultInjector
    weight: MinuteCounter
    orders: MinuteCounter
    orders_10s: MinuteCounter
    listen_keys: set[str] = field(default_factory=set)
    limited: int = 0  # requests answered 429 for the weight limit in the current minute window
    limited_window: int = -1
    banned_until_ms: int = 0

    def reset(self) -> None:
        self.engine.reset()
        self.faults = FaultInjector(self.settings.seed)
        self.weight.reset()
        self.orders.reset()
        self.orders_10s.reset()
        self.limited, self.limited_window, self.banned_until_ms = 0, -1, 0
        self.listen_keys.clear()


STATE = web.AppKey("exchange_sim_state", SimState)


def state_of(request: web.Request) -> SimState:
    # config_dict looks in the handling app first, then its parents (the /_sim/ sub-app has no state of its own)
    state = request.app.get(STATE)
    return state if state is not None else request.config_dict[STATE]


def charge(request: web.Request, weight: int) -> None:
    """Count request weight against the per-minute IP limit, rejecting with -1003 beyond it. A client that keeps
    sending past the limit (more than EXCHANGE_SIM_BAN_AFTER_429S requests answered 429 in one window) is banned
    for EXCHANGE_SIM_BAN_SECONDS: every request is then answered 418, as Binance bans an IP that does not back off
    ("from 2 minutes to 3 days"; its threshold is not published, so this one is a setting)."""
    state = state_of(request)
    now_ms = state.clock()
    if now_ms < state.banned_until_ms:
        raise errors.ip_banned(state.banned_until_ms, -(-(state.banned_until_ms - now_ms) // 1000))
    used = state.weight.add(weight)
    if used <= state.settings.weight_limit_per_minute:
        return
    if state.limited_window != state.weight.window:
        state.limited, state.limited_window = 0, state.weight.window
    state.limited += 1
    if state.limited > state.settings.ban_after_429s:
        state.banned_until_ms = now_ms + state.settings.ban_seconds * 1000
        raise errors.ip_banned(state.banned_until_ms, state.settings.ban_seconds)
    # Retry-After: until the minute window ends, as Binance says
    raise errors.too_many_requests(state.settings.weight_limit_per_minute, state.weight.seconds_left())


def client_ip(request: web.Request) -> str:
    return request.remote or "127.0.0.1"


def public_params(request: web.Request) -> dict[str, str]:
    return request_params(request.rel_url.raw_query_string, "")


async def signed_params(request: web.Request) -> dict[str, str]:
    state = state_of(request)
    raw_body = await request.text() if request.can_read_body else ""
    return authenticate_signed(
        api_key_header=request.headers.get("X-MBX-APIKEY"), raw_query=request.rel_url.raw_query_string,
        raw_body=raw_body, api_key=state.settings.api_key,
        api_secret=state.settings.api_secret.get_secret_value(), now_ms=state.clock(),
        client_ip=client_ip(request),
    )


async def key_only_params(request: web.Request) -> dict[str, str]:
    """USER_STREAM endpoints: API key required, no signature."""
    state = state_of(request)
    check_api_key(request.headers.get("X-MBX-APIKEY"), state.settings.api_key, client_ip(request))
    raw_body = await request.text() if request.can_read_body else ""
    return request_params(request.rel_url.raw_query_string, raw_body)


def reply(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=_COMPACT_JSON.encode(payload), status=status,
                        content_type="application/json", headers=headers)


def error_reply(error: errors.ApiError) -> web.Response:
    return reply(error.body(), error.status, error.headers)
