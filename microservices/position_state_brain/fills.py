"""Fills the exchange confirmed since the snapshot: the position P3.3 decides on, without asking again.

The snapshot is the exchange's positions at one moment. Each executed result on apply.result
carries the fill the exchange reported in its order response, with the exchange's own time. A
fill counts on top of the snapshot unless the snapshot already reflects it: for a symbol the
snapshot shows a position, when the fill is not newer than the position's exchange update time;
for a symbol flat in the snapshot, when its result was written before the snapshot was taken.
So a close right after an open sees the open, and no exchange request is spent per plan. Whatever the times
say, a fill written more than a second before the snapshot was asked for is in it (SURELY_SHOWN_MS).

A flat symbol has no update time to compare with (positionRisk v3 lists only open positions),
so a close whose result is written while a snapshot is being fetched may already be in it. A
reduce-only fill therefore moves the position toward zero and never past it, as on the
exchange: counted again on a snapshot that shows the symbol flat, it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation

from shared.schema.fields import parse_decimal
from shared.snapshot import SURELY_SHOWN_MS, ExchangeSnapshot, PositionState

ZERO = Decimal(0)


@dataclass(frozen=True)
class ConfirmedFill:
    symbol: str
    signed_qty: Decimal
    exchange_ts_ms: int
    written_ms: int
    reduce_only: bool = False


def fill_from(entry_id: str, fields: dict[str, str]) -> ConfirmedFill | None:
    if fields.get("executed") != "true":
        return None
    try:
        # Strictly: Decimal() takes NaN and Infinity, with which every comparison on the symbol would raise (a result
        # XADDed by hand is read here as the executor's are).
        qty = parse_decimal(fields["filled_qty"])
        exchange_ts = int(fields.get("exchange_ts_ms") or 0)
    except (KeyError, InvalidOperation, ValueError):
        return None
    side = fields.get("side", "").strip().upper()  # as the schema reads it (a hand-written "buy" is a buy)
    if qty < 0 or side not in ("BUY", "SELL"):
        return None
    return ConfirmedFill(fields.get("symbol", ""), qty if side == "BUY" else -qty, exchange_ts,
                         int(entry_id.split("-")[0]), fields.get("reduceOnly", "").strip().lower() == "true")


def moved(amount: Decimal, fill: ConfirmedFill) -> Decimal:
    """The position after the fill. A reduce-only fill only reduces: it stops at flat, and one that would add to
    the position (or finds it flat) was already counted (the view is behind the exchange) and changes nothing."""
    if not fill.reduce_only:
        return amount + fill.signed_qty
    if amount > ZERO > fill.signed_qty:
        return max(amount + fill.signed_qty, ZERO)
    if amount < ZERO < fill.signed_qty:
        return min(amount + fill.signed_qty, ZERO)
    return amount


def reflected(fill: ConfirmedFill, snapshot: ExchangeSnapshot) -> bool:
    if fill.written_ms < snapshot.fetched_at_ms - SURELY_SHOWN_MS:
        return True
    held = snapshot.positions.get(fill.symbol)
    if held is not None and held.update_time_ms and fill.exchange_ts_ms:
        return fill.exchange_ts_ms <= held.update_time_ms
    return fill.written_ms < snapshot.fetched_at_ms


class ConfirmedFills:
    """Reads apply.result incrementally (a cursor) and keeps only fills no snapshot reflects yet.

    The kept fills are filtered again only when a new snapshot arrives (about once a second);
    between snapshots a plan costs only the results written since the last one."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self._fills: dict[str, list[ConfirmedFill]] = {}  # per symbol, in the order their results were written
        self._amounts: dict[str, Decimal] = {}  # per symbol: the position after its kept fills, on _filtered_for
        self._filtered_for: ExchangeSnapshot | None = None

    def start_id(self, snapshot: ExchangeSnapshot) -> str:
        return f"({self.cursor}" if self.cursor else f"{snapshot.fetched_at_ms}-0"

    def absorb(self, entries: list[tuple[str, dict[str, str]]], snapshot: ExchangeSnapshot, newest: str = "") -> None:
        """Keep the fills of these results; `newest` (the stream's newest id when they were read) is where the
        next read goes on when none has been read yet, rather than the time of whatever snapshot is held then."""
        self._filter_for(snapshot)
        for entry_id, fields in entries:
            self.cursor = entry_id
            fill = fill_from(entry_id, fields)
            if fill is not None:
                self._keep(fill, snapshot)
        if self.cursor is None and newest:
            self.cursor = newest

    def _filter_for(self, snapshot: ExchangeSnapshot) -> None:
        """On a new snapshot: keep only the fills it does not reflect yet, their amounts folded again."""
        if snapshot is self._filtered_for:
            return
        self._filtered_for = snapshot
        kept, self._fills, self._amounts = self._fills, {}, {}
        for on_symbol in kept.values():
            for fill in on_symbol:
                self._keep(fill, snapshot)

    def _keep(self, fill: ConfirmedFill, snapshot: ExchangeSnapshot) -> None:
        if not reflected(fill, snapshot):
            self._fills.setdefault(fill.symbol, []).append(fill)
            self._amounts[fill.symbol] = moved(self._amounts.get(fill.symbol, snapshot.amount(fill.symbol)), fill)

    def view(self, snapshot: ExchangeSnapshot, symbol: str) -> ExchangeSnapshot:
        """The snapshot with this symbol's position moved by the fills it does not reflect yet (folded as each was
        kept: a plan walks no list)."""
        self._filter_for(snapshot)
        if symbol not in self._amounts:
            return snapshot
        held = snapshot.positions.get(symbol)
        amount = self._amounts[symbol]
        if amount == (held.amount if held else ZERO):
            return snapshot
        positions = {s: p for s, p in snapshot.positions.items() if s != symbol}
        if amount != ZERO:
            positions[symbol] = PositionState(symbol, amount, held.entry_price if held else ZERO,
                                              held.update_time_ms if held else 0)
        return replace(snapshot, positions=positions)
