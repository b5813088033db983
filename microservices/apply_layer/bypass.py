"""P26_MODE=enforce without a working heat gate: an exit the gate has not calibrated in time is planned as proposed.

In enforce mode the apply layer acts on harvest.calibrated, which only the portfolio heat gate writes. A gate that
is stopped, crash-looping or stuck would hold back every automated exit, stop-loss hits included; the gate itself
already publishes a proposal uncalibrated when it cannot read heat, since an exit must not wait for heat.

So the apply layer also looks at harvest.proposal, without consuming it (the stream and its group are the gate's):
from a cursor, each entry once, APPLY_CALIBRATION_WAIT_SEC after Redis added it (by Redis's clock). An entry that
has neither a calibrated copy (the gate's marker) nor a decision of its own (shared.proposals) is planned as it
stands, logged P26_BYPASSED and counted. Both copies of a proposal derive the same plan id, and its marker is written once: the
gate's calibrated copy, arriving later, is a duplicate, never a second plan. Entries older than
APPLY_PROPOSAL_MAX_AGE_SEC when the daemon starts are not looked at: they would be refused as expired.
An entry that does not parse is left to the gate, whose group dead-letters it.
Keep the wait below HARVEST_REPROPOSE_SEC (30): harvest supersedes a take-profit rung proposal still unplanned
then, and proposes it again; a longer wait would reach none of them while the gate is down.
"""

from __future__ import annotations

from collections.abc import Callable

import redis
from prometheus_client import Counter

from microservices.apply_layer.apply import ApplyLayer
from shared import keys, redis_wire
from shared.freshness import redis_ms
from shared.logging import get_logger
from shared.redis_conn import unavailable
from shared.runtime.consumer import Entry, Rejected
from shared.schema import HarvestProposal

BYPASSED = Counter("quantum_apply_calibration_bypassed_total",
                   "Exit proposals handled uncalibrated in P26_MODE=enforce: no calibrated copy in time")
BATCH = 100
EVERY_MS = 1000  # looked at once a second at most


def _parsed(fields: dict[str, str]) -> HarvestProposal | None:
    """The entry's proposal, or None when it does not parse (the gate's group dead-letters it): whatever its parse
    raises, a bad entry must not hold the cursor, or no exit after it would ever be bypassed. A field given twice
    with different values is such an entry (duplicate_field; found in review: read through redis-py's xrange, which
    keeps the last value, an entry the gate refused was planned with the larger of two closes)."""
    if getattr(fields, "duplicated", ()):
        return None
    try:
        return HarvestProposal.from_fields(fields)
    except Exception:
        return None


class CalibrationBypass:
    def __init__(self, client: redis.Redis, layer: ApplyLayer, wait_ms: int, max_age_ms: int,
                 clock: Callable[[], int] | None = None):
        self.r = client
        self.layer = layer
        self.wait_ms = wait_ms
        self.max_age_ms = max_age_ms
        # Redis's clock by default, the one its entry ids carry: a Redis on another host whose clock is behind
        # would otherwise have every entry look old enough at once.
        self.clock = clock or (lambda: redis_ms(client))
        self.cursor: str | None = None  # the last entry id looked at
        self.last_ms: int | None = None
        self.log = get_logger(component="apply_layer")

    def tick(self) -> int:
        """Plan the proposals that waited past the wait uncalibrated; returns how many were planned."""
        now_ms = self.clock()
        if self.last_ms is not None and now_ms - self.last_ms < EVERY_MS:
            return 0
        self.last_ms = now_ms
        if self.cursor is None:
            self.cursor = f"{max(now_ms - self.max_age_ms, 0)}-0"
        planned = 0
        while True:
            entries = redis_wire.xrange(self.r, keys.Stream.HARVEST_PROPOSAL, f"({self.cursor}",
                                        str(now_ms - self.wait_ms), BATCH)
            parsed = [(entry_id, fields, _parsed(fields)) for entry_id, fields in entries]
            for entry_id, fields, proposal in self._undecided(parsed):
                planned += self._plan(entry_id, fields, proposal, now_ms)
                self.cursor = entry_id
            if entries:
                self.cursor = entries[-1][0]
            if len(entries) < BATCH:
                return planned

    def _undecided(self, parsed: list[tuple[str, dict[str, str], HarvestProposal | None]]
                   ) -> list[tuple[str, dict[str, str], HarvestProposal]]:
        """The entries that parse and are neither calibrated by the gate nor decided here (planned, skipped,
        superseded), by their proposal's id (flat, or in a JSON payload)."""
        proposals = [(entry_id, fields, proposal) for entry_id, fields, proposal in parsed if proposal is not None]
        if not proposals:
            return []
        ids = [proposal.proposal_id for _, _, proposal in proposals]
        found = self.r.mget([key for each in ids for key in (keys.p26_calibrated(each), keys.apply_proposal(each))])
        return [each for each, calibrated, decided in zip(proposals, found[0::2], found[1::2])
                if calibrated is None and decided is None]

    def _plan(self, entry_id: str, fields: dict[str, str], proposal: HarvestProposal, now_ms: int) -> int:
        try:
            planned = self.layer.handle(proposal, Entry(keys.Stream.HARVEST_PROPOSAL, entry_id, fields, 1))
        except Rejected as refused:  # expired, unknown symbol: the gate's group still has the entry
            self.log.warning("P26_BYPASS_REFUSED", proposal_id=proposal.proposal_id, reason=refused.reason,
                             detail=refused.detail)
            return 0
        except redis.RedisError as exc:
            if unavailable(exc):
                raise  # looked at again (the cursor stays before it) once Redis answers
            self._failed(proposal, entry_id)  # WRONGTYPE on one of its keys: it would fail again, every second
            return 0
        except Exception:  # one entry's failure must not hold back the entries after it, every second
            self._failed(proposal, entry_id)
            return 0
        if not planned:  # decided meanwhile (the gate's copy, another apply layer) or skipped: nothing bypassed
            return 0
        BYPASSED.inc()
        self.log.warning("P26_BYPASSED", proposal_id=proposal.proposal_id, symbol=proposal.symbol,
                         action=proposal.action.value, reason=proposal.reason, entry_id=entry_id,
                         waited_ms=now_ms - int(entry_id.split("-")[0]),
                         detail="no calibrated copy from the portfolio heat gate: planned as proposed")
        return 1

    def _failed(self, proposal: HarvestProposal, entry_id: str) -> None:
        self.log.exception("P26_BYPASS_FAILED", proposal_id=proposal.proposal_id, entry_id=entry_id,
                           detail="left to the heat gate's group")
