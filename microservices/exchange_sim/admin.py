"""Simulator-only control endpoints under /_sim/ (unauthenticated, JSON, decimals as strings)."""

from __future__ import annotations

import json

import structlog
from aiohttp import web

from .engine import known_symbol, parse_admin_price
from .faults import FaultConfigError, parse_config
from .state import reply, state_of
from .views import money, order_query

log = structlog.get_logger("exchange_sim.admin")


class AdminError(Exception):
    pass


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AdminError("body must be a JSON object") from None
    if not isinstance(body, dict):
        raise AdminError("body must be a JSON object")
    return body


def _symbol(body: dict) -> str:
    symbol = body.get("symbol")
    if not known_symbol(symbol):
        raise AdminError(f"unknown symbol: {symbol!r}")
    return symbol


@web.middleware
async def admin_errors(request: web.Request, handler):
    try:
        return await handler(request)
    except AdminError as exc:
        return reply({"error": str(exc)}, status=400)


def _price_view(request: web.Request, symbol: str) -> dict:
    engine = state_of(request).engine
    return {"symbol": symbol, "price": money(engine.mark(symbol)), "frozen": engine.prices.is_frozen(symbol)}


async def set_price(request: web.Request) -> web.Response:
    body = await _body(request)
    symbol = _symbol(body)
    price = parse_admin_price(body.get("price"))
    if price is None:
        raise AdminError("price must be a positive decimal string")
    state_of(request).engine.set_price(symbol, price)
    log.info("admin_price_set", symbol=symbol, price=str(price))
    return reply(_price_view(request, symbol))


async def get_price(request: web.Request) -> web.Response:
    return reply(_price_view(request, _symbol(dict(request.query))))


async def set_walk(request: web.Request) -> web.Response:
    body = await _body(request)
    symbol = _symbol(body)
    frozen = body.get("frozen", False)
    if not isinstance(frozen, bool):
        raise AdminError("frozen must be a boolean")
    state_of(request).engine.set_frozen(symbol, frozen)
    log.info("admin_walk_set", symbol=symbol, frozen=frozen)
    return reply(_price_view(request, symbol))


async def get_faults(request: web.Request) -> web.Response:
    return reply(state_of(request).faults.config.to_json())


async def set_faults(request: web.Request) -> web.Response:
    body = await _body(request)
    faults = state_of(request).faults
    try:
        faults.configure(parse_config(body, faults.config))
    except FaultConfigError as exc:
        raise AdminError(str(exc)) from None
    log.info("admin_faults_set", **faults.config.to_json())
    return reply(faults.config.to_json())


async def list_orders(request: web.Request) -> web.Response:
    engine = state_of(request).engine
    engine.sync()
    return reply([order_query(o) for o in sorted(engine.account.orders.values(), key=lambda o: o.order_id)])


async def reset(request: web.Request) -> web.Response:
    state_of(request).reset()
    log.info("admin_reset")
    return reply({"reset": True})


async def account_state(request: web.Request) -> web.Response:
    engine = state_of(request).engine
    snap = engine.snapshot()
    positions = [{"symbol": p.symbol, "positionSide": p.side, "positionAmt": str(p.amount),
                  "entryPrice": str(p.entry)} for p in engine.account.live_positions()]
    return reply({"walletBalance": money(snap.wallet), "unrealizedProfit": money(snap.unrealized),
                  "availableBalance": money(snap.available), "dualSidePosition": engine.account.dual_side,
                  "positions": positions})


def build_admin_app() -> web.Application:
    admin = web.Application(middlewares=[admin_errors])
    admin.router.add_post("/price", set_price)
    admin.router.add_get("/price", get_price)
    admin.router.add_post("/walk", set_walk)
    admin.router.add_get("/faults", get_faults)
    admin.router.add_post("/faults", set_faults)
    admin.router.add_get("/orders", list_orders)
    admin.router.add_post("/reset", reset)
    admin.router.add_get("/state", account_state)
    return admin
