"""What a decision reads from Redis, as plain values: trading switches, snapshot, in-flight opens, counts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from microservices.governor.lua import to_units
from shared.schema.fields import format_decimal
from shared.trading_state import Switches
from shared.snapshot import SURELY_SHOWN_MS, ExchangeSnapshot

@dataclass(frozen=True)
class InFlight:
    """An open the governor allowed whose fill the exchange snapshot may not show yet."""

    plan_id: str
    symbol: str
    notional: Decimal
    allowed_at_ms: int

    def to_json(self) -> str:
        """The record; "units" is what the running totals count (see lua.py)."""
        fields = {"symbol": self.symbol, "notional": format_decimal(self.notional),
                  "units": str(to_units(self.notional)), "allowed_at_ms": self.allowed_at_ms}
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, plan_id: str, raw: str) -> "InFlight":
        data = json.loads(raw)
        return cls(plan_id, str(data["symbol"]), Decimal(str(data["notional"])), int(data["allowed_at_ms"]))


@dataclass(frozen=True)
class Pending:
    """What in-flight opens add to the caps: the symbols they open and their notional."""

    symbols: frozenset[str] = frozenset()
    notional: Decimal = Decimal(0)
    count: int = 0

    @classmethod
    def of(cls, entries: Iterable[InFlight]) -> "Pending":
        entries = list(entries)
        return cls(frozenset(e.symbol for e in entries), sum((e.notional for e in entries), Decimal(0)), len(entries))


@dataclass(frozen=True)
class GovernorState:
    """Everything one decision reads; closes only need the switches."""

    switches: Switches = field(default_factory=Switches)
    last_exec_ms: int | None = None
    snapshot: ExchangeSnapshot | None = None
    totals: Pending | None = None  # running totals of in-flight opens without the plan itself, as a decision reads them
    inflight: tuple[InFlight, ...] = ()  # the records themselves, read for an exact look (then result_ms is set)
    unreadable_inflight: tuple[str, ...] = ()  # plan ids whose in-flight record is corrupt
    result_ms: Mapping[str, int] | None = None  # results of in-flight plans; None: not read yet
    opens_last_hour: int = 0  # opens allowed on the plan's symbol, not counting the plan itself
    opens_last_5min: int = 0
    rate_trips: int = 0  # rate-limit denials in the auto-disarm window, not counting the plan itself
    auto_disarmed: bool = False
    unreadable: Mapping[str, str] = field(default_factory=dict)  # state that could not be parsed and was ignored
    _pending: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # several gates ask the same

    def is_settled(self, entry: InFlight) -> bool:
        """Settled: the plan has a result and the snapshot was taken surely after the exchange's position view shows
        it (SURELY_SHOWN_MS, as P3.3 reads fills): a snapshot started just after a fill may not show it yet, and the
        open would count nowhere while another took its room under the caps."""
        result_ms = (self.result_ms or {}).get(entry.plan_id)
        return (result_ms is not None and self.snapshot is not None
                and self.snapshot.fetched_at_ms > result_ms + SURELY_SHOWN_MS)

    def is_expired(self, entry: InFlight, now_ms: int, expiry_ms: int) -> bool:
        return now_ms - entry.allowed_at_ms >= expiry_ms

    def pending(self, plan_id: str, now_ms: int, expiry_ms: int) -> Pending:
        """What counts against the caps: the running totals, or after an exact look the unsettled records."""
        if self.totals is not None and self.result_ms is None:
            return self.totals
        return Pending.of(self.pending_opens(plan_id, now_ms, expiry_ms))

    def pending_opens(self, plan_id: str, now_ms: int, expiry_ms: int) -> list[InFlight]:
        """In-flight records that still count against the caps; a replayed plan never counts itself."""
        asked = (plan_id, now_ms, expiry_ms)
        if asked not in self._pending:
            self._pending[asked] = [
                entry for entry in self.inflight
                if entry.plan_id != plan_id and not self.is_expired(entry, now_ms, expiry_ms) and not self.is_settled(entry)
            ]
        return self._pending[asked]

    def settled_inflight(self) -> list[str]:
        return [entry.plan_id for entry in self.inflight if self.is_settled(entry)]

    def stale_inflight(self, now_ms: int, expiry_ms: int) -> list[str]:
        """Plan ids whose in-flight record can be dropped."""
        done = [e.plan_id for e in self.inflight if self.is_expired(e, now_ms, expiry_ms) or self.is_settled(e)]
        return done + list(self.unreadable_inflight)

