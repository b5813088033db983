"""Signed order endpoints under /fapi/v1, including the injected order faults."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from . import errors
from .auth import check_engine_window
from .faults import Fault
from .orders import optional_symbol, require_symbol
from .state import SimState, charge, reply, signed_params, state_of
from .views import order_ack, order_query, order_result, trade_view

log = structlog.get_logger("exchange_sim.orders")
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000


def _count_order(state: SimState) -> None:
    """Each order placed counts in both windows (a refused one too, as on Binance)."""
    per_10s, per_minute = state.orders_10s.add(1), state.orders.add(1)
    if per_10s > state.settings.order_limit_per_10s:
        raise errors.too_many_orders(state.settings.order_limit_per_10s, "TEN_SECONDS")
    if per_minute > state.settings.order_limit_per_minute:
        raise errors.too_many_orders(state.settings.order_limit_per_minute, "MINUTE")


def _execute(state: SimState, params: dict[str, str]) -> web.Response:
    _count_order(state)
    order, resp_type = state.engine.place(params)
    return reply(order_result(order) if resp_type == "RESULT" else order_ack(order))


def _drop(request: web.Request) -> web.Response:
    # closing the transport makes the client see a connection reset with no HTTP response
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=503)


async def new_order(request: web.Request) -> web.Response:
    charge(request, 0)
    params = await signed_params(request)
    state = state_of(request)
    fault = state.faults.draw()
    if state.faults.config.latency_ms:
        await asyncio.sleep(state.faults.config.latency_ms / 1000)  # deliberate: the latency a test injected
        check_engine_window(params, state.clock())
    if fault is not Fault.NONE:
        log.info("fault_injected", fault=fault.value, client_order_id=params.get("newClientOrderId"))
    if fault is Fault.RATE_LIMITED:
        raise errors.too_many_requests(state.settings.weight_limit_per_minute,
                                       state.faults.config.rate_limited_retry_after_s)
    if fault is Fault.UNAVAILABLE_NO_EXECUTE:
        raise errors.service_unavailable()
    if fault is Fault.DROP_CONNECTION and not state.faults.config.drop_after_execute:
        return _drop(request)
    try:
        response = _execute(state, params)
    except errors.ApiError:
        if fault is Fault.NONE:
            raise
        response = None
    if fault is Fault.UNKNOWN_AFTER_EXECUTE:
        raise errors.unknown_after_execute()
    if fault is Fault.DROP_CONNECTION:
        return _drop(request)
    return response


async def get_order(request: web.Request) -> web.Response:
    charge(request, 1)
    params = await signed_params(request)
    engine = state_of(request).engine
    engine.sync()
    return reply(order_query(engine.find(params)))


async def cancel_order(request: web.Request) -> web.Response:
    charge(request, 1)
    params = await signed_params(request)
    return reply(order_result(state_of(request).engine.cancel(params)))


async def cancel_all_orders(request: web.Request) -> web.Response:
    charge(request, 1)
    state_of(request).engine.cancel_all(await signed_params(request))
    return reply({"code": 200, "msg": "The operation of cancel all open order is done."})


async def open_orders(request: web.Request) -> web.Response:
    params = await _signed_with_symbol_weight(request, 1, 40)
    engine = state_of(request).engine
    engine.sync()
    spec = optional_symbol(params)
    orders = engine.account.open_orders(spec.symbol if spec else None)
    return reply([order_query(o) for o in sorted(orders, key=lambda o: o.order_id)])


async def _signed_with_symbol_weight(request: web.Request, single: int, every: int) -> dict[str, str]:
    has_symbol = "symbol=" in request.rel_url.raw_query_string or "symbol=" in (await request.text())
    charge(request, single if has_symbol else every)
    return await signed_params(request)


def _limit(params: dict[str, str]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise errors.invalid_param("limit")
    return int(raw)


def _window(params: dict[str, str], rows: list, time_of) -> list:
    start, end = params.get("startTime"), params.get("endTime")
    if start and start.isdigit():
        rows = [r for r in rows if time_of(r) >= int(start)]
    if end and end.isdigit():
        rows = [r for r in rows if time_of(r) <= int(end)]
    return rows


async def all_orders(request: web.Request) -> web.Response:
    charge(request, 5)
    params = await signed_params(request)
    engine = state_of(request).engine
    engine.sync()
    symbol = require_symbol(params).symbol
    rows = sorted((o for o in engine.account.orders.values() if o.symbol == symbol), key=lambda o: o.order_id)
    if params.get("orderId", "").isdigit():
        rows = [o for o in rows if o.order_id >= int(params["orderId"])]
    rows = _window(params, rows, lambda o: o.time)
    return reply([order_query(o) for o in rows[-_limit(params):]])


async def user_trades(request: web.Request) -> web.Response:
    charge(request, 5)
    params = await signed_params(request)
    engine = state_of(request).engine
    engine.sync()
    symbol = require_symbol(params).symbol
    rows = [t for t in engine.account.trades if t.symbol == symbol]
    if params.get("orderId", "").isdigit():
        rows = [t for t in rows if t.order_id == int(params["orderId"])]
    if params.get("fromId", "").isdigit():
        rows = [t for t in rows if t.trade_id >= int(params["fromId"])]
    rows = _window(params, rows, lambda t: t.time)
    return reply([trade_view(t) for t in rows[-_limit(params):]])


def add_routes(app: web.Application) -> None:
    app.router.add_post("/fapi/v1/order", new_order)
    app.router.add_get("/fapi/v1/order", get_order)
    app.router.add_delete("/fapi/v1/order", cancel_order)
    app.router.add_delete("/fapi/v1/allOpenOrders", cancel_all_orders)
    app.router.add_get("/fapi/v1/openOrders", open_orders)
    app.router.add_get("/fapi/v1/allOrders", all_orders)
    app.router.add_get("/fapi/v1/userTrades", user_trades)
