"""The fleet's view of the exchange: open positions and mark prices, fetched in two requests.

The position-state brain refreshes it and publishes it to Redis; the governor and executor
read that copy, so the exchange is asked once for all symbols, not once per symbol or daemon.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import redis

from shared import keys
from shared.schema.fields import format_decimal

ZERO = Decimal(0)


# A fill whose result was written this long before a snapshot was asked for is in it, whatever the two update
# times say. The comparison of an order's updateTime with its position's assumes Binance stamps both alike; were
# the order's ever later, the fill would otherwise count on top of every later snapshot until the position
# changed again. The margin leaves room for the exchange's position view to lag its matching engine.
SURELY_SHOWN_MS = 1_000

@dataclass(frozen=True)
class PositionState:
    symbol: str
    amount: Decimal  # signed: negative is short
    entry_price: Decimal
    update_time_ms: int = 0  # the exchange's time of the position's last change


@dataclass(frozen=True)
class ExchangeSnapshot:
    fetched_at_ms: int
    positions: dict[str, PositionState] = field(default_factory=dict)
    marks: dict[str, Decimal] = field(default_factory=dict)

    def amount(self, symbol: str) -> Decimal:
        position = self.positions.get(symbol)
        return position.amount if position else ZERO

    def mark(self, symbol: str) -> Decimal | None:
        return self.marks.get(symbol)

    def notional(self, symbol: str) -> Decimal:
        """Absolute notional at the mark; a position without a mark counts at its entry price."""
        position = self.positions.get(symbol)
        if position is None:
            return ZERO
        return abs(position.amount) * (self.marks.get(symbol) or position.entry_price)

    def total_notional(self) -> Decimal:
        return sum((self.notional(symbol) for symbol in self.positions), ZERO)

    @property
    def open_position_count(self) -> int:
        return len(self.positions)

    def age_s(self, now_ms: int) -> float:
        """Seconds since it was fetched. A snapshot from more than FUTURE_SKEW_S ahead (the clock stepped back
        since) has no known age: +Inf, stale everywhere, instead of a negative age every freshness check passes."""
        age = (now_ms - self.fetched_at_ms) / 1000
        if age >= 0:
            return age
        return 0.0 if -age <= FUTURE_SKEW_S else math.inf

    def to_json(self) -> str:
        return json.dumps(
            {
                "fetched_at_ms": self.fetched_at_ms,
                "positions": {s: [format_decimal(p.amount), format_decimal(p.entry_price), p.update_time_ms]
                              for s, p in self.positions.items()},
                "marks": {s: format_decimal(m) for s, m in self.marks.items()},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str) -> "ExchangeSnapshot":
        data: dict[str, Any] = json.loads(raw)
        positions = {
            symbol: PositionState(symbol, Decimal(held[0]), Decimal(held[1]), int(held[2]) if len(held) > 2 else 0)
            for symbol, held in data["positions"].items()
        }
        marks = {symbol: Decimal(mark) for symbol, mark in data["marks"].items()}
        return cls(int(data["fetched_at_ms"]), positions, marks)


def from_exchange(positions: list[Any], marks: dict[str, Any], now_ms: int) -> ExchangeSnapshot:
    """Build from the exchange client's typed results (positions with a signed amount, mark prices)."""
    by_symbol: dict[str, PositionState] = {}
    for position in positions:
        held = by_symbol.get(position.symbol)
        amount = position.amount + (held.amount if held else ZERO)
        updated = max(position.update_time_ms, held.update_time_ms if held else 0)
        by_symbol[position.symbol] = PositionState(position.symbol, amount, position.entry_price, updated)
    open_positions = {s: p for s, p in by_symbol.items() if p.amount != ZERO}
    return ExchangeSnapshot(now_ms, open_positions, {s: m.mark_price for s, m in marks.items()})


def publish(client: redis.Redis, snapshot: ExchangeSnapshot) -> None:
    client.set(keys.EXCHANGE_POSITIONS, snapshot.to_json())


def read(client: redis.Redis) -> ExchangeSnapshot | None:
    raw = client.get(keys.EXCHANGE_POSITIONS)
    return None if raw is None else decode(raw)


FUTURE_SKEW_S = 1.0  # processes of one host read the same clock; a hair apart at most

DECODE_ERRORS = (ValueError, KeyError, TypeError, ArithmeticError, AttributeError)


def checked(raw: str | None) -> tuple[ExchangeSnapshot | None, str | None]:
    """(snapshot, None); (None, None) when there is none; (None, why) for a value that is not a snapshot."""
    if raw is None:
        return None, None
    try:
        return decode(raw), None
    except DECODE_ERRORS as exc:
        return None, f"unreadable ({exc.__class__.__name__})"


@lru_cache(maxsize=8)
def decode(raw: str) -> ExchangeSnapshot:
    """Decoded once per published snapshot: readers see the same blob many times between refreshes.
    Callers must not mutate the result (they build new snapshots with dataclasses.replace)."""
    return ExchangeSnapshot.from_json(raw)
