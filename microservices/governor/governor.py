"""The governor's handler: one plan in, one P3.2 permit out (or none, for plans that need none).

Closes read only the trading switches and pass unless the kill switch is on. Opens take
the decision lock, read everything in one round trip, run the gates, and write the permit
with their bookkeeping in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import redis

from microservices.governor import metrics
from microservices.governor.gates import INFLIGHT_REASONS, Verdict, evaluate
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState
from microservices.governor.store import GovernorStore, LockLost, OpenRead
from microservices.governor.writes import Writes, plan_writes
from shared.exchange.filter_cache import FilterCache
from shared.exchange.filters import round_qty_down
from shared.logging import get_logger
from shared.runtime.consumer import Entry
from shared.schema import P32Permit, Plan

PRUNE_EVERY_S = 1.0  # the snapshot refreshes about once a second; pruning faster finds nothing new
TREATED_AS = {"kill": "on", "execution": "DISABLED", "snapshot": "missing", "cooldown": "absent", "inflight": "dropped"}
SWITCHES = ("kill", "execution")
DECIDE_ATTEMPTS = 3  # a decision that outlived its lock is taken again from a fresh read


class Governor:
    def __init__(
        self,
        client: redis.Redis,
        limits: Limits,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] = threading.Event().wait,
        monotonic: Callable[[], float] = time.monotonic,
        filters: FilterCache | None = None,
    ):
        self.store = GovernorStore(client, limits, wait)
        self.filters = filters
        self.limits = limits
        self.clock = clock
        self.log = get_logger(component="governor")
        self.monotonic = monotonic
        self._reported: dict[str, str] = {}
        self._last_prune = float("-inf")
        self._last_gauges = float("-inf")

    def handle(self, plan: Plan, entry: Entry | None = None) -> Verdict | None:
        """The decision taken, or None when the plan needs no permit."""
        if not plan.is_executable:
            return self._skip(plan, "decision_not_execute")
        return self._decide_close(plan) if plan.is_close else self._decide_open(self._as_sent(plan))

    def _as_sent(self, plan: Plan) -> Plan:
        """Caps apply to what the executor will send: the quantity rounded down to the step."""
        rules = self.filters.find(plan.symbol) if self.filters is not None else None
        if rules is None:
            return plan  # unknown rules: the unrounded quantity is the larger, so the caps stay safe
        sent = round_qty_down(rules, plan.qty)
        return plan.model_copy(update={"qty": sent}) if sent > 0 else plan

    def on_tick(self) -> None:
        """Between batches, about once a second: refresh the gauges and drop settled in-flight opens."""
        now = self.monotonic()
        if now - self._last_gauges >= PRUNE_EVERY_S:
            self._last_gauges = now
            self.refresh_gauges()
        if self.filters is not None:
            self.filters.maybe_refresh()
        if now - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = now
            self.store.prune_settled()

    def refresh_gauges(self) -> None:
        """Keep the switch gauges true while no plans arrive (the consumer calls this every loop)."""
        switches, disarmed, inflight = self.store.read_gauges()
        self._report_unreadable(switches.invalid, SWITCHES)
        metrics.set_switches(switches, disarmed)
        metrics.INFLIGHT_OPENS.set(inflight)

    def _decide_close(self, plan: Plan) -> Verdict | None:
        now_s = self.clock()
        state, has_result = self.store.read_close(plan.plan_id)
        if has_result:
            return self._skip(plan, "has_result")
        verdict = evaluate(plan, state, self.limits, _ms(now_s))
        self.store.issue(_permit(plan, verdict, now_s))
        self._record(plan, verdict, state, state.auto_disarmed)
        return verdict

    def _decide_open(self, plan: Plan) -> Verdict | None:
        for attempt in range(1, DECIDE_ATTEMPTS + 1):
            try:
                return self._decide_open_once(plan)
            except LockLost:
                self.log.warning("decision_lock_lost", plan_id=plan.plan_id, attempt=attempt)
                if attempt == DECIDE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _decide_open_once(self, plan: Plan) -> Verdict | None:
        read = self.store.lock_and_read_open(plan.plan_id, plan.symbol, lambda: _ms(self.clock()))
        committed = False
        try:
            if read.has_result:
                return self._skip(plan, "has_result")
            state, verdict = self._evaluate_open(plan, read)
            writes = plan_writes(plan, verdict, _permit(plan, verdict, read.now_ms / 1000), state, self.limits, read.now_ms)
            self.store.commit(writes, read.token)
            committed = True
        finally:
            if not committed:
                self.store.release(read.token)
        self._after_open(plan, verdict, state, writes)
        return verdict

    def _evaluate_open(self, plan: Plan, read: OpenRead) -> tuple[GovernorState, Verdict]:
        """Decide on the running totals; when in-flight opens decided a denial, look at each one and decide again.

        The totals count every open allowed and not yet settled or expired: safe, but an open whose
        fill the snapshot already shows counts twice until the next prune. The exact look reads the
        records and their results, so only opens the snapshot does not show yet count."""
        state, now_ms = read.state, read.now_ms
        verdict = evaluate(plan, state, self.limits, now_ms)
        if verdict.reason in INFLIGHT_REASONS and state.totals is not None and state.totals.count:
            records, corrupt = self.store.read_inflight()
            others = [entry.plan_id for entry in records if entry.plan_id != plan.plan_id]
            state = replace(state, inflight=records, unreadable_inflight=corrupt, result_ms=self.store.read_results(others))
            verdict = evaluate(plan, state, self.limits, now_ms)
        return state, verdict

    def _after_open(self, plan: Plan, verdict: Verdict, state: GovernorState, writes: Writes) -> None:
        disarmed = writes.disarm is not None or (state.auto_disarmed and not writes.clear_disarm)
        switches = replace(state.switches, execution_enabled=False) if writes.disarm else state.switches
        self._record(plan, verdict, replace(state, switches=switches), disarmed)
        pending = state.pending(plan.plan_id, writes.now_ms, self.limits.inflight_expiry_ms)
        metrics.INFLIGHT_OPENS.set(pending.count + (1 if verdict.allow else 0))
        if writes.clear_disarm:
            self.log.info("auto_disarm_cleared", detail="execution was re-enabled by an operator")
        if writes.disarm is not None:
            metrics.AUTO_DISARMS.inc()
            self.log.error("AUTO_DISARM", trips=writes.trips, threshold=self.limits.auto_disarm_trips,
                           window_s=self.limits.auto_disarm_window_ms // 1000, last_reason=verdict.reason.value,
                           plan_id=plan.plan_id, symbol=plan.symbol, execution="DISABLED")

    def _record(self, plan: Plan, verdict: Verdict, state: GovernorState, auto_disarmed: bool) -> None:
        self._report_unreadable({**state.switches.invalid, **state.unreadable}, SWITCHES if plan.is_close else tuple(TREATED_AS))
        metrics.set_switches(state.switches, auto_disarmed)
        metrics.record_decision(verdict.allow, verdict.reason.value)
        log = self.log.info if verdict.allow else self.log.warning
        log("PERMIT_DECISION", permit="p32", plan_id=plan.plan_id, symbol=plan.symbol, action=plan.action.value,
            allow=verdict.allow, reason=verdict.reason.value, context=verdict.context)

    def _skip(self, plan: Plan, why: str) -> None:
        metrics.SKIPPED.labels(why=why).inc()
        self.log.info("plan_skipped", plan_id=plan.plan_id, symbol=plan.symbol, why=why, decision=plan.decision.value)
        return None

    def _report_unreadable(self, unreadable: Mapping[str, str], checked: tuple[str, ...]) -> None:
        """Log each unreadable value once when it appears, not on every decision; `checked` names what was read."""
        for name in checked:
            value = unreadable.get(name)
            if value is not None and self._reported.get(name) != value:
                self.log.error("unreadable_state", what=name, value=value[:64], treated_as=TREATED_AS[name])
            if value is None:
                self._reported.pop(name, None)
            else:
                self._reported[name] = value


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _permit(plan: Plan, verdict: Verdict, now_s: float) -> P32Permit:
    return P32Permit(
        plan_id=plan.plan_id, allow=verdict.allow, symbol=plan.symbol, reason=verdict.reason,
        context=verdict.context, created_at=now_s, computed_notional=verdict.notional, mark_price=verdict.mark,
    )
