"""One harvest cycle: every open position in the exchange snapshot → at most one new exit proposal.

The snapshot (published by the position-state brain) is the truth about what is open; the
ledger only adds the stop the fleet opened with. A stale snapshot proposes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import redis
from prometheus_client import Counter, Gauge

from microservices.harvest_proposal import state
from microservices.harvest_proposal.decision import (
    Assessment,
    Choice,
    RungVerdict,
    assess,
    choose,
    fingerprint,
    judge_rung,
    proposal_id,
    rung_key,
)
from microservices.harvest_proposal.settings import HarvestSettings
from shared import ledger, proposals, snapshot
from shared.freshness import wall_ms
from shared.ledger import LedgerPosition
from shared.logging import get_logger
from shared.schema import HarvestProposal, format_decimal
from shared.snapshot import ExchangeSnapshot, PositionState

PROPOSALS = Counter("quantum_harvest_proposals_total", "Exit proposals published, by action", ["action"])
WATCHED = Gauge("quantum_harvest_positions_watched", "Open positions evaluated in the last fresh cycle")
# Harvest proposes nothing from a stale snapshot while its heartbeat stays green: these make that visible.
SNAPSHOT_AGE = Gauge("quantum_harvest_snapshot_age_seconds",
                     "Age of the exchange snapshot at the last cycle, seconds (+Inf when there is none)")
# A take-profit rung's proposal, once its fate is known: settled (executed), given_up (a reason that stays), retry.
RUNG_OUTCOMES = Counter("quantum_harvest_rung_outcomes_total",
                        "Take-profit rung proposals whose fate is known, by what harvest made of it", ["outcome"])
for _outcome in (RungVerdict.SETTLED, RungVerdict.GIVEN_UP, RungVerdict.RETRY):
    RUNG_OUTCOMES.labels(outcome=_outcome.value)
STALE_CYCLES = Counter("quantum_harvest_stale_snapshot_cycles_total",
                       "Cycles that proposed nothing because the snapshot was missing or older than the maximum age")


def to_proposal(position: PositionState, mark: Decimal, lifecycle: state.Lifecycle, assessment: Assessment, choice: Choice,
                now_ms: int) -> HarvestProposal:
    return HarvestProposal(
        proposal_id=proposal_id(lifecycle.fingerprint, lifecycle.opened_ms, choice.key, choice.attempt),
        symbol=position.symbol, action=choice.action, kill_score=assessment.kill_score,
        r_multiple=assessment.r_multiple, reason=choice.reason, position_amt=position.amount,
        entry_price=position.entry_price, mark_price=mark, state=lifecycle.fingerprint, ts_ms=now_ms,
    )


def lifecycle_updates(lifecycle: state.Lifecycle, choice: Choice, position: PositionState,
                      now_ms: int) -> dict[str, str]:
    if choice.rung is None:
        return {"full_attempt": str(choice.attempt), "full_proposed_ms": str(now_ms)}
    return state.rung_updates(lifecycle, choice.rung, choice.attempt, choice.covers, now_ms, position.amount)


class Harvester:
    def __init__(self, client: redis.Redis, settings: HarvestSettings, clock: Callable[[], int] = wall_ms):
        self.r = client
        self.settings = settings
        self.clock = clock
        self.log = get_logger(component="harvest_proposal")
        self._stale = False

    def tick(self) -> list[HarvestProposal]:
        """Evaluate every open position once; returns the proposals newly published."""
        now_ms = self.clock()
        seen = snapshot.read(self.r)
        if not self._fresh(seen, now_ms):
            return []
        state.forget_closed(self.r, set(seen.positions))
        WATCHED.set(len(seen.positions))
        published = [self._consider_safely(seen, symbol, now_ms) for symbol in sorted(seen.positions)]
        return [proposal for proposal in published if proposal is not None]

    def _fresh(self, seen: ExchangeSnapshot | None, now_ms: int) -> bool:
        age_s = None if seen is None else seen.age_s(now_ms)
        stale = age_s is None or age_s > self.settings.harvest_snapshot_max_age_sec
        SNAPSHOT_AGE.set(float("inf") if age_s is None else age_s)
        if stale:
            STALE_CYCLES.inc()
        if stale and not self._stale:
            self.log.warning("snapshot_stale", age_s=age_s, max_age_s=self.settings.harvest_snapshot_max_age_sec)
        elif self._stale and not stale:
            self.log.info("snapshot_fresh", age_s=age_s)
        self._stale = stale
        return not stale

    def _consider_safely(self, seen: ExchangeSnapshot, symbol: str, now_ms: int) -> HarvestProposal | None:
        try:
            return self._consider(seen.positions[symbol], seen.mark(symbol), now_ms)
        except redis.RedisError:
            raise
        except Exception:
            # One position's bad data must not stop the others from being watched.
            self.log.exception("position_failed", symbol=symbol)
            return None

    def _consider(self, position: PositionState, mark: Decimal | None, now_ms: int) -> HarvestProposal | None:
        if mark is None or mark <= 0:
            return None
        ttl_s = self.settings.harvest_state_ttl_sec
        lifecycle = state.begin_or_resume(self.r, position.symbol, fingerprint(position), now_ms, ttl_s)
        assessment = assess(position, self._ledger(position.symbol), mark, lifecycle.peak_r, self.settings)
        state.keep_peak(self.r, lifecycle, assessment.peak_r, ttl_s)
        lifecycle = self._resolve_pending_rung(lifecycle, position, now_ms)
        choice = choose(assessment, lifecycle.rungs_done, lifecycle.full_attempt, lifecycle.full_proposed_ms,
                        now_ms, self.settings, lifecycle.rung_attempts, lifecycle.pending is not None)
        if choice is None:
            return None
        proposal = to_proposal(position, mark, lifecycle, assessment, choice, now_ms)
        updates = lifecycle_updates(lifecycle, choice, position, now_ms)
        written = state.publish_once(self.r, proposal, lifecycle, updates, ttl_s)
        self._report(proposal, written, choice)
        return proposal if written else None

    def _resolve_pending_rung(self, lifecycle: state.Lifecycle, position: PositionState,
                              now_ms: int) -> state.Lifecycle:
        """Learn what the pending rung's proposal came to; the lifecycle without it once that is known."""
        pending = lifecycle.pending
        if pending is None:
            return lifecycle
        attempt = lifecycle.rung_attempts.get(pending.label, 1)
        pending_id = proposal_id(lifecycle.fingerprint, lifecycle.opened_ms, rung_key(pending.label), attempt)
        fate = proposals.read_fate(self.r, pending_id)
        reduced = pending.reduced(position.amount)
        verdict = judge_rung(fate, pending.proposed_ms, now_ms, self.settings.repropose_ms, reduced)
        if verdict is RungVerdict.SUPERSEDE:
            if not proposals.decide(self.r, pending_id, proposals.SUPERSEDED):
                return lifecycle  # planned (or skipped) just now: its fate is read next cycle
            fate, verdict = proposals.Fate(proposals.Stage.SUPERSEDED), RungVerdict.RETRY
        if verdict is RungVerdict.WAIT:
            return lifecycle
        RUNG_OUTCOMES.labels(outcome=verdict.value).inc()
        say = self.log.info if verdict is RungVerdict.SETTLED else self.log.warning
        say("RUNG_" + verdict.value.upper(), symbol=lifecycle.symbol, rung=pending.label, attempt=attempt,
            proposal_id=pending_id, plan_id=proposals.plan_id_for(pending_id), stage=fate.stage.value,
            reason=fate.reason, covers=",".join(sorted(pending.covers)), position_reduced=reduced,
            position_amt=format_decimal(position.amount))
        return state.end_pending(self.r, lifecycle, done=verdict is not RungVerdict.RETRY)

    def _ledger(self, symbol: str) -> LedgerPosition | None:
        """The ledger's position; one that cannot be read (a field that does not parse, a key that is not a hash)
        is treated as no ledger: the default risk, as for a position the fleet did not open."""
        entry = ledger.read_entry(self.r, symbol)
        if entry.unreadable:
            self.log.warning("ledger_unreadable", symbol=symbol, error=entry.error, risk="default")
        return entry.position

    def _report(self, proposal: HarvestProposal, written: bool, choice: Choice) -> None:
        if written:
            PROPOSALS.labels(action=proposal.action.value).inc()
        self.log.info(
            "HARVEST_PROPOSED" if written else "HARVEST_ALREADY_PROPOSED", proposal_id=proposal.proposal_id,
            symbol=proposal.symbol, action=proposal.action.value, reason=proposal.reason, attempt=choice.attempt,
            kill_score=format_decimal(proposal.kill_score), r_multiple=format_decimal(proposal.r_multiple),
            position_amt=format_decimal(proposal.position_amt), mark_price=format_decimal(proposal.mark_price),
            state=proposal.state,
        )
