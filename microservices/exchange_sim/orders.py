"""Validation of POST /fapi/v1/order parameters, in the order Binance reports problems."""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from decimal import Decimal

from . import errors
from .num import ZERO, is_multiple, parse_decimal, places
from .symbols import SYMBOLS, SymbolSpec

CLIENT_ORDER_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
CONDITIONAL_TYPES = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})
ORDER_TYPES = frozenset({"LIMIT", "MARKET"})
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK", "GTX", "GTD"})
POSITION_SIDES = frozenset({"BOTH", "LONG", "SHORT"})
RESP_TYPES = frozenset({"ACK", "RESULT"})
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class OrderRequest:
    spec: SymbolSpec
    side: str
    type: str
    quantity: Decimal
    price: Decimal
    time_in_force: str
    position_side: str | None
    reduce_only: bool
    client_order_id: str
    resp_type: str


def require_symbol(params: dict[str, str]) -> SymbolSpec:
    symbol = params.get("symbol")
    if not symbol:
        raise errors.mandatory_missing("symbol")
    if symbol not in SYMBOLS:
        raise errors.invalid_symbol()
    return SYMBOLS[symbol]


def optional_symbol(params: dict[str, str]) -> SymbolSpec | None:
    return require_symbol(params) if params.get("symbol") is not None else None


def parse_bool(params: dict[str, str], name: str) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false"):
        raise errors.invalid_param(name)
    return raw.lower() == "true"


def generated_client_order_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def _side(params: dict[str, str]) -> str:
    side = params.get("side")
    if not side:
        raise errors.mandatory_missing("side")
    if side not in ("BUY", "SELL"):
        raise errors.invalid_side()
    return side


def _type(params: dict[str, str]) -> str:
    order_type = params.get("type")
    if not order_type:
        raise errors.mandatory_missing("type")
    if order_type in CONDITIONAL_TYPES:
        raise errors.use_algo_endpoint()
    if order_type not in ORDER_TYPES:
        raise errors.invalid_order_type()
    return order_type


def _client_order_id(params: dict[str, str]) -> str:
    client_id = params.get("newClientOrderId")
    if client_id is None or client_id == "":
        return generated_client_order_id()
    if not CLIENT_ORDER_ID_RE.match(client_id):
        raise errors.bad_client_order_id()
    return client_id


def _resp_type(params: dict[str, str]) -> str:
    resp_type = params.get("newOrderRespType", "ACK")
    if resp_type not in RESP_TYPES:
        raise errors.invalid_resp_type()
    return resp_type


def _position_side(params: dict[str, str]) -> str | None:
    position_side = params.get("positionSide")
    if position_side is not None and position_side not in POSITION_SIDES:
        raise errors.invalid_position_side()
    return position_side


def _quantity(params: dict[str, str], spec: SymbolSpec, order_type: str) -> Decimal:
    quantity = parse_decimal(params.get("quantity"))
    if quantity is None:
        raise errors.mandatory_missing("quantity")
    if quantity <= ZERO:
        raise errors.qty_not_positive()
    if places(quantity) > spec.quantity_precision:
        raise errors.bad_precision()
    if not is_multiple(quantity, spec.step_size):
        raise errors.qty_not_step()
    if quantity < spec.min_qty:
        raise errors.qty_below_min()
    if quantity > (spec.market_max_qty if order_type == "MARKET" else spec.max_qty):
        raise errors.qty_above_max()
    return quantity


def _limit_price(params: dict[str, str], spec: SymbolSpec) -> Decimal:
    price = parse_decimal(params.get("price"))
    if price is None:
        raise errors.mandatory_missing("price")
    if price <= ZERO:
        raise errors.ApiError(-4001, "Price less than 0.")
    if places(price) > spec.price_precision:
        raise errors.bad_precision()
    if price < spec.min_price:
        raise errors.price_below_min()
    if price > spec.max_price:
        raise errors.price_greater_than_max()
    if not is_multiple(price - spec.min_price, spec.tick_size):
        raise errors.price_not_tick()
    return price


def _time_in_force(params: dict[str, str]) -> str:
    tif = params.get("timeInForce")
    if not tif:
        raise errors.mandatory_missing("timeInForce")
    if tif not in TIME_IN_FORCE or tif == "GTD":
        raise errors.invalid_tif()
    return tif


def parse_new_order(params: dict[str, str]) -> OrderRequest:
    """Turn raw parameters into a validated request; raises ApiError like Binance."""
    spec = require_symbol(params)
    side = _side(params)
    order_type = _type(params)
    resp_type = _resp_type(params)
    client_id = _client_order_id(params)
    position_side = _position_side(params)
    reduce_only = parse_bool(params, "reduceOnly")
    quantity = _quantity(params, spec, order_type)
    if order_type == "LIMIT":
        price, tif = _limit_price(params, spec), _time_in_force(params)
    else:
        if params.get("price") not in (None, ""):
            raise errors.param_not_required("price")
        price, tif = ZERO, "GTC"
    return OrderRequest(spec, side, order_type, quantity, price, tif, position_side, reduce_only,
                        client_id, resp_type)
