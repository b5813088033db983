"""Signed account endpoints (positions, balances, settings) and the user-stream listenKey."""

from __future__ import annotations

import secrets

from aiohttp import web

from . import errors
from .orders import optional_symbol
from .state import charge, key_only_params, reply, signed_params, state_of
from .symbols import SYMBOLS
from .views import account_view, balances, max_notional, positions_v2, positions_v3

SUCCESS = {"code": 200, "msg": "success"}


async def _synced(request: web.Request, weight: int):
    charge(request, weight)
    params = await signed_params(request)
    engine = state_of(request).engine
    engine.sync()
    return params, engine


def _position_handler(render):
    async def handler(request: web.Request) -> web.Response:
        params, engine = await _synced(request, 5)
        spec = optional_symbol(params)
        symbols = [spec.symbol] if spec else list(SYMBOLS)
        return reply(render(engine.account, symbols, engine.prices.mark, engine.settings.taker_fee))
    return handler


def _account_handler(v2: bool):
    async def handler(request: web.Request) -> web.Response:
        _, engine = await _synced(request, 5)
        return reply(account_view(engine.account, engine.snapshot(), engine.prices.mark, v2))
    return handler


async def balance(request: web.Request) -> web.Response:
    _, engine = await _synced(request, 5)
    return reply(balances(engine.account, engine.snapshot()))


async def leverage(request: web.Request) -> web.Response:
    charge(request, 1)
    params = await signed_params(request)
    spec, value = state_of(request).engine.change_leverage(params)
    return reply({"leverage": value, "maxNotionalValue": max_notional(value), "symbol": spec.symbol})


async def margin_type(request: web.Request) -> web.Response:
    charge(request, 1)
    state_of(request).engine.change_margin_type(await signed_params(request))
    return reply(SUCCESS)


async def set_position_mode(request: web.Request) -> web.Response:
    charge(request, 1)
    state_of(request).engine.change_position_mode(await signed_params(request))
    return reply(SUCCESS)


async def get_position_mode(request: web.Request) -> web.Response:
    charge(request, 30)
    await signed_params(request)
    return reply({"dualSidePosition": state_of(request).engine.account.dual_side})


async def new_listen_key(request: web.Request) -> web.Response:
    charge(request, 1)
    await key_only_params(request)
    keys = state_of(request).listen_keys
    # Binance hands back the same key while one is valid
    if not keys:
        keys.add(secrets.token_urlsafe(48).replace("-", "a").replace("_", "b")[:64])
    return reply({"listenKey": next(iter(keys))})


async def keepalive_listen_key(request: web.Request) -> web.Response:
    charge(request, 1)
    await key_only_params(request)
    keys = state_of(request).listen_keys
    if not keys:
        raise errors.invalid_listen_key()
    return reply({"listenKey": next(iter(keys))})


async def close_listen_key(request: web.Request) -> web.Response:
    charge(request, 1)
    await key_only_params(request)
    state_of(request).listen_keys.clear()
    return reply({})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fapi/v2/positionRisk", _position_handler(positions_v2))
    app.router.add_get("/fapi/v3/positionRisk", _position_handler(positions_v3))
    app.router.add_get("/fapi/v2/account", _account_handler(v2=True))
    app.router.add_get("/fapi/v3/account", _account_handler(v2=False))
    app.router.add_get("/fapi/v2/balance", balance)
    app.router.add_get("/fapi/v3/balance", balance)
    app.router.add_post("/fapi/v1/leverage", leverage)
    app.router.add_post("/fapi/v1/marginType", margin_type)
    app.router.add_post("/fapi/v1/positionSide/dual", set_position_mode)
    app.router.add_get("/fapi/v1/positionSide/dual", get_position_mode)
    app.router.add_post("/fapi/v1/listenKey", new_listen_key)
    app.router.add_put("/fapi/v1/listenKey", keepalive_listen_key)
    app.router.add_delete("/fapi/v1/listenKey", close_listen_key)
