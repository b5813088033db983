"""The fleet's own record of each position (quantum:position:ledger:<symbol>, a hash).

The exchange is the truth; the ledger is what the fleet believes it did. The executor
updates it with each fill, reconcile adopts the exchange amount when they disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import redis

from shared import keys
from shared.redis_conn import wrong_type
from shared.exchange.filters import SymbolRules
from shared.schema.fields import Side, format_decimal, parse_decimal

ZERO = Decimal(0)


class LedgerUnreadable(ValueError, ArithmeticError):
    """The ledger key exists but does not parse: not the same as no ledger at all.

    A ValueError and an ArithmeticError, so callers that caught Decimal's errors still catch it.
    """


def _decimal(name: str, text: str) -> Decimal:
    """As every entry's decimals are read (parse_decimal): finite, |x| < 1e15, writable out. 1e999999999 parsed as
    Decimal, and comparing it with an amount raised Overflow in P3.3 and reconcile alike: the symbol's closes were
    then never decided, nor the ledger ever healed."""
    try:
        return parse_decimal(text)
    except ValueError as exc:
        raise LedgerUnreadable(f"{name}: {exc}") from None


def _integer(name: str, text: str) -> int:
    try:
        return int(text)
    except (ValueError, TypeError):
        raise LedgerUnreadable(f"{name} is not an integer") from None


@dataclass(frozen=True)
class LedgerPosition:
    symbol: str
    amount: Decimal  # signed: negative is short
    entry_price: Decimal
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    leverage: Decimal | None = None
    updated_at_ms: int = 0
    last_plan_id: str = ""
    source: str = ""

    def to_hash(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "symbol": self.symbol, "position_amt": self.amount, "entry_price": self.entry_price,
            "stop_loss": self.stop_loss, "take_profit": self.take_profit, "leverage": self.leverage,
            "updated_at_ms": self.updated_at_ms, "last_plan_id": self.last_plan_id, "source": self.source,
        }
        return {k: format_decimal(v) if isinstance(v, Decimal) else str(v) for k, v in values.items() if v is not None}

    @classmethod
    def from_hash(cls, symbol: str, data: dict[str, str]) -> "LedgerPosition":
        """Raises LedgerUnreadable when a field does not parse (a comma decimal, NaN, text)."""
        def dec(name: str) -> Decimal | None:
            return _decimal(name, data[name]) if data.get(name) else None

        return cls(
            symbol=symbol, amount=dec("position_amt") or ZERO, entry_price=dec("entry_price") or ZERO,
            stop_loss=dec("stop_loss"), take_profit=dec("take_profit"), leverage=dec("leverage"),
            updated_at_ms=_integer("updated_at_ms", data.get("updated_at_ms") or "0"),
            last_plan_id=data.get("last_plan_id", ""), source=data.get("source", ""),
        )


@dataclass(frozen=True)
class Fill:
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    plan_id: str
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    leverage: Decimal | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """What the ledger key holds, told apart: absent, a position, or unreadable (with why).

    `raw` is the hash as stored ({} when absent, None when the key is not a hash at all), so a
    writer can compare-and-set against exactly what it read.
    """

    symbol: str
    raw: dict[str, str] | None
    position: LedgerPosition | None = None
    error: str = ""

    @property
    def absent(self) -> bool:
        return self.raw == {}

    @property
    def unreadable(self) -> bool:
        return bool(self.error)


def parse(symbol: str, raw: dict[str, str]) -> LedgerEntry:
    if not raw:
        return LedgerEntry(symbol, {})
    try:
        return LedgerEntry(symbol, raw, LedgerPosition.from_hash(symbol, raw))
    except LedgerUnreadable as exc:
        return LedgerEntry(symbol, raw, error=str(exc))


NOT_A_HASH = "the key is not a hash"


def from_script(symbol: str, flat: list[str] | None) -> LedgerEntry:
    """The entry a script read with shared.lua's fields_of, as its caller receives it (a flat list, or None: the
    key is not a hash)."""
    if flat is None:
        return LedgerEntry(symbol, None, error=NOT_A_HASH)
    return parse(symbol, dict(zip(flat[0::2], flat[1::2])))


def read_entry(client: Any, symbol: str) -> LedgerEntry:
    """Never raises for what an operator typed: an unreadable hash, or a key of another type (SET
    instead of HSET), comes back as an unreadable entry."""
    try:
        return parse(symbol, client.hgetall(keys.position_ledger(symbol)))
    except redis.ResponseError as exc:
        if not wrong_type(exc):
            raise
        return LedgerEntry(symbol, None, error=NOT_A_HASH)


def read(client: Any, symbol: str) -> LedgerPosition | None:
    """The position, or None when there is no ledger; raises LedgerUnreadable when it does not parse."""
    data = client.hgetall(keys.position_ledger(symbol))
    return LedgerPosition.from_hash(symbol, data) if data else None


def amount(position: LedgerPosition | None) -> Decimal:
    return position.amount if position else ZERO


def qty_tolerance(rules: SymbolRules | None, steps: int) -> Decimal:
    """How far ledger and exchange may differ and still agree: `steps` of the symbol's finer lot step
    (LOT_SIZE or MARKET_LOT_SIZE); no rules, no tolerance.

    The one definition P3.3 (which holds a symbol beyond it) and reconcile (which heals beyond it) share.
    """
    return steps * min(rules.step_size, rules.market_step_size) if rules is not None else ZERO


def disagrees(exchange_amt: Decimal, ledger_amt: Decimal, tolerance: Decimal) -> bool:
    return abs(exchange_amt - ledger_amt) > tolerance


def after_fill(current: LedgerPosition | None, fill: Fill, now_ms: int) -> LedgerPosition | None:
    """The position after a fill; None when it is flat."""
    signed = fill.qty if fill.side is Side.BUY else -fill.qty
    before = amount(current)
    after = before + signed
    if after == ZERO:
        return None
    base = current or LedgerPosition(fill.symbol, ZERO, fill.price)
    entry = _entry_after(before, signed, after, base.entry_price, fill.price)
    return replace(
        base, amount=after, entry_price=entry, updated_at_ms=now_ms, last_plan_id=fill.plan_id, source="fill",
        stop_loss=fill.stop_loss or base.stop_loss, take_profit=fill.take_profit or base.take_profit,
        leverage=fill.leverage or base.leverage,
    )


def _entry_after(before: Decimal, signed: Decimal, after: Decimal, entry: Decimal, price: Decimal) -> Decimal:
    if before == ZERO or (before > 0) != (after > 0):
        return price  # opened, or flipped through zero
    if abs(after) < abs(before):
        return entry  # reduced: the entry of what remains is unchanged
    return (abs(before) * entry + abs(signed) * price) / abs(after)


def queue_write(pipe: Any, symbol: str, position: LedgerPosition | None) -> None:
    """Queue the new state in a MULTI: a flat position deletes the hash."""
    key = keys.position_ledger(symbol)
    pipe.delete(key)
    if position is not None:
        pipe.hset(key, mapping=position.to_hash())
