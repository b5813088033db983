"""The opens this P3.3 permitted that have no result yet: a position on its way.

Between a permit and its fill the exchange shows nothing, so two opens on one symbol decided close
together (one batch, or before the first fills) would both see a flat symbol. Until a permitted
open's result is read (apply.result) or its time is up (the permit's TTL and a grace: the executor
ends every plan within it), it counts for the symbol as a position on its side: refused under
P33_OPEN_ON_POSITION=deny, on the other side under scale_in, and holding the open cooldown.
Kept in memory, and in Redis as a record written with the permit that lives exactly as long
(keys.p33_permitted_open): a new process recovers at start the records whose plans have no result
(PositionStateBrain.recover). The permit alone would not do: it expires at its TTL, yet a permit taken
just before then may still be sent after.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.schema import Side
from shared.sending import INFLIGHT_GRACE_MS

GRACE_MS = INFLIGHT_GRACE_MS  # the exchange settings are refused unless every order is accepted or not by then


@dataclass(frozen=True)
class PermittedOpen:
    symbol: str
    side: Side
    until_ms: int


class PermittedOpens:
    def __init__(self, permit_ttl_s: int) -> None:
        self.lifetime_ms = permit_ttl_s * 1000 + GRACE_MS
        self._on: dict[str, dict[str, PermittedOpen]] = {}  # symbol -> plan id -> what it opens
        self._symbol_of: dict[str, str] = {}  # plan id -> symbol, to settle a result by its plan id

    def add(self, plan_id: str, symbol: str, side: Side, now_ms: int) -> None:
        """Held from now_ms for one lifetime. Added in time order (the expiry in side_on relies on it): a plan
        permitted again (a replay) moves to the end."""
        earlier = self._symbol_of.get(plan_id)
        if earlier is not None:
            self._drop(earlier, plan_id)
        self._on.setdefault(symbol, {})[plan_id] = PermittedOpen(symbol, side, now_ms + self.lifetime_ms)
        self._symbol_of[plan_id] = symbol

    def holds(self, plan_id: str) -> bool:
        return plan_id in self._symbol_of

    def settle(self, plan_ids: list[str]) -> None:
        """Their results were read: from here the exchange (or the confirmed fills) shows what they did."""
        for plan_id in plan_ids:
            symbol = self._symbol_of.pop(plan_id, None)
            if symbol is not None:
                self._drop(symbol, plan_id)

    def side_on(self, symbol: str, now_ms: int, other_than: str) -> Side | None:
        """The side of a permitted open on the symbol, not this plan's own (a replay), still on its way."""
        on_symbol = self._on.get(symbol, {})
        expired = []
        for plan_id, held in on_symbol.items():  # oldest first: added in time order, with one lifetime
            if held.until_ms > now_ms:
                break
            expired.append(plan_id)
        for plan_id in expired:
            self._symbol_of.pop(plan_id, None)
            self._drop(symbol, plan_id)
        return next((held.side for plan_id, held in self._on.get(symbol, {}).items() if plan_id != other_than), None)

    def _drop(self, symbol: str, plan_id: str) -> None:
        on_symbol = self._on.get(symbol)
        if on_symbol is not None:
            on_symbol.pop(plan_id, None)
            if not on_symbol:
                del self._on[symbol]
