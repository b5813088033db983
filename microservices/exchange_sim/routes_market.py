"""Public market-data endpoints under /fapi."""

from __future__ import annotations

from aiohttp import web

from . import klines as kline_bars
from .orders import optional_symbol
from .state import charge, public_params, reply, state_of
from .symbols import SYMBOLS, exchange_info
from .views import last_price, money

FUNDING_PERIOD_MS = 8 * 3_600_000


async def ping(request: web.Request) -> web.Response:
    charge(request, 1)
    return reply({})


async def server_time(request: web.Request) -> web.Response:
    charge(request, 1)
    return reply({"serverTime": state_of(request).clock()})


async def exchange_information(request: web.Request) -> web.Response:
    charge(request, 1)
    state = state_of(request)
    s = state.settings
    return reply(exchange_info(state.clock(), s.weight_limit_per_minute, s.order_limit_per_minute,
                                       s.order_limit_per_10s))


def _symbols_or_all(request: web.Request, single: int, every: int) -> tuple[list[str], bool]:
    spec = optional_symbol(public_params(request))
    charge(request, single if spec else every)
    return ([spec.symbol] if spec else list(SYMBOLS)), spec is not None


def _premium(request: web.Request, symbol: str) -> dict:
    state = state_of(request)
    mark, now = state.engine.mark(symbol), state.clock()
    return {
        "symbol": symbol, "markPrice": money(mark), "indexPrice": money(mark),
        "estimatedSettlePrice": money(mark), "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
        "nextFundingTime": (now // FUNDING_PERIOD_MS + 1) * FUNDING_PERIOD_MS, "time": now,
    }


async def premium_index(request: web.Request) -> web.Response:
    symbols, single = _symbols_or_all(request, 1, 10)
    rows = [_premium(request, s) for s in symbols]
    return reply(rows[0] if single else rows)


async def ticker_price(request: web.Request) -> web.Response:
    symbols, single = _symbols_or_all(request, 1, 2)
    state = state_of(request)
    rows = [{"symbol": s, "price": last_price(s, state.engine.mark(s)), "time": state.clock()} for s in symbols]
    return reply(rows[0] if single else rows)


async def klines(request: web.Request) -> web.Response:
    params = public_params(request)
    limit = int(params["limit"]) if params.get("limit", "").isdigit() else 500
    charge(request, kline_bars.kline_weight(limit))
    state = state_of(request)
    state.engine.sync()
    return reply(kline_bars.klines(state.engine.prices, params, state.clock()))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fapi/v1/ping", ping)
    app.router.add_get("/fapi/v1/time", server_time)
    app.router.add_get("/fapi/v1/exchangeInfo", exchange_information)
    app.router.add_get("/fapi/v1/premiumIndex", premium_index)
    app.router.add_get("/fapi/v1/ticker/price", ticker_price)
    app.router.add_get("/fapi/v2/ticker/price", ticker_price)
    app.router.add_get("/fapi/v1/klines", klines)
