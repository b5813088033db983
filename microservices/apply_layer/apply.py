"""Exit proposal → one reduce-only plan on apply.plan.

The side is opposite the position the proposal saw; the quantity is the action's fraction of
it, rounded down to the step (a full close takes all of it). The plan id derives from the
proposal id, so a proposal read any number of times, from either stream, is one plan.
Event-driven: each proposal is handled once when it arrives; nothing is re-processed on a timer.

A proposal older than APPLY_PROPOSAL_MAX_AGE_SEC is dead-lettered (proposal_expired), never planned:
its position may since have been closed and a new one opened on the same side (a new consumer group,
as after a P26_MODE switch, reads the stream from its start). Its age runs from its ts_ms (when harvest
decided it) or, without one (an operator's XADD), from its entry id (when Redis added it to the stream).
A time further in the future than the maximum age (a clock or unit error) is dead-lettered too
(proposal_time_invalid): it would never expire. A full close whose stop is still hit is proposed again
by harvest every HARVEST_REPROPOSE_SEC with a new id and time, so refusing an old one loses no stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from prometheus_client import Counter, Gauge

from microservices.apply_layer.settings import ApplySettings
from shared import freshness, keys, lua, metrics, proposals
from shared.exchange.filter_cache import FilterCache
from shared.exchange.filters import SymbolRules, round_qty_down
from shared.freshness import wall_ms
from shared.logging import get_logger
from shared.modes import FLEET_MODE_DRY_RUN, ApplyMode, P26Mode
from shared.once import xadd_once
from shared.proposals import plan_id_for
from shared.runtime.consumer import Entry, Rejected
from shared.runtime import liveness
from shared.schema import Action, Decision, HarvestProposal, Plan, Side
from shared.trading_state import forced_dry_run

PROPOSALS = Counter("quantum_apply_proposals_total", "Exit proposals by outcome", ["outcome"])
# Beside the heat gate's quantum_p26_mode: the P26_MODE this daemon acts on (QuantumP26ModeDisagrees).
P26_MODE_ACTED_ON = Gauge("quantum_apply_p26_mode", "1 for the P26_MODE the apply layer acts on (its input stream)",
                          ["mode"])
SOURCE = "apply_layer"
PROPOSAL_EXPIRED = "proposal_expired"
PROPOSAL_TIME_INVALID = "proposal_time_invalid"


@dataclass(frozen=True)
class Skip:
    reason: str


def to_plan(proposal: HarvestProposal, rules: SymbolRules | None, settings: ApplySettings) -> Plan | Skip:
    # No allowlist here: every proposal is an exit, and closes of any held position must pass
    # (allowlists limit opens; P3.3 still checks the position the exchange shows).
    check_is_exit(proposal)
    if settings.apply_kill_switch:
        return Skip("apply_kill_switch")
    if proposal.position_amt == 0:
        return Skip("no_position")
    if rules is None:
        raise Rejected("unknown_symbol", {"symbol": proposal.symbol})
    held = abs(proposal.position_amt)
    qty = held if proposal.action is Action.FULL_CLOSE_PROPOSED else round_qty_down(rules, held * proposal.action.close_fraction)
    if qty <= 0:
        return Skip("fraction_below_one_step")
    return Plan(
        plan_id=plan_id_for(proposal.proposal_id), decision=Decision.EXECUTE, symbol=proposal.symbol,
        side=Side.SELL if proposal.position_amt > 0 else Side.BUY, qty=qty, reduce_only=True,
        action=proposal.action, kill_score=proposal.kill_score, source=SOURCE, proposal_id=proposal.proposal_id,
    )


def check_is_exit(proposal: HarvestProposal) -> None:
    """Bad input, not a failure: retrying a proposal that can never be a reduce-only plan only delays its dead letter."""
    if not proposal.action.is_close:
        raise Rejected("not_an_exit_action", {"action": f"{proposal.action.value} cannot become a reduce-only plan"})


def proposal_time_ms(proposal: HarvestProposal, entry_id: str) -> tuple[int | None, str]:
    """When the proposal was made, and what says so: its ts_ms (harvest runs on the fleet's host), else when
    Redis added its entry (an operator's XADD)."""
    if proposal.ts_ms is not None:
        return proposal.ts_ms, "ts_ms"
    return freshness.entry_id_ms(entry_id), "entry_id"


def check_fresh(proposal: HarvestProposal, entry_id: str, now_ms: int, max_age_ms: int) -> None:
    """Refuse (dead-letter) a proposal too old to act on, or whose time cannot be trusted to ever age."""
    made_ms, measured_from = proposal_time_ms(proposal, entry_id)
    freshness.check_fresh(made_ms, now_ms, max_age_ms, PROPOSAL_EXPIRED, PROPOSAL_TIME_INVALID,
                          {"proposal_id": proposal.proposal_id, "symbol": proposal.symbol, "measured_from": measured_from})


def expose_p26_mode(mode: P26Mode) -> None:
    metrics.set_mode(P26_MODE_ACTED_ON, P26Mode, mode)


EXECUTOR = "intent-executor"  # its heartbeat's daemon name
P26MODES = {mode.value for mode in P26Mode}
NAME = "apply-layer"


def fleet_dry_run(client: redis.Redis) -> tuple[bool, str | None]:
    """(whether the executor, which decides what is sent, runs dry; its quantum:mode): dry is its mode, or the
    fleet-wide switch. Not this daemon's own APPLY_MODE: set in apply-layer.env alone (as the seed's rollback did),
    it would have this log say dry run while the executor sends."""
    mode, forced = lua.texts(client, [keys.MODE, keys.FORCE_DRY_RUN])  # a key of another type: unreadable, as there
    return mode == FLEET_MODE_DRY_RUN or forced_dry_run(forced), mode  # the switch read as the executor reads it


def live_executor_modes(client: redis.Redis) -> list[str]:
    """The modes running executors say in their heartbeats: unlike quantum:mode, which stays after the executor
    stops, only what runs now. A heartbeat without one (an executor of an earlier version) reads as sending."""
    return [beat.get("mode") or "UNKNOWN" for beat in liveness.running(client, EXECUTOR).values()]


def other_readers(client: redis.Redis, stream: str, me: str) -> list[str]:
    """Other running apply layers that read `stream` (their heartbeat's p26_mode; one without, of an earlier version,
    or one unreadable, may read either): its group must stay."""
    def reads(mode: str | None) -> bool:
        return mode not in P26MODES or P26Mode(mode).input_stream == stream

    return sorted(key for key, beat in liveness.running(client, NAME).items()
                  if key != keys.heartbeat(me) and reads(beat.get("p26_mode")))


def honour_own_dry_run(client: redis.Redis, apply_mode: ApplyMode, log) -> bool:
    """The executor decides what is sent. An APPLY_MODE=dry_run given to this daemon while an executor runs sending
    orders (the seed's rollback: `echo APPLY_MODE=dry_run >> apply-layer.env; systemctl restart quantum-apply-layer`)
    is honoured fleet-wide, the stricter mode winning: the dry-run switch is set (`quantum dry-run on`), said in an
    error line (found in review: before, a warning only, and the fleet went on trading). Judged on the live
    executors' heartbeats: with none running (the fleet restarting) nothing is forced, since each executor's own
    start applies its APPLY_MODE. True when the switch is on (set now, or before)."""
    [forced] = lua.texts(client, [keys.FORCE_DRY_RUN])
    if forced_dry_run(forced):
        return True
    modes = live_executor_modes(client)
    sending = [mode for mode in modes if mode != FLEET_MODE_DRY_RUN]
    executor_mode = ",".join(sorted(set(modes)))
    if not modes or bool(sending) == (apply_mode is not ApplyMode.DRY_RUN):
        return False
    if apply_mode is not ApplyMode.DRY_RUN:  # the executor's dry run stands; this daemon's mode changes nothing
        log.warning("apply_mode_disagrees_with_executor", apply_mode=apply_mode.value, executor_mode=executor_mode,
                    hint="set APPLY_MODE in common.env only")
        return False
    client.set(keys.FORCE_DRY_RUN, "1")
    log.error("apply_mode_dry_run_forced_fleet_wide", executor_mode=executor_mode,
              detail="APPLY_MODE=dry_run here while the executor sends orders: the fleet-wide dry-run switch is on",
              hint="to trade again: APPLY_MODE in common.env only, then quantum dry-run off")
    return True


class OwnDryRun:
    """honour_own_dry_run at start, then again while this daemon's mode is dry_run and the switch is not on: every
    RECHECK_S for the first SOON_S (an executor still starting, or crash-looping, was missed by the one look at start:
    found in review), then every LATER_S (each look scans the keyspace for heartbeats)."""

    RECHECK_S = 5.0
    SOON_S = 180.0
    LATER_S = 60.0

    def __init__(self, client: redis.Redis, apply_mode: ApplyMode, log, monotonic: Callable[[], float] = time.monotonic):
        self.client, self.apply_mode, self.log, self.monotonic = client, apply_mode, log, monotonic
        self.done = apply_mode is not ApplyMode.DRY_RUN
        self.last = float("-inf")
        self.started = monotonic()

    def check(self) -> None:
        self.last = self.monotonic()
        # done once the switch is on (set here, or an operator's `quantum dry-run on`): nothing left to watch for
        self.done = honour_own_dry_run(self.client, self.apply_mode, self.log) or self.done

    def maybe_check(self) -> None:
        now = self.monotonic()
        every = self.RECHECK_S if now - self.started < self.SOON_S else self.LATER_S
        if not self.done and now - self.last >= every:
            self.check()


class ApplyLayer:
    def __init__(self, client: redis.Redis, filters: FilterCache, settings: ApplySettings,
                 clock: Callable[[], int] = wall_ms):
        self.r = client
        self.filters = filters
        self.settings = settings
        self.clock = clock
        self.log = get_logger(component="apply_layer")

    def handle(self, proposal: HarvestProposal, entry: Entry) -> bool:
        """Whether this call planned the proposal (False: decided before, or skipped)."""
        earlier = proposals.decided(self.r, proposal.proposal_id)
        if earlier is not None:  # read again (a redelivery, the other stream) or superseded: decided, before its age
            self._already_decided(proposal, earlier, entry)
            return False
        try:
            check_fresh(proposal, entry.entry_id, self.clock(), self.settings.proposal_max_age_ms)
        except Rejected as refused:
            PROPOSALS.labels(outcome=refused.reason).inc()
            raise
        try:
            plan = to_plan(proposal, self.filters.find(proposal.symbol), self.settings)
        except Rejected as refused:  # dead-lettered; decided too, so that harvest does not propose it again
            proposals.decide(self.r, proposal.proposal_id, proposals.skipped(refused.reason))
            raise
        if isinstance(plan, Skip):
            # Said in the proposal's marker, so harvest knows no plan will come (and whether to propose again).
            if not proposals.decide(self.r, proposal.proposal_id, proposals.skipped(plan.reason)):
                self._already_decided(proposal, proposals.decided(self.r, proposal.proposal_id), entry)
                return False
            PROPOSALS.labels(outcome=plan.reason).inc()
            self.log.info("PROPOSAL_SKIPPED", proposal_id=proposal.proposal_id, symbol=proposal.symbol, reason=plan.reason)
            return False
        written = xadd_once(self.r, keys.apply_proposal(proposal.proposal_id), keys.Stream.APPLY_PLAN, plan.to_fields())
        if not written:
            self._already_decided(proposal, proposals.decided(self.r, proposal.proposal_id), entry)
            return False
        PROPOSALS.labels(outcome="planned").inc()
        event = "DRY_RUN_PLAN_PUBLISHED" if fleet_dry_run(self.r)[0] else "PLAN_PUBLISHED"
        # DRY_RUN_: the executor runs dry, it records the plan without sending.
        self.log.info(event, plan_id=plan.plan_id, proposal_id=proposal.proposal_id, symbol=plan.symbol,
                      action=plan.action.value, side=plan.side.value, qty=str(plan.qty), entry_id=entry.entry_id)
        return True

    def _already_decided(self, proposal: HarvestProposal, decided: str | None, entry: Entry) -> None:
        """A proposal decided before: planned (counted `duplicate`: one plan, however often read), skipped, or
        superseded by harvest (its rung proposed again under a new id: this one must never become a plan)."""
        stage = proposals.fate_of(decided, None).stage
        superseded = stage is proposals.Stage.SUPERSEDED
        PROPOSALS.labels(outcome="superseded" if superseded else "duplicate").inc()
        event = {proposals.Stage.SUPERSEDED: "PROPOSAL_SUPERSEDED", proposals.Stage.SKIPPED: "PROPOSAL_ALREADY_SKIPPED"}
        self.log.info(event.get(stage, "PLAN_ALREADY_PUBLISHED"), plan_id=plan_id_for(proposal.proposal_id),
                      proposal_id=proposal.proposal_id, symbol=proposal.symbol, decided=decided,
                      entry_id=entry.entry_id)
