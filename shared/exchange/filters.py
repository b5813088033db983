"""Binance USD-M symbol trading rules (exchangeInfo filters) and the pure checks built on them.

Quantities and prices are Decimal throughout; exchange strings are parsed straight to Decimal.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

TRADING = "TRADING"
ZERO = Decimal(0)


@dataclass(frozen=True)
class SymbolRules:
    symbol: str
    status: str
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    market_min_qty: Decimal
    market_max_qty: Decimal
    market_step_size: Decimal
    min_notional: Decimal
    quantity_precision: int
    price_precision: int

    @property
    def trading(self) -> bool:
        return self.status == TRADING

    def lot(self, market: bool) -> tuple[Decimal, Decimal, Decimal]:
        """(min_qty, max_qty, step_size) for MARKET (MARKET_LOT_SIZE) or LIMIT (LOT_SIZE) orders."""
        if market:
            return self.market_min_qty, self.market_max_qty, self.market_step_size
        return self.min_qty, self.max_qty, self.step_size

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON: Decimals as their exact strings."""
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> SymbolRules:
        kwargs = {f.name: _coerce(f.type, data[f.name]) for f in fields(cls)}
        return cls(**kwargs)


class FilterReason(enum.Enum):
    SYMBOL_NOT_TRADING = "symbol_not_trading"
    BELOW_MIN_QTY = "below_min_qty"
    ABOVE_MAX_QTY = "above_max_qty"
    BELOW_MIN_NOTIONAL = "below_min_notional"


@dataclass(frozen=True)
class FilterVerdict:
    """Why an order would be refused by the exchange's filters."""

    reason: FilterReason
    detail: Mapping[str, Any] = field(default_factory=dict)

    def as_fields(self) -> dict[str, str]:
        """Flat string form for stream entries and log lines."""
        return {"reason": self.reason.value, **{k: str(v) for k, v in self.detail.items()}}


def _coerce(type_name: Any, value: Any) -> Any:
    # Field annotations are strings under `from __future__ import annotations`.
    if type_name in ("Decimal", Decimal):
        return to_decimal(value)
    if type_name in ("int", int):
        return int(value)
    return str(value)


def to_decimal(value: Any) -> Decimal:
    """Exchange number (string, int or Decimal) to Decimal; floats are refused (binary rounding)."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        raise TypeError(f"refusing float {value!r}; pass the exchange's string")
    try:
        return Decimal(str(value)) if isinstance(value, int) else Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not a decimal number: {value!r}") from exc


def _filters_by_type(symbol_payload: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {f["filterType"]: f for f in symbol_payload.get("filters", ())}


def _lot_triplet(lot: Mapping[str, Any]) -> tuple[Decimal, Decimal, Decimal]:
    return to_decimal(lot["minQty"]), to_decimal(lot["maxQty"]), to_decimal(lot["stepSize"])


def parse_symbol(symbol_payload: Mapping[str, Any]) -> SymbolRules:
    """One exchangeInfo symbol entry to SymbolRules; MARKET_LOT_SIZE falls back to LOT_SIZE when absent."""
    by_type = _filters_by_type(symbol_payload)
    min_qty, max_qty, step = _lot_triplet(by_type["LOT_SIZE"])
    m_min, m_max, m_step = _lot_triplet(by_type.get("MARKET_LOT_SIZE", by_type["LOT_SIZE"]))
    price = by_type.get("PRICE_FILTER", {})
    notional = by_type.get("MIN_NOTIONAL", {})
    return SymbolRules(
        symbol=symbol_payload["symbol"],
        status=symbol_payload.get("status") or symbol_payload.get("contractStatus", ""),
        tick_size=to_decimal(price.get("tickSize", "0")),
        min_price=to_decimal(price.get("minPrice", "0")),
        max_price=to_decimal(price.get("maxPrice", "0")),
        min_qty=min_qty, max_qty=max_qty, step_size=step,
        market_min_qty=m_min, market_max_qty=m_max, market_step_size=m_step,
        min_notional=to_decimal(notional.get("notional", "0")),
        quantity_precision=int(symbol_payload.get("quantityPrecision", 0)),
        price_precision=int(symbol_payload.get("pricePrecision", 0)),
    )


def parse_exchange_info(payload: Mapping[str, Any]) -> dict[str, SymbolRules]:
    """GET /fapi/v1/exchangeInfo body to rules keyed by symbol; a malformed entry raises ValueError."""
    rules: dict[str, SymbolRules] = {}
    for entry in payload["symbols"]:
        try:
            rules[entry["symbol"]] = parse_symbol(entry)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed exchangeInfo entry {entry.get('symbol')!r}: {exc!r}") from exc
    return rules


def _quantum(step: Decimal) -> Decimal:
    # normalize() turns "10" into 1E+1; never quantize to a positive exponent (scientific notation).
    normal = step.normalize()
    return normal if normal.as_tuple().exponent <= 0 else Decimal(1)


def round_to_step(value: Decimal, step: Decimal, rounding: str = ROUND_DOWN) -> Decimal:
    """Round to a multiple of step; ROUND_DOWN goes toward zero. A zero step leaves value unchanged."""
    if step <= ZERO:
        return value
    units = (value / step).to_integral_value(rounding=rounding)
    return (units * step).quantize(_quantum(step))


def round_qty_down(rules: SymbolRules, qty: Decimal, market: bool = True) -> Decimal:
    """Quantity rounded toward zero to the step of MARKET_LOT_SIZE (market) or LOT_SIZE (limit)."""
    _, _, step = rules.lot(market)
    return round_to_step(qty, step, ROUND_DOWN)


def round_price(rules: SymbolRules, price: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    """Price rounded to the tick size (nearest by default; pass ROUND_DOWN/ROUND_UP to choose a side)."""
    return round_to_step(price, rules.tick_size, rounding)


def validate_order(
    rules: SymbolRules,
    qty: Decimal,
    mark_price: Decimal,
    reduce_only: bool,
    market: bool = True,
) -> FilterVerdict | None:
    """The first filter the order would fail, or None. Round qty first; this does not re-round it."""
    if not rules.trading:
        return FilterVerdict(FilterReason.SYMBOL_NOT_TRADING, {"symbol": rules.symbol, "status": rules.status})
    return _check_lot(rules, qty, market) or _check_notional(rules, qty, mark_price, reduce_only)


def _check_lot(rules: SymbolRules, qty: Decimal, market: bool) -> FilterVerdict | None:
    min_qty, max_qty, _ = rules.lot(market)
    detail = {"symbol": rules.symbol, "qty": qty, "market": market}
    if qty <= ZERO or qty < min_qty:
        return FilterVerdict(FilterReason.BELOW_MIN_QTY, {**detail, "min_qty": min_qty})
    if max_qty > ZERO and qty > max_qty:
        return FilterVerdict(FilterReason.ABOVE_MAX_QTY, {**detail, "max_qty": max_qty})
    return None


def _check_notional(
    rules: SymbolRules, qty: Decimal, mark_price: Decimal, reduce_only: bool
) -> FilterVerdict | None:
    # Binance -4164: "notional must be no smaller than N (unless you choose reduce only)".
    if reduce_only:
        return None
    if mark_price <= ZERO:
        raise ValueError(f"mark price must be positive, got {mark_price}")
    notional = qty * mark_price
    if notional < rules.min_notional:
        detail = {"symbol": rules.symbol, "qty": qty, "mark_price": mark_price,
                  "notional": notional, "min_notional": rules.min_notional}
        return FilterVerdict(FilterReason.BELOW_MIN_NOTIONAL, detail)
    return None
