"""The governor's handler: one plan in, one P3.2 permit out (or none, for plans that need none).

Closes read only the trading switches and pass unless the kill switch is on. Opens take
the decision lock, read everything in one round trip, run the gates, and write the permit
with their bookkeeping in one transaction. The read rides on the consumer's wait for plans
(an arrival read, shared.runtime.arrival), so a batch of opens usually costs the one round trip
of its commit; when that read cannot stand for a read at the decision's time, it is made again.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

import redis

from microservices.governor import metrics
from microservices.governor.gates import INFLIGHT_REASONS, Verdict, evaluate
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState
from microservices.governor import arrival
from microservices.governor.arrival import ArrivalRead
from microservices.governor.store import GovernorStore, LockLost, RoundEffects, RoundRead
from microservices.governor.writes import Writes, plan_writes
from shared.exchange.filter_cache import FilterCache
from shared.exchange.filters import round_qty_down
from shared.logging import get_logger
from shared.runtime.arrival import ArrivalCall
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
        self._asked: tuple[str, int] | None = None
        self._arrival: ArrivalRead | None = None

    def arrival_call(self) -> ArrivalCall:
        """The consumer sends this with each wait for plans: the decision lock and a round read, taken as they arrive."""
        self._asked = (secrets.token_hex(8), _ms(self.clock()))
        return arrival.call(self.store, *self._asked)

    def arrived(self, reply: object | None) -> None:
        """The arrival read for the batch about to be handled; None once the batch is over (or the read
        failed): then a decision lock taken on arrival that no round used is let go, else it would hold
        other governors off until it expires."""
        if reply is not None:
            self._arrival = self._read_arrival(reply)
            return
        token = self._unused_lock()
        self._asked, self._arrival = None, None
        if token is not None:
            try:
                self.store.release(token)  # conditional on the token: a no-op if the script took no lock
            except redis.RedisError:
                pass  # it expires after LOCK_TTL_MS

    def _read_arrival(self, reply: object) -> ArrivalRead | None:
        if self._asked is None:
            return None
        if reply == []:  # nothing arrived: no lock was taken
            self._asked = None
            return None
        try:
            read = arrival.parse(*self._asked, reply)
        except (ValueError, TypeError) as exc:  # a reply of another shape: its lock, if any, goes after the batch
            self.log.warning("arrival_read_unreadable", error=exc.__class__.__name__)
            return None
        self._asked = None
        return read

    def _unused_lock(self) -> str | None:
        """After a batch: the token of a lock taken on arrival and used by no round, or of an arrival call whose
        reply never came or could not be read (it may have taken the lock)."""
        if self._arrival is not None:
            return self._arrival.token if self._arrival.locked else None
        return self._asked[0] if self._asked is not None else None

    def handle(self, plan: Plan, entry: Entry | None = None) -> Verdict | None:
        """The decision taken, or None when the plan needs no permit."""
        if not plan.is_executable:
            return self._skip(plan, "decision_not_execute")
        if plan.is_close:
            return self._decide_close(plan)
        outcome = self._decide_opens([self._as_sent(plan)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def handle_batch(self, batch: list[tuple[Plan, Entry]]) -> list[BaseException | None]:
        """The consumer's batch handler: closes one by one (first: nothing about opens may hold them up),
        then the batch's opens in rounds of one read and one commit each. The first round uses the read made
        as the batch arrived, unless closes were decided meanwhile: then it reads again, under the lock the
        arrival read took, so that what it decides on is as fresh as its own read would be."""
        failures: list[BaseException | None] = [None] * len(batch)
        opens: list[tuple[int, Plan]] = []
        closes = 0
        for i, (plan, _entry) in enumerate(batch):
            try:
                if not plan.is_executable:
                    self._skip(plan, "decision_not_execute")
                elif plan.is_close:
                    closes += 1
                    self._decide_close(plan)
                else:
                    opens.append((i, self._as_sent(plan)))
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:  # one bad plan fails alone
                failures[i] = exc
        if closes and self._arrival is not None:
            self._arrival = replace(self._arrival, stale=True)
        outcomes = self._decide_opens([plan for _i, plan in opens]) if opens else []  # failures per plan
        for (i, _plan), outcome in zip(opens, outcomes):
            if isinstance(outcome, Exception):
                failures[i] = outcome
        return failures

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
        switches, disarmed, inflight, snapshot = self.store.read_gauges()
        self._report_unreadable(switches.invalid, SWITCHES)
        metrics.set_switches(switches, disarmed)
        metrics.INFLIGHT_OPENS.set(inflight)
        metrics.record_exposure(snapshot, self.limits)

    def _decide_close(self, plan: Plan) -> Verdict | None:
        now_s = self.clock()
        state, has_result = self.store.read_close(plan.plan_id)
        if has_result:
            return self._skip(plan, "has_result")
        verdict = evaluate(plan, state, self.limits, _ms(now_s))
        self.store.issue(_permit(plan, verdict, now_s))
        self._record(plan, verdict, state, state.auto_disarmed)
        return verdict

    def _decide_opens(self, plans: list[Plan]) -> list[Verdict | Exception | None]:
        """Opens in rounds: one locked read, each plan decided in order on that read plus the round's
        earlier decisions, then one commit of them all. A round ends early where deciding on would need a
        fresh read: a plan seen twice, an exact look at the in-flight opens, an auto-disarm set or cleared,
        or a plan whose decision raised (it fails alone; the others go on)."""
        outcomes: list[Verdict | Exception | None] = [None] * len(plans)
        start, lost = 0, 0
        while start < len(plans):
            try:
                advanced, committed_all = self._round(plans, start, outcomes)
            except (redis.ConnectionError, redis.TimeoutError):
                raise
            except Exception as exc:  # e.g. LockBusy: what is left stays pending and is retried
                outcomes[start:] = [outcome if outcome is not None else exc for outcome in outcomes[start:]]
                break
            start += advanced
            if not committed_all:
                lost += 1
                self.log.warning("decision_lock_lost", plan_id=plans[start].plan_id, attempt=lost)
                if lost == DECIDE_ATTEMPTS:
                    failure = LockLost(f"decision lock expired before plan {plans[start].plan_id} was committed")
                    outcomes[start:] = [failure] * (len(plans) - start)
                    break
        return outcomes

    def _round(self, plans: list[Plan], start: int, outcomes: list) -> tuple[int, bool]:
        """Decide and commit a round from plans[start]: (how many plans it settled, whether every decision
        was committed; if not, the lock expired and the rest is decided again on a fresh read)."""
        pending = plans[start:]
        read = self._lock_and_read([(p.plan_id, p.symbol) for p in pending])
        decided: list[tuple[int, Plan, Verdict, GovernorState, Writes]] = []
        settled, seen, earlier, written = 0, set(), RoundEffects(), 0
        try:
            for index, plan in enumerate(pending):
                if plan.plan_id in seen:
                    break
                seen.add(plan.plan_id)
                if read.own[index].has_result:
                    self._skip(plan, "has_result")
                    settled += 1
                    continue
                try:
                    state = read.state_for(index, plan.symbol, earlier)
                    verdict = evaluate(plan, state, self.limits, read.now_ms)
                    if verdict.reason in INFLIGHT_REASONS and state.totals is not None and state.totals.count:
                        if decided:
                            break  # the exact look reads the records: commit the round's decisions first
                        state, verdict = self._exact_look(plan, state, read.now_ms)
                    writes = plan_writes(plan, verdict, _permit(plan, verdict, read.now_ms / 1000), state,
                                         self.limits, read.now_ms)
                except (redis.ConnectionError, redis.TimeoutError):
                    raise
                except Exception as exc:  # this plan fails alone: commit the round so far, go on after it
                    outcomes[start + index] = exc
                    settled += 1
                    break
                decided.append((start + index, plan, verdict, state, writes))
                earlier.add(writes, read.own[index])
                settled += 1
                if writes.disarm is not None or writes.clear_disarm or writes.drop_inflight:
                    break
            if decided:
                written = self.store.commit_round([writes for *_rest, writes in decided], read.token)
        finally:
            if not decided or written < len(decided):
                self.store.release(read.token)  # conditional on our token: a no-op if the lock is gone
        for at, _plan, verdict, _state, _writes in decided[:written]:
            outcomes[at] = verdict
        for _at, plan, verdict, state, writes in decided[:written]:
            self._after_open(plan, verdict, state, writes)
        if written < len(decided):
            return decided[written][0] - start, False
        return settled, True

    def _lock_and_read(self, plans: list[tuple[str, str]]) -> RoundRead:
        """The round's read: the arrival read when it stands for a read now, else a read (under its lock, if it took one)."""
        arrived, self._arrival = self._arrival, None
        if arrived is not None:
            read = arrival.as_round(self.store, arrived, plans, _ms(self.clock()))
            if read is not None:
                return read
        token = arrived.token if arrived is not None and arrived.locked else None
        return self.store.lock_and_read_opens(plans, lambda: _ms(self.clock()), token)

    def _exact_look(self, plan: Plan, state: GovernorState, now_ms: int) -> tuple[GovernorState, Verdict]:
        """The totals count every open allowed and not yet settled or expired: safe, but an open whose
        fill the snapshot already shows counts twice until the next prune. When they decided a denial,
        read the records and their results, so only opens the snapshot does not show yet count."""
        records, corrupt = self.store.read_inflight()
        others = [entry.plan_id for entry in records if entry.plan_id != plan.plan_id]
        state = replace(state, inflight=records, unreadable_inflight=corrupt, result_ms=self.store.read_results(others))
        return state, evaluate(plan, state, self.limits, now_ms)

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
        plan_digest=plan.digest,
    )
