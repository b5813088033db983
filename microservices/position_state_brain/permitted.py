"""The opens this P3.3 permitted that have no result yet: a position on its way.

Between a permit and its fill the exchange shows nothing, so two opens on one symbol decided close
together (one batch, or before the first fills) would both see a flat symbol. Until a permitted
open's result is read (apply.result) or its time is up (the permit's TTL and a grace: the executor
ends every plan within it), it counts for the symbol as a position on its side: refused under
P33_OPEN_ON_POSITION=deny, on the other side under scale_in, and holding the open cooldown.
Kept in memory: it is what this process permitted; a restart forgets it, as it forgets the permits.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.schema import Side

GRACE_MS = 60_000


@dataclass(frozen=True)
class PermittedOpen:
    symbol: str
    side: Side
    until_ms: int


class PermittedOpens:
    def __init__(self, permit_ttl_s: int) -> None:
        self.lifetime_ms = permit_ttl_s * 1000 + GRACE_MS
        self._opens: dict[str, PermittedOpen] = {}  # plan id -> what it opens

    def add(self, plan_id: str, symbol: str, side: Side, now_ms: int) -> None:
        self._opens[plan_id] = PermittedOpen(symbol, side, now_ms + self.lifetime_ms)

    def settle(self, plan_ids: list[str]) -> None:
        """Their results were read: from here the exchange (or the confirmed fills) shows what they did."""
        for plan_id in plan_ids:
            self._opens.pop(plan_id, None)

    def side_on(self, symbol: str, now_ms: int, other_than: str) -> Side | None:
        """The side of a permitted open on the symbol, not this plan's own (a replay), still on its way."""
        expired = [plan_id for plan_id, held in self._opens.items() if held.until_ms <= now_ms]
        self.settle(expired)
        return next((held.side for plan_id, held in self._opens.items()
                     if held.symbol == symbol and plan_id != other_than), None)
