"""Races around an order whose outcome the executor cannot see, found in a review of the resolver.

A request whose reply was lost may still reach the matching engine afterwards (it is accepted up to
recvWindow after it was signed). Each test lets it land late and checks that no result claims what
the exchange contradicts, and that the ledger counts the fill once.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

import pytest

from microservices.intent_executor.executor import Executor
from microservices.intent_executor.resolve import OutcomeStillUnknown
from microservices.intent_executor.settings import ExecutorSettings
from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys, ledger, results, sending
from shared.exchange.errors import OutcomeUnknown
from shared.lua import LuaScript
from shared.modes import ApplyMode
from shared.redis_conn import connect
from shared.runtime.consumer import ConsumerConfig, Entry, GiveUpLater, StreamConsumer
from shared.runtime.exchange import ExchangeAccess
from shared.schema import Plan
from tests.intent_executor.test_executor_sim import grant, orders_for, plan, results_of, the_result
from tests.intent_executor.test_unclear_outcomes import age_the_marker
from tests.reconcile.test_reconciler_sim import Clock

SLOW_LOOKUP_S = 3.0  # longer than send_within (2 × 0.2 + 1 s) + recvWindow (0.1 s) + 1 s: the window a marker opens


class LateLanding:
    """The simulator's client, except that the order's reply is lost and the request reaches the engine only
    after the executor has looked for it; the first lookup (before sending) is slow."""

    def __init__(self, real):
        self.real, self.pending = real, None

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_order(self, symbol, client_order_id):
        if self.pending is None:
            time.sleep(SLOW_LOOKUP_S)
        return self.real.get_order(symbol, client_order_id)

    def create_market_order(self, *args):
        self.pending = args
        raise OutcomeUnknown("read timed out (test)")

    def land(self) -> None:
        self.real.create_market_order(*self.pending)


class OlderThanRedis:
    """Every entry predates the Redis in use, which came up at since_ms (Redis time; 0: long ago)."""

    def __init__(self, since_ms: int = 0):
        self.since_ms = since_ms

    def predates(self, _entry_id: str) -> bool:
        return True


def run(r, access, incarnation=None) -> None:
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="t", wait=lambda _s: None, incarnation=incarnation)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="t",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, Plan.from_fields, executor.handle).run(burst=True)


def send_lost_then_landed(r, access, plan_id: str, incarnation=None) -> None:
    settings = access.settings.model_copy(update={"request_timeout_s": 0.2})
    late = LateLanding(access.client)
    late.real._client.REQUEST_RECVWINDOW = 100
    grant(r, plan_id)
    plan(r, plan_id, "BUY", "0.002")
    run(r, ExchangeAccess(settings, late, access.filters), incarnation)
    late.land()


def test_a_plan_looked_up_before_sending_is_not_declared_unsent_while_its_order_can_land(r, access, sim) -> None:
    send_lost_then_landed(r, access, "late-older-1", OlderThanRedis())  # the lookup before sending took 3 s

    assert results_of(r, "late-older-1") == []  # pending: looked at again on its next delivery
    assert [o["status"] for o in orders_for(sim, "late-older-1")] == ["FILLED"]


def redis_ms(r) -> int:
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def test_no_order_is_not_believed_before_sending_while_an_attempt_lost_with_the_old_redis_can_land(r, access,
                                                                                                   sim) -> None:
    # Executor A takes the permits (marker written) and sends; the reply is lost and the request is still on its way.
    settings = access.settings.model_copy(update={"request_timeout_s": 0.2})
    late = LateLanding(access.client)
    late.pending = ()  # A's own lookups are not slowed
    late.real._client.REQUEST_RECVWINDOW = 100
    grant(r, "rolled-1")
    entry_id = plan(r, "rolled-1", "BUY", "0.002")
    run(r, ExchangeAccess(settings, late, access.filters))
    assert results_of(r, "rolled-1") == [] and r.exists(keys.plan_order_marker("rolled-1"))

    # Redis comes back from an older file: A's marker, claim and taken permits are gone; the gates permit again.
    r.delete(keys.plan_order_marker("rolled-1"), keys.plan_claim("rolled-1"), keys.permit_used("p32", "rolled-1"),
             keys.permit_used("p33", "rolled-1"), keys.executor_sending("BTCUSDT"))
    grant(r, "rolled-1")
    fields = {k: v for _id, f in r.xrange(keys.Stream.APPLY_PLAN) for k, v in f.items()}
    entry = Entry(keys.Stream.APPLY_PLAN, entry_id, fields, 2)

    def executor_b(since_ms: int) -> Executor:
        return Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="b", wait=lambda _s: None, incarnation=OlderThanRedis(since_ms))

    # Executor B, right after the restart: the exchange has no such order yet, but A's request may still land.
    with pytest.raises(OutcomeStillUnknown):
        executor_b(redis_ms(r)).handle(Plan.from_fields(fields), entry)
    assert orders_for(sim, "rolled-1") == [] and not r.exists(keys.permit_used("p32", "rolled-1"))

    late.land()  # A's request reaches the engine within its recvWindow
    executor_b(redis_ms(r) - 60_000).handle(Plan.from_fields(fields), entry)  # delivered again, later

    assert [o["status"] for o in orders_for(sim, "rolled-1")] == ["FILLED"]  # A's order, and only it
    assert the_result(r, "rolled-1")["order_status"] == "FILLED"


def test_reconcile_does_not_heal_under_an_order_whose_outcome_is_unknown(r, access, sim) -> None:
    send_lost_then_landed(r, access, "late-heal-1")
    assert results_of(r, "late-heal-1") == [] and sending.busy(r, "BTCUSDT")  # the mark stays with the marker

    clock = Clock()
    reconciler = Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=5), clock=clock)
    reconciler.run_pass()
    clock.now += 6
    reconciler.run_pass()
    assert ledger.read(r, "BTCUSDT") is None  # not healed under the send

    age_the_marker(r, "late-heal-1", by_ms=60_000)  # delivered again, past the window
    run(r, access)

    assert the_result(r, "late-heal-1")["order_status"] == "FILLED"
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")  # the fill counted once, as the exchange holds it
    assert not sending.busy(r, "BTCUSDT")


def test_a_plan_given_up_elsewhere_while_this_executor_waits_sends_nothing(r, access, sim, redis_url) -> None:
    entry_id = plan(r, "given-up-1", "BUY", "0.002")  # no permits yet: executor A waits for them
    fields = {k: v for _id, f in r.xrange(keys.Stream.APPLY_PLAN) for k, v in f.items()}

    def another_instance_gives_up() -> None:
        time.sleep(0.5)
        other = connect(redis_url)
        other.delete(keys.plan_claim("given-up-1"))  # A stalled past its claim's TTL
        b = Executor(other, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="executor-b")
        b.give_up(Entry(keys.Stream.APPLY_PLAN, entry_id, fields, 6), "max_deliveries_exceeded")
        time.sleep(0.2)
        grant(other, "given-up-1")  # and the permits arrive after the result

    helper = threading.Thread(target=another_instance_gives_up)
    helper.start()
    a = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=4000),
                 consumer_name="executor-a", wait=lambda _s: None)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="executor-a",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, Plan.from_fields, a.handle).run(burst=True)
    helper.join()

    assert [(x["executed"], x["reason"]) for x in results_of(r, "given-up-1")] == [("false", "gave_up_after_retries")]
    assert orders_for(sim, "given-up-1") == []


def test_a_plan_is_not_given_up_elsewhere_while_this_executor_holds_it(r, access, sim, redis_url) -> None:
    # Found in a review: B gave up (GAVE_UP, order_may_exist false) while A, holding the claim, had taken its
    # permits; A then sent, its FILLED result was suppressed and the ledger never counted the fill.
    grant(r, "held-1")
    entry_id = plan(r, "held-1", "BUY", "0.002")
    fields = {k: v for _id, f in r.xrange(keys.Stream.APPLY_PLAN) for k, v in f.items()}
    deferred: list = []

    class GiveUpElsewhereBeforeSending:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def create_market_order(self, *args):
            b = Executor(connect(redis_url), access, ExecutorSettings(apply_mode=ApplyMode.TESTNET),
                         consumer_name="executor-b")
            try:
                b.give_up(Entry(keys.Stream.APPLY_PLAN, entry_id, fields, 6), "max_deliveries_exceeded")
            except GiveUpLater as exc:
                deferred.append(str(exc))
            return self.real.create_market_order(*args)

    run(r, ExchangeAccess(access.settings, GiveUpElsewhereBeforeSending(access.client), access.filters))

    assert deferred == ["plan held-1 is held by t"]
    assert [(x["executed"], x["order_status"]) for x in results_of(r, "held-1")] == [("true", "FILLED")]
    assert [o["status"] for o in orders_for(sim, "held-1")] == ["FILLED"]
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")


def test_a_plan_given_up_ends_in_one_result_and_lets_its_claim_go(r, access, sim) -> None:
    grant(r, "ending-1")
    entry_id = plan(r, "ending-1", "BUY", "0.002")
    fields = {k: v for _id, f in r.xrange(keys.Stream.APPLY_PLAN) for k, v in f.items()}
    b = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="executor-b")

    b.give_up(Entry(keys.Stream.APPLY_PLAN, entry_id, fields, 6), "max_deliveries_exceeded")
    run(r, access)  # A, on the same entry (not yet dead-lettered there): finds the result

    (result,) = results_of(r, "ending-1")
    assert (result["executed"], result["reason"]) == ("false", "gave_up_after_retries")
    assert '"order_may_exist":"false"' in result["detail"]
    assert results.marker_outcome(r.get(keys.plan_result_marker("ending-1"))) == "gave_up_after_retries"  # nothing sent
    assert orders_for(sim, "ending-1") == [] and not r.exists(keys.plan_claim("ending-1"))
    assert result["p32_permit"] and result["p33_permit"]  # the permits' context, though none was taken


def test_the_sending_mark_of_an_order_whose_outcome_is_unknown_lasts_as_long_as_its_marker(r, access, sim) -> None:
    # Found in a review: the mark lasted the claim's 60 s; a plan not picked up again within them (executor down)
    # let reconcile heal the ledger to the exchange, fill included, and the later resolution added the fill again.
    send_lost_then_landed(r, access, "long-1")
    assert results_of(r, "long-1") == []
    marker_ttl_ms = r.pttl(keys.plan_order_marker("long-1"))
    assert marker_ttl_ms > 3600_000  # days, not seconds
    until_ms = int(r.hget(keys.executor_sending("BTCUSDT"), "long-1"))
    assert until_ms - redis_ms(r) > marker_ttl_ms - 60_000
    assert r.ttl(keys.executor_sending("BTCUSDT")) * 1000 > marker_ttl_ms - 60_000

    grant(r, "long-2", p32_allow=False)  # another plan on the symbol comes and goes (refused, so its own mark
    # never outlives a claim): the first plan's mark stays as long as it was
    plan(r, "long-2", "BUY", "0.002")
    other = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                     consumer_name="u", wait=lambda _s: None)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="u",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, Plan.from_fields, other.handle).run(burst=True)
    assert the_result(r, "long-2")["executed"] == "false"
    assert r.hkeys(keys.executor_sending("BTCUSDT")) == ["long-1"] and sending.busy(r, "BTCUSDT")
    assert r.ttl(keys.executor_sending("BTCUSDT")) * 1000 > marker_ttl_ms - 60_000

    renew = LuaScript(sending.MARK_FUNCTION + "mark_sending(KEYS[1], ARGV[1], tonumber(ARGV[2])) return 1")
    renew(r, [keys.executor_sending("BTCUSDT")], ["long-1", 60])  # picked up again: the claim's mark
    assert int(r.hget(keys.executor_sending("BTCUSDT"), "long-1")) == until_ms  # does not shorten the marker's

    age_the_marker(r, "long-1", by_ms=60_000)  # delivered again, past the window: resolved
    run(r, access)
    assert the_result(r, "long-1")["order_status"] == "FILLED" and not sending.busy(r, "BTCUSDT")


class ServerChangesDuringTheLookAhead:
    """The entry was read from the old server; the look-ahead is the first command on a new one (since now)."""

    def __init__(self, r):
        self.r, self.calls, self.since_ms = r, 0, None

    def predates(self, _entry_id: str) -> bool:
        self.calls += 1
        if self.calls == 1:
            return False  # as known when the handler started
        self.since_ms = redis_ms(self.r)
        return True


def test_a_plan_read_before_a_failover_is_looked_up_before_sending_even_with_its_permits_taken(r, access,
                                                                                               sim) -> None:
    # From a review: "older than Redis" was decided before the handler's first command, which may be the one
    # that reconnects to a server that lost an earlier attempt's order marker.
    grant(r, "failover-1")
    entry_id = plan(r, "failover-1", "BUY", "0.002")
    fields = {k: v for _id, f in r.xrange(keys.Stream.APPLY_PLAN) for k, v in f.items()}
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="t", wait=lambda _s: None, incarnation=ServerChangesDuringTheLookAhead(r))

    with pytest.raises(OutcomeStillUnknown):  # an attempt lost with the old server may still land: not now
        executor.handle(Plan.from_fields(fields), Entry(keys.Stream.APPLY_PLAN, entry_id, fields, 1))

    assert orders_for(sim, "failover-1") == [] and results_of(r, "failover-1") == []
