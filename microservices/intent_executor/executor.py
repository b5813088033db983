"""The intent executor's handler: one plan in, at most one order out, exactly one result.

For each plan: skip it if it already has a result; resolve by client order id if an order
was sent before a crash; wait for both permits (blocking on their notification, no fixed
sleep) and consume them once; then the order path (microservices.intent_executor.order): re-check
the trading state, size against the filters, send one MARKET order whose newClientOrderId derives
from the plan id. A timeout or 503 "Unknown error" is an unknown outcome: the order is looked up,
never sent again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from microservices.intent_executor import outcomes, scripts
from microservices.intent_executor.order import OrderPath, Taken
from microservices.intent_executor.resolve import Marker, Resolver
from microservices.intent_executor.settings import ExecutorSettings
from shared import keys, lua, permits, results
from shared.incarnation import RedisIncarnation
from shared.logging import get_logger
from shared.modes import ApplyMode
from shared.orders import client_order_id_for
from shared.runtime.consumer import Entry, GiveUpLater, Rejected
from shared.runtime.exchange import ExchangeAccess
from shared.schema import P32Permit, P33Permit, Plan, Reason
from shared.trading_state import forced_dry_run, read_switches

DRY_RUN_GAUGE_EVERY_S = 1.0  # the gauge follows `quantum dry-run on|off` within a second while idle
WAKE_UP_EVERY_S = 1.0  # the longest single BLPOP: a retried call never blocks past the deadline by more

@dataclass(frozen=True)
class LookAhead:
    result_marker: str | None  # the plan's result marker: it has ended (shared.results: it names the plan it ended)
    claim_holder: str | None
    earlier_marker: str | None  # an order marker of another attempt: an order may exist
    attempt: str  # this handling of the plan: the token its permit takes and order marker carry
    asked_at: float  # monotonic, before the call: if it took the permits, it took them after this
    taken: list | None = None  # TAKE's replies when the look-ahead could already take both permits


class PlanBusy(RuntimeError):
    """Another executor instance holds this plan; leave the entry pending and retry later."""


class PlanEnded(RuntimeError):
    """The plan got its result while this executor waited for its permits: nothing is sent, nothing written."""


class Executor:
    def __init__(
        self,
        client: redis.Redis,
        exchange: ExchangeAccess,
        settings: ExecutorSettings,
        consumer_name: str,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], object] = threading.Event().wait,
        monotonic: Callable[[], float] = time.monotonic,
        incarnation: RedisIncarnation | None = None,
    ):
        self.r = client
        self.incarnation = incarnation
        self.exchange = exchange
        self.settings = settings
        outcomes.configured_mode(settings.apply_mode)  # beside the dry-run gauge: tells a forced dry run apart
        self.consumer_name = consumer_name
        self.clock = clock
        self.wait = wait
        self.monotonic = monotonic
        self._last_gauge = float("-inf")
        self.log = get_logger(component="executor")
        # Called while one plan takes long (waits, lookups): liveness must not read a slow exchange as a hang.
        self.progress: Callable[[], object] = lambda: None
        self.resolver = Resolver(client, exchange, settings.executor_resolve_attempts, self.log, wait,
                                 beat=lambda: self.progress(), monotonic=monotonic)
        self.orders = OrderPath(exchange, settings, self.resolver, self.log, clock, monotonic)

    def handle(self, plan: Plan, entry: Entry) -> None:
        older_than_redis = self._older_than_redis(entry)
        ahead = self._look_ahead(plan, take_now=not older_than_redis)
        # The look-ahead may have been the command that reconnected, to a server that came up since the entry was
        # read: then the plan is looked up on the exchange before sending, even with its permits taken.
        older_than_redis = older_than_redis or self._older_than_redis(entry)
        if ahead.result_marker is not None:
            self._release(plan, ahead)
            ended_for = results.marker_digest(ahead.result_marker)
            if entry.deliveries <= 1 or (ended_for is not None and ended_for not in plan.digests):
                # Its plan_id already ended, on this entry's first delivery or for a plan of other content: another
                # entry under a plan_id used before (an operator's retype, a producer's resend). Not executed; said in
                # a dead letter, not only a log line. Found in review: a retype whose first delivery failed (another
                # executor held the claim) was skipped with a log line only on its next.
                raise Rejected(Reason.DUPLICATE_PLAN.value, {"plan_id": plan.plan_id,
                                                            "detail": "this plan_id already has its result"})
            self.log.info("duplicate_plan_skipped", plan_id=plan.plan_id, entry_id=entry.entry_id)  # redelivered
            return
        if ahead.claim_holder != self.consumer_name:
            raise PlanBusy(f"plan {plan.plan_id} is being executed by {ahead.claim_holder}")
        released = False
        try:
            outcome = self.decide(plan, ahead, older_than_redis)
            written = results.finish_plan(self.r, outcome.result, outcome.effects, now_ms=self._now_ms(),
                                          ledger_seen=outcome.ledger_seen, release=[keys.plan_claim(plan.plan_id)],
                                          sending=keys.executor_sending(plan.symbol), plan_digest=plan.digest)
            released = True
            outcomes.record(self.log, outcome, written)
        except PlanEnded:
            self.log.info("duplicate_plan_skipped", plan_id=plan.plan_id, entry_id=entry.entry_id, when="taking")
        finally:
            if not released:
                self._release(plan, ahead)

    def _look_ahead(self, plan: Plan, take_now: bool = True) -> "LookAhead":
        """One script call before anything else: result marker, claim, sending mark, order marker, permits,
        and when both permits are already there (and take_now), the taking too."""
        attempt = permits.new_attempt(self.consumer_name)
        asked_at = self.monotonic()
        result_marker, holder, earlier_marker, *rest = scripts.LOOK_AHEAD(
            self.r, *scripts.look_ahead_call(plan, attempt, self.consumer_name, take_now))
        taken = rest[2:] or None  # rest[:2]: whether each permit is present
        # 0 when the plan has no result; its marker's text (an empty one included) when it has.
        return LookAhead(result_marker if isinstance(result_marker, str) else None, holder, earlier_marker, attempt,
                         asked_at, taken)

    def _release(self, plan: Plan, ahead: "LookAhead") -> None:
        if ahead.claim_holder == self.consumer_name:  # and still is: another executor may hold it by now
            scripts.RELEASE(self.r, scripts.release_keys(plan), [self.consumer_name, plan.plan_id])

    def on_tick(self) -> None:
        """Between batches: the filter cache's schedule, and about once a second the dry-run gauge, kept
        true while idle (every plan sets it from what it read when taking its permits)."""
        self.exchange.filters.maybe_refresh()
        now = self.monotonic()
        if now - self._last_gauge < DRY_RUN_GAUGE_EVERY_S:
            return
        self._last_gauge = now
        [raw] = lua.texts(self.r, [keys.FORCE_DRY_RUN])  # a hash there reads as unreadable, i.e. forced
        forced = forced_dry_run(raw)
        outcomes.DRY_RUN.set(int(self.settings.apply_mode is ApplyMode.DRY_RUN or forced))

    def give_up(self, entry: Entry, reason: str) -> None:
        """A plan the runtime is about to dead-letter still ends in one result, saying what is known."""
        if reason == Reason.DUPLICATE_PLAN.value:
            return  # its plan_id is another entry's (ended, or to be resolved by that entry): not this one's to end
        try:
            plan = Plan.from_fields(entry.fields)
        except Exception:  # not a plan (whatever its parse raised: this runs while the entry is dead-lettered)
            return  # the dead letter is its only record
        claim = keys.plan_claim(plan.plan_id)
        reply = scripts.CLAIM_TO_END(self.r, [claim, keys.plan_order_marker(plan.plan_id)],
                                     [self.consumer_name, scripts.CLAIM_TTL_S])
        holder, marker = [*reply, None][:2]  # Lua drops a trailing nil: {nil, nil} arrives as [None]
        if holder is not None:  # it may be taking its permits or sending: its result ends the plan
            raise GiveUpLater(f"plan {plan.plan_id} is held by {holder}")
        order_marker = Marker.parse(marker) if marker is not None else None
        if order_marker is not None and self.resolver.marked_digests(order_marker) - plan.digests:
            # The marker is another plan's under this plan_id (a retype with other content): that plan's entry ends it,
            # with its own order's outcome; this one's dead letter is its only record.
            scripts.RELEASE(self.r, scripts.release_keys(plan), [self.consumer_name, plan.plan_id])
            return
        # An order may exist behind a marker, or behind an entry older than the Redis in use (found in review: a
        # failover may have lost the marker, and the plan's lookups kept failing until its deliveries ran out).
        may_exist = order_marker is not None or self._older_than_redis(entry)
        detail = {"runtime_reason": reason, "deliveries": str(entry.deliveries),
                  "order_may_exist": str(may_exist).lower(),
                  "client_order_id": client_order_id_for(plan.plan_id)}
        outcome = outcomes.refused(plan, Reason.GAVE_UP, detail, *self.resolver.permits_of(plan, order_marker))
        written = results.finish_plan(self.r, outcome.result, now_ms=self._now_ms(), release=[claim],
                                      sending=keys.executor_sending(plan.symbol),
                                      order_may_exist=may_exist, plan_digest=plan.digest)
        outcomes.record(self.log, outcome, written)

    def decide(self, plan: Plan, ahead: "LookAhead", older_than_redis: bool = False) -> outcomes.Outcome:
        client_order_id = client_order_id_for(plan.plan_id)
        # An earlier attempt's order marker first: a retype of its plan_id (even with decision HOLD) must not end the
        # plan whose order may be out (found in review: it was ended decision_not_execute while its order filled).
        if ahead.earlier_marker:
            marker = Marker.parse(ahead.earlier_marker)
            marked_for = self.resolver.marked_digests(marker) - plan.digests
            if marked_for:
                # Another plan under this plan_id took its permits (and may have sent): its entry resolves that order
                # with its own side and symbol. This entry is a retype or a resend with other content: not executed.
                raise Rejected(Reason.DUPLICATE_PLAN.value, {
                    "plan_id": plan.plan_id, "plan_digest": plan.digest, "marked_plan_digest": sorted(marked_for)[0],
                    "detail": "this plan_id's order marker belongs to a plan with other content"})
            return self.resolver.after_earlier_attempt(plan, marker)
        if not plan.is_executable:
            return outcomes.refused(plan, Reason.DECISION_NOT_EXECUTE, {"decision": plan.decision.value})
        if older_than_redis:
            since_ms = self.incarnation.since_ms if self.incarnation is not None else None
            found = self.resolver.before_sending(plan, client_order_id, since_ms)
            if found is not None:
                return found
        taken = self._take_permits(plan, ahead)
        if isinstance(taken, outcomes.Outcome):
            return taken
        return self.orders.execute(plan, client_order_id, taken)

    def _older_than_redis(self, entry: Entry) -> bool:
        """The plan's entry was written before the Redis we talk to came up (shared.incarnation): the
        order marker of an earlier attempt may have been lost with the writes that followed it."""
        return self.incarnation is not None and self.incarnation.predates(entry.entry_id)

    def _take_permits(self, plan: Plan, ahead: LookAhead) -> Taken | outcomes.Outcome:
        """Wait for both permits, then take them and read the switches, snapshot and ledger in one script call
        (unless the look-ahead already did)."""
        wanted = list(scripts.PERMIT_KINDS)
        if ahead.taken is not None:
            replies, asked_at = ahead.taken, ahead.asked_at
        else:
            replies, asked_at = self._wait_and_take(plan, ahead.attempt)
        try:
            p32, p33 = permits.taken(wanted, replies)
        except permits.PermitError as exc:  # JSON the gates would never write: not a permission
            return outcomes.refused(plan, Reason.PERMIT_DENIED, {"invalid_permit": str(exc)})
        if p32 is None or p33 is None:
            missing = [kind.value for kind, permit in zip(wanted, (p32, p33)) if permit is None]
            return outcomes.refused(plan, Reason.PERMIT_TIMEOUT, {"missing": ",".join(missing)}, p32, p33)
        refusal = _permit_refusal(plan, p32, p33)
        if refusal is not None:
            reason, detail = refusal
            return outcomes.refused(plan, reason, detail, p32, p33)
        kill, execution, forced_dry_run, snapshot_raw, ledger_flat, marked = replies[4:]
        if not marked:  # the script and the permit model read "allow" differently: never send unmarked
            return outcomes.refused(plan, Reason.PERMIT_DENIED, {"order_marker": "not written",
                                                                 "detail": "allow is not a JSON true"}, p32, p33)
        # None (the key is not a hash): finish_plan reads it again, finds it unreadable and leaves it to reconcile.
        ledger_seen = None if ledger_flat is None else dict(zip(ledger_flat[0::2], ledger_flat[1::2]))
        return Taken(p32, p33, read_switches(kill, execution), forced_dry_run, snapshot_raw, ledger_seen, asked_at)

    def _wait_and_take(self, plan: Plan, attempt: str) -> tuple[list, float]:
        """Block on the plan's permit notifications. Each wake-up is followed, in the same round trip, by a
        script that takes both permits if both are there; so the permit that completes the pair is taken
        without another round trip. At the deadline TAKE takes what there is (and finds what is missing).
        (replies, monotonic time before the call that took them)."""
        ready = keys.permit_ready(plan.plan_id)
        script_keys, script_args = scripts.claimed_take(plan, attempt, self.consumer_name)
        deadline = self.monotonic() + self.settings.executor_permit_wait_ms / 1000
        replies: list | str = []
        while not replies and (remaining := deadline - (asked_at := self.monotonic())) > 0:
            self.progress()
            _popped, replies = scripts.TAKE_WHEN_BOTH.after_blpop(
                self.r, ready, min(max(remaining, 0.001), WAKE_UP_EVERY_S), script_keys, script_args)
        if not replies:
            asked_at = self.monotonic()
            replies = scripts.TAKE(self.r, script_keys, script_args)
        if replies == scripts.CLAIM_LOST:
            raise PlanBusy(f"the claim on plan {plan.plan_id} expired or passed to another executor; nothing taken")
        if replies == scripts.HAS_RESULT:
            raise PlanEnded(f"plan {plan.plan_id} got its result meanwhile; nothing taken")
        return replies, asked_at

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _permit_refusal(plan: Plan, p32: P32Permit, p33: P33Permit) -> tuple[Reason, dict[str, str]] | None:
    """Why the two permits do not let this plan go: decided for another plan under its plan_id (checked first:
    such a verdict says nothing of this plan), or a denial."""
    permits_of = (("governor P3.2", p32), ("position-state-brain P3.3", p33))
    for who, permit in permits_of:
        if permit.plan_digest != plan.digest:
            return Reason.PERMIT_MISMATCH, {"permit_of": who, "plan_digest": plan.digest,
                                            "permit_plan_digest": str(permit.plan_digest)}
    for who, permit in permits_of:
        if not permit.allow:
            return permit.reason, {"denied_by": who, **_strings(permit.context)}
    return None


def _strings(context: dict) -> dict[str, str]:
    return {str(key): str(value) for key, value in context.items()}
