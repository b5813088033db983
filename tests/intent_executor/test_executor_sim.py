"""The executor against a real Redis and the simulator over HTTP; the test plays P3.2 and P3.3.

Each case XADDs a plan as an operator would, writes the permits the gates would write, runs
the executor's consumer in burst mode and reads the one result and the simulator's orders.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal as D

import pytest
import redis
from structlog.testing import capture_logs

from microservices.intent_executor import executor as executor_module
from microservices.intent_executor import scripts
from microservices.intent_executor.executor import Executor
from microservices.intent_executor.settings import ExecutorSettings
from shared.modes import ApplyMode
from shared import keys, ledger, permits, results
from shared.orders import client_order_id_for
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.runtime.exchange import ExchangeAccess
from shared.schema import P32Permit, P33Permit, Plan, Reason

PLAN = {"decision": "EXECUTE", "symbol": "BTCUSDT", "type": "MARKET", "source": "test_manual"}


def run_executor(r: redis.Redis, access: ExchangeAccess, **overrides) -> None:
    values = {"apply_mode": ApplyMode.TESTNET, "executor_permit_wait_ms": 300, **overrides}
    executor = Executor(r, access, ExecutorSettings(**values), consumer_name="test-executor", wait=lambda _s: None)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="test-executor",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, Plan.from_fields, executor.handle, on_give_up=executor.give_up).run(burst=True)


# The gates bind each permit to the plan they decided (Plan.digest). Tests often write the permits before
# sending the plan: plan() then binds the permits already there, and grant() binds to the plan sent.
SENT: dict[str, str] = {}  # plan_id -> digest of the plan sent under it


def grant(r: redis.Redis, plan_id: str, safe_qty: str = "0", p32_allow: bool = True, p33_allow: bool = True,
          p32_reason: Reason = Reason.OPEN_ALLOWED) -> None:
    now, digest = time.time(), SENT.get(plan_id)
    permits.issue(r, P32Permit(plan_id=plan_id, allow=p32_allow, symbol="BTCUSDT", reason=p32_reason,
                               created_at=now, context={"max_notional_per_trade": "200"}, plan_digest=digest), 60)
    permits.issue(r, P33Permit(plan_id=plan_id, allow=p33_allow, symbol="BTCUSDT", created_at=now,
                               reason=Reason.SANITY_CHECKS_PASSED if p33_allow else Reason.NO_POSITION,
                               safe_qty=D(safe_qty), plan_digest=digest), 60)


def plan(r: redis.Redis, plan_id: str, side: str, qty: str, reduce_only: str = "false", **extra: str) -> str:
    fields = {**PLAN, "plan_id": plan_id, "side": side, "qty": qty, "reduceOnly": reduce_only, **extra}
    SENT[plan_id] = Plan.from_fields(fields).digest
    bind_permits(r, plan_id, SENT[plan_id])
    return r.xadd(keys.Stream.APPLY_PLAN, fields)


def built(plan_id: str, side: str = "BUY", qty: str = "0.002") -> Plan:
    """A plan as the executor's handler gets it (not sent): grant() binds permits to it."""
    made = Plan.from_fields({**PLAN, "plan_id": plan_id, "side": side, "qty": qty})
    SENT[plan_id] = made.digest
    return made


def bind_permits(r: redis.Redis, plan_id: str, digest: str) -> None:
    for kind in permits.PermitKind:
        raw = r.get(kind.key(plan_id))
        if raw is not None:
            r.set(kind.key(plan_id), json.dumps({**json.loads(raw), "plan_digest": digest}), keepttl=True)


def results_of(r: redis.Redis, plan_id: str) -> list[dict]:
    return [fields for _, fields in r.xrange(keys.Stream.APPLY_RESULT) if fields["plan_id"] == plan_id]


def orders_for(sim, plan_id: str) -> list[dict]:
    return [o for o in sim.orders() if o["clientOrderId"] == client_order_id_for(plan_id)]


def the_result(r: redis.Redis, plan_id: str) -> dict:
    found = results_of(r, plan_id)
    assert len(found) == 1, found
    return found[0]


def test_the_seed_open_plan_fills_after_both_permits(r, access, sim) -> None:
    grant(r, "test_open_005")
    plan(r, "test_open_005", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "test_open_005")
    assert result["executed"] == "true" and result["order_status"] == "FILLED"
    assert result["client_order_id"] == "qt-test_open_005"
    assert [o["orderId"] for o in orders_for(sim, "test_open_005")] == [int(result["order_id"])]
    assert json.loads(result["p33_permit"])["reason"] == "sanity_checks_passed"
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")
    assert r.get(keys.cooldown_last_exec("BTCUSDT")) is not None


def test_an_open_of_0_0023_btc_fills_0_002(r, access, sim) -> None:
    grant(r, "step-1")
    plan(r, "step-1", "BUY", "0.0023")

    run_executor(r, access)

    assert the_result(r, "step-1")["filled_qty"] == "0.002"


def test_an_open_below_min_notional_is_refused_before_the_exchange(r, access, sim) -> None:
    grant(r, "small-1")
    plan(r, "small-1", "BUY", "0.001")

    run_executor(r, access)

    result = the_result(r, "small-1")
    assert (result["executed"], result["reason"]) == ("false", "min_notional_check_failed")
    assert orders_for(sim, "small-1") == []


def test_upsizing_happens_only_when_allowed(r, access, sim) -> None:
    grant(r, "small-2")
    plan(r, "small-2", "BUY", "0.001")

    run_executor(r, access, allow_upsize=True)

    assert the_result(r, "small-2")["filled_qty"] == "0.002"


def test_a_close_asking_for_more_than_the_position_closes_exactly_the_position(r, access, sim) -> None:
    grant(r, "open-1")
    plan(r, "open-1", "BUY", "0.003")
    run_executor(r, access)
    grant(r, "close-1", safe_qty="0.003")
    plan(r, "close-1", "SELL", "0.01", reduce_only="true")

    run_executor(r, access)

    assert the_result(r, "close-1")["filled_qty"] == "0.003"
    assert ledger.read(r, "BTCUSDT") is None
    positions = sim.binance_client().futures_position_information(symbol="BTCUSDT")
    assert all(D(p["positionAmt"]) == 0 for p in positions)


@pytest.mark.parametrize(
    ("grant_kwargs", "reason"),
    [
        ({"p32_allow": False, "p32_reason": Reason.KILL_SWITCH}, "kill_switch"),
        ({"p32_allow": False, "p32_reason": Reason.TOTAL_NOTIONAL_EXCEEDED}, "total_notional_exceeded"),
        ({"p33_allow": False}, "no_position"),
    ],
)
def test_a_denied_permit_ends_the_plan_with_its_reason_and_no_order(r, access, sim, grant_kwargs, reason) -> None:
    grant(r, "deny-1", **grant_kwargs)
    plan(r, "deny-1", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "deny-1")
    assert (result["executed"], result["reason"]) == ("false", reason)
    assert orders_for(sim, "deny-1") == []


def test_a_missing_permit_times_out_and_consumes_the_other(r, access, sim) -> None:
    permits.issue(r, P33Permit(plan_id="late-1", allow=True, symbol="BTCUSDT", reason=Reason.SANITY_CHECKS_PASSED,
                               created_at=time.time()), 60)
    plan(r, "late-1", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "late-1")
    assert (result["reason"], json.loads(result["detail"])["missing"]) == ("permit_timeout", "p32")
    assert permits.consume(r, permits.PermitKind.P33, "late-1") is None


def test_the_kill_switch_set_after_the_permits_still_stops_the_order(r, access, sim) -> None:
    grant(r, "kill-1")
    r.set(keys.KILL, "1")
    plan(r, "kill-1", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "kill-1")["reason"] == "kill_switch"
    assert orders_for(sim, "kill-1") == []


def test_dry_run_runs_every_gate_and_sends_nothing(r, access, sim) -> None:
    grant(r, "dry-1")
    plan(r, "dry-1", "BUY", "0.0023")

    run_executor(r, access, apply_mode=ApplyMode.DRY_RUN)

    result = the_result(r, "dry-1")
    assert (result["executed"], result["reason"], result["qty"]) == ("false", "dry_run", "0.002")
    assert orders_for(sim, "dry-1") == []


def test_a_plan_that_is_not_execute_is_recorded_and_never_executed(r, access, sim) -> None:
    plan(r, "hold-1", "BUY", "0.002", decision="HOLD")

    run_executor(r, access)

    assert the_result(r, "hold-1")["reason"] == "decision_not_execute"


def test_a_plan_delivered_twice_gives_one_order_and_one_result(r, access, sim) -> None:
    grant(r, "twice-1")
    plan(r, "twice-1", "BUY", "0.002")
    plan(r, "twice-1", "BUY", "0.002")

    run_executor(r, access)
    run_executor(r, access)

    assert len(results_of(r, "twice-1")) == 1
    assert len(orders_for(sim, "twice-1")) == 1
    # Found in a review: the second entry under the plan_id vanished with a log line; an operator who retyped a
    # plan_id had no answer. It is dead-lettered (a redelivery of the same entry is still skipped quietly).
    (_, dead), = r.xrange(keys.Stream.DEAD_LETTER)
    assert (dead["reason"], dead["group"]) == ("duplicate_plan", "intent-executor")


def test_an_executor_that_died_after_sending_finds_its_order_instead_of_sending_again(r, access, sim) -> None:
    grant(r, "crash-1")
    plan(r, "crash-1", "BUY", "0.002")
    r.set(keys.plan_order_marker("crash-1"), client_order_id_for("crash-1"))
    sent = access.client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, client_order_id_for("crash-1"))

    run_executor(r, access)

    result = the_result(r, "crash-1")
    assert (result["executed"], result["order_id"]) == ("true", str(sent.order_id))
    assert len(orders_for(sim, "crash-1")) == 1
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")


@pytest.mark.parametrize(
    ("fault", "executed", "orders"),
    [("unknown_after_execute", "true", 1), ("unavailable_no_execute", "false", 0)],
)
def test_a_503_on_submit_is_resolved_by_client_order_id_never_by_resending(r, access, sim, fault, executed, orders) -> None:
    grant(r, "fault-1")
    plan(r, "fault-1", "BUY", "0.002")
    sim.set_faults(**{fault: 1.0})

    try:
        run_executor(r, access)
    finally:
        sim.set_faults()

    result = the_result(r, "fault-1")
    assert result["executed"] == executed
    assert len(orders_for(sim, "fault-1")) == orders
    if executed == "true":
        assert result["order_id"] == str(orders_for(sim, "fault-1")[0]["orderId"])


@pytest.mark.parametrize("value", ["1", "true", "garbage"])
def test_the_fleet_wide_dry_run_switch_stops_sending_at_once(r, access, sim, value) -> None:
    grant(r, "forced-1")
    r.set(keys.FORCE_DRY_RUN, value)
    plan(r, "forced-1", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "forced-1")["reason"] == "dry_run"
    assert orders_for(sim, "forced-1") == []


def test_the_dry_run_switch_set_to_0_lets_orders_through(r, access, sim) -> None:
    grant(r, "unforced-1")
    r.set(keys.FORCE_DRY_RUN, "0")
    plan(r, "unforced-1", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "unforced-1")["executed"] == "true"


def test_a_plan_the_runtime_gives_up_on_still_ends_in_one_result(r, access, sim) -> None:
    grant(r, "stuck-1")
    plan(r, "stuck-1", "BUY", "0.002")
    r.set(keys.plan_order_marker("stuck-1"), client_order_id_for("stuck-1"))
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="test-executor",
                        wait=lambda _s: None)
    executor.resolver.look_up = lambda *_a: (_ for _ in ()).throw(RuntimeError("exchange unreachable"))
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="test-executor",
                            block_ms=50, claim_idle_ms=20, max_deliveries=2)
    consumer = StreamConsumer(r, config, Plan.from_fields, executor.handle, on_give_up=executor.give_up)

    for _ in range(4):
        consumer.run(burst=True)
        time.sleep(0.03)

    result = the_result(r, "stuck-1")
    assert (result["executed"], result["reason"]) == ("false", "gave_up_after_retries")
    assert json.loads(result["detail"])["order_may_exist"] == "true"
    # Its marker says what the governor and harvest must assume: it may have filled (not a refusal).
    assert results.marker_outcome(r.get(keys.plan_result_marker("stuck-1"))) == results.UNKNOWN
    assert r.xlen(keys.Stream.DEAD_LETTER) == 1
    # the marker (of an earlier version) carries no permits: their keys, still there, give the context
    assert json.loads(result["p32_permit"])["allow"] is True and json.loads(result["p33_permit"])["allow"] is True


@pytest.mark.parametrize(("p32_allow", "p33_allow", "marked"), [(True, True, True), (False, True, False),
                                                                 (True, False, False)])
def test_the_order_marker_is_written_with_the_permits_only_when_both_allow(r, access, sim, p32_allow, p33_allow,
                                                                           marked) -> None:
    grant(r, "mark-1", p32_allow=p32_allow, p33_allow=p33_allow)
    plan(r, "mark-1", "BUY", "0.002")

    run_executor(r, access)

    marker = r.get(keys.plan_order_marker("mark-1"))  # the client order id, then the attempt that wrote it
    assert (marker is not None and marker.split(" ")[0] == client_order_id_for("mark-1")) is marked
    assert the_result(r, "mark-1")["executed"] == str(marked).lower()


def test_permits_already_taken_are_not_taken_again_and_nothing_is_marked(r, access, sim) -> None:
    grant(r, "taken-1")
    assert all(permits.consume_all(r, "taken-1", [permits.PermitKind.P32, permits.PermitKind.P33]))
    plan(r, "taken-1", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "taken-1")["reason"] == "permit_timeout" and not orders_for(sim, "taken-1")
    assert r.get(keys.plan_order_marker("taken-1")) is None


def test_permits_already_there_are_taken_by_the_look_ahead_in_the_same_call(r, access, sim) -> None:
    grant(r, "warm-1")
    plan(r, "warm-1", "BUY", "0.002")
    run_executor(r, access)  # the scripts are loaded now: every call below is one EVALSHA
    grant(r, "ready-1")
    plan(r, "ready-1", "BUY", "0.002")
    r.config_resetstat()

    run_executor(r, access)

    assert the_result(r, "ready-1")["executed"] == "true"
    stats = r.info("commandstats")
    claims = stats.get("cmdstat_xautoclaim", {"calls": 0})["calls"]  # the consumer's claim of idle entries: a script
    assert stats["cmdstat_evalsha"]["calls"] - claims == 2  # look-ahead with the taking, then the result
    assert "cmdstat_blpop" not in stats


def test_a_permit_whose_allow_is_not_a_json_true_is_never_sent_without_its_marker(r, access, sim) -> None:
    grant(r, "str-1")
    key = keys.permit_p32("str-1")
    r.set(key, r.get(key).replace('"allow":true', '"allow":"true"'), ex=60)  # the model reads it as allow
    plan(r, "str-1", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "str-1")["reason"] == "permit_denied" and not orders_for(sim, "str-1")
    assert r.get(keys.plan_order_marker("str-1")) is None


def _issue_later(r: redis.Redis, plan_id: str, delay_s: float) -> threading.Timer:
    timer = threading.Timer(delay_s, grant, args=(r, plan_id))
    timer.start()
    return timer


def test_permits_issued_while_waiting_are_taken_when_the_pair_is_complete(r, access, sim) -> None:
    plan(r, "wait-1", "BUY", "0.002")

    timer = _issue_later(r, "wait-1", 0.1)
    run_executor(r, access, executor_permit_wait_ms=5000)
    timer.join()

    assert the_result(r, "wait-1")["order_status"] == "FILLED"
    assert len(orders_for(sim, "wait-1")) == 1


def test_a_permit_whose_notification_was_already_popped_is_still_taken(r, access, sim) -> None:
    # As after a restart mid-wait: P3.3's permit is there but its wake-up was consumed; P3.2's comes later.
    permits.issue(r, P33Permit(plan_id="popped-1", allow=True, symbol="BTCUSDT", reason=Reason.SANITY_CHECKS_PASSED,
                               created_at=time.time()), 60)
    r.delete(keys.permit_ready("popped-1"))
    plan(r, "popped-1", "BUY", "0.002")
    timer = threading.Timer(0.1, lambda: permits.issue(r, P32Permit(
        plan_id="popped-1", allow=True, symbol="BTCUSDT", reason=Reason.OPEN_ALLOWED, created_at=time.time(),
        context={"max_notional_per_trade": "200"}, plan_digest=SENT["popped-1"]), 60))
    timer.start()

    run_executor(r, access, executor_permit_wait_ms=5000)
    timer.join()

    assert the_result(r, "popped-1")["order_status"] == "FILLED"


def test_one_permit_alone_is_not_taken_by_a_wake_up(r) -> None:
    permits.issue(r, P33Permit(plan_id="half-1", allow=True, symbol="BTCUSDT", reason=Reason.SANITY_CHECKS_PASSED,
                               created_at=time.time()), 60)
    half = built("half-1")
    r.set(keys.plan_claim("half-1"), "test-executor")
    script_keys, script_args = scripts.claimed_take(half, permits.new_attempt("test"), "test-executor")
    r.script_flush()  # and a Redis that lost its scripts

    popped, reply = scripts.TAKE_WHEN_BOTH.after_blpop(r, keys.permit_ready("half-1"), 1, script_keys,
                                                                script_args)

    assert tuple(popped) == (keys.permit_ready("half-1"), "p33") and reply == []
    assert permits.consume(r, permits.PermitKind.P33, "half-1") is not None  # still there, untaken


class _SentTwice:
    """A script whose call reaches Redis twice, as when redis-py sends it again after the reply was lost."""

    def __init__(self, script):
        self.script = script

    def __call__(self, client, script_keys, args=()):
        self.script(client, script_keys, args)
        return self.script(client, script_keys, args)

    def after_blpop(self, client, list_key, timeout_s, script_keys, args=()):
        popped, _lost = self.script.after_blpop(client, list_key, timeout_s, script_keys, args)
        return popped, self.script(client, script_keys, args)


@pytest.mark.parametrize("script", ["LOOK_AHEAD", "TAKE_WHEN_BOTH"])
def test_a_take_sent_again_after_a_lost_reply_still_sends_the_one_order(r, access, sim, monkeypatch, script) -> None:
    monkeypatch.setattr(scripts, script, _SentTwice(getattr(scripts, script)))
    plan(r, "resent-1", "BUY", "0.002")
    if script == "LOOK_AHEAD":
        grant(r, "resent-1")  # both present at the look-ahead: it takes them
        run_executor(r, access)
    else:
        timer = _issue_later(r, "resent-1", 0.1)  # taken by the script that follows the wake-up
        run_executor(r, access, executor_permit_wait_ms=5000)
        timer.join()

    assert the_result(r, "resent-1")["order_status"] == "FILLED"
    assert len(orders_for(sim, "resent-1")) == 1


def test_permits_taken_by_one_attempt_are_lost_to_any_other(r) -> None:
    other = built("other-1")
    grant(r, "other-1")
    r.set(keys.plan_claim("other-1"), "a")
    first = scripts.TAKE(r, *scripts.claimed_take(other, permits.new_attempt("a"), "a"))
    second = scripts.TAKE(r, *scripts.claimed_take(other, permits.new_attempt("a"), "a"))

    assert (first[0], first[2], first[-1]) == (1, 1, 1)
    assert (second[0], second[2], second[-1]) == (0, 0, 0)


def test_the_idle_dry_run_gauge_follows_the_switch_about_once_a_second(r, access) -> None:
    from microservices.intent_executor import outcomes

    now = [100.0]
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="test-executor",
                        monotonic=lambda: now[0])
    executor.on_tick()
    assert outcomes.DRY_RUN._value.get() == 0

    r.set(keys.FORCE_DRY_RUN, "1")
    executor.on_tick()  # ticks come after every batch: the switch is read at most once a second
    assert outcomes.DRY_RUN._value.get() == 0
    now[0] += executor_module.DRY_RUN_GAUGE_EVERY_S
    executor.on_tick()
    assert outcomes.DRY_RUN._value.get() == 1

    r.delete(keys.FORCE_DRY_RUN)
    r.hset(keys.FORCE_DRY_RUN, "on", "1")  # another type: unreadable, so forced (before, the tick failed WRONGTYPE)
    now[0] += executor_module.DRY_RUN_GAUGE_EVERY_S
    executor.on_tick()
    assert outcomes.DRY_RUN._value.get() == 1
    r.delete(keys.FORCE_DRY_RUN)


def test_a_take_reaching_redis_after_the_claim_passed_on_takes_nothing(r, access, sim) -> None:
    # A's call arrives late (a client retry, a long wait): B holds the claim now. A must neither take
    # the permits nor write a result, nor let go of B's claim.
    late = built("late-claim-1")
    grant(r, "late-claim-1")
    r.set(keys.plan_claim("late-claim-1"), "executor-b")
    reply = scripts.TAKE(r, *scripts.claimed_take(late, permits.new_attempt("a"), "executor-a"))
    assert reply == scripts.CLAIM_LOST
    assert permits.consume_all(r, "late-claim-1", [permits.PermitKind.P32, permits.PermitKind.P33]) != [None, None]

    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="executor-a")
    ahead = executor_module.LookAhead(None, "executor-a", None, "executor-a/x", 0.0)
    with pytest.raises(executor_module.PlanBusy):
        executor._wait_and_take(late, ahead.attempt)
    executor._release(late, ahead)
    assert r.get(keys.plan_claim("late-claim-1")) == "executor-b"
    assert results_of(r, "late-claim-1") == [] and orders_for(sim, "late-claim-1") == []


def test_the_look_ahead_renews_a_claim_this_executor_already_held(r, access, sim) -> None:
    # Delivered again after a restart: the claim is still ours from before, with little time left on it.
    r.set(keys.plan_claim("renew-1"), "test-executor", ex=2)
    plan(r, "renew-1", "BUY", "0.002")
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="test-executor")

    executor._look_ahead(Plan.from_fields({**PLAN, "plan_id": "renew-1", "side": "BUY", "qty": "0.002"}))

    assert r.ttl(keys.plan_claim("renew-1")) > scripts.CLAIM_TTL_S - 5


@pytest.mark.parametrize("spoil", [
    pytest.param(lambda r, key: r.set(key, "0.062"), id="a string, not a hash"),
    pytest.param(lambda r, key: r.hset(key, mapping={"position_amt": "0,062", "entry_price": "88000"}), id="a comma"),
])
def test_a_fill_on_a_spoiled_ledger_is_still_its_result_and_the_ledger_is_left_to_reconcile(r, access, sim, spoil) -> None:
    # Found in a review: HGETALL of a non-hash failed the taking script after it had taken the permits and written
    # the order marker; an unparsable ledger made the filled order's result fail until it was given up as
    # executed=false. The exchange holds the fill: the result says so, the ledger waits for reconcile.
    spoil(r, keys.position_ledger("BTCUSDT"))
    grant(r, "spoiled-1")
    plan(r, "spoiled-1", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "spoiled-1")
    assert (result["executed"], result["order_status"]) == ("true", "FILLED")
    assert len(orders_for(sim, "spoiled-1")) == 1
    assert ledger.read_entry(r, "BTCUSDT").unreadable  # untouched: reconcile adopts the exchange's amount
    assert not r.exists(keys.executor_sending("BTCUSDT"), keys.plan_claim("spoiled-1"))
    assert r.get(keys.cooldown_last_exec("BTCUSDT")) is not None  # so reconcile heals only from a later view


def test_a_fill_on_a_ledger_holding_bytes_that_are_not_utf8_is_still_its_result(r, access, sim, redis_url) -> None:
    """Found in review: the client reads such a ledger with the bytes replaced, so FINISH's compare against what was
    read failed on every try; the filled order got no result, and past its deliveries it ended executed=false."""
    key = keys.position_ledger("BTCUSDT")
    r.hset(key, mapping={"position_amt": "0.002", "entry_price": "88000", "note": b"\xff by hand"})
    raw = redis.Redis.from_url(redis_url)  # bytes as stored
    stored = raw.hgetall(key)
    grant(r, "undecodable-1")
    plan(r, "undecodable-1", "BUY", "0.002")

    with capture_logs() as logs:
        run_executor(r, access)

    result = the_result(r, "undecodable-1")
    assert (result["executed"], result["order_status"]) == ("true", "FILLED")
    assert len(orders_for(sim, "undecodable-1")) == 1
    assert raw.hgetall(key) == stored  # untouched: reconcile adopts the exchange's amount
    assert [line["event"] for line in logs if line["event"] == "ledger_unreadable_fill_not_recorded"] == [
        "ledger_unreadable_fill_not_recorded"]
    assert not r.exists(keys.executor_sending("BTCUSDT"), keys.plan_claim("undecodable-1"))


def test_a_kill_switch_of_another_type_halts_the_send_without_failing_the_taking(r, access, sim) -> None:
    # An operator's HSET on quantum:kill failed the taking script after it had taken the permits and written the
    # order marker. Read as an unreadable value, it halts, as any unreadable kill switch does.
    r.hset(keys.KILL, "on", "1")
    grant(r, "kill-hash-1")
    plan(r, "kill-hash-1", "BUY", "0.002")

    run_executor(r, access)

    assert (the_result(r, "kill-hash-1")["reason"], orders_for(sim, "kill-hash-1")) == ("kill_switch", [])


def test_a_plan_with_a_field_given_twice_is_dead_lettered_without_a_result_and_its_resend_executes(r, access,
                                                                                                   sim) -> None:
    """Found in review: the executor's give-up read the entry's last values as a plan and wrote it a
    gave_up_after_retries result: the plan was never tried, and the corrected resend under the same plan_id was
    refused as duplicate_plan."""
    grant(r, "twice-1")
    fields = {**PLAN, "plan_id": "twice-1", "side": "BUY", "qty": "0.002"}
    flat = [item for pair in fields.items() for item in pair]
    r.execute_command("XADD", keys.Stream.APPLY_PLAN, "*", *flat, "qty", "0.004")

    run_executor(r, access)

    assert results_of(r, "twice-1") == []
    [(_id, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "duplicate_field"
    plan(r, "twice-1", "BUY", "0.002")  # sent again, corrected
    run_executor(r, access)
    assert the_result(r, "twice-1")["executed"] == "true"


def test_a_retype_found_ended_on_a_later_delivery_is_dead_lettered_and_a_redelivery_is_not(r, access, sim) -> None:
    """Found in review: only a first delivery that found its plan_id ended was dead-lettered duplicate_plan; a retype
    whose first delivery failed (another executor held the claim) was skipped on its next with a log line only. The
    result marker now names the plan it ended (its digest): other content is a duplicate whatever the delivery."""
    from shared.runtime.consumer import Entry, Rejected

    grant(r, "ended-1")
    plan(r, "ended-1", "BUY", "0.002")
    run_executor(r, access)
    assert the_result(r, "ended-1")["executed"] == "true"
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="test-executor")
    same = {**PLAN, "plan_id": "ended-1", "side": "BUY", "qty": "0.002"}
    retyped = {**same, "side": "SELL"}

    executor.handle(Plan.from_fields(same), Entry(keys.Stream.APPLY_PLAN, "1-1", same, 2))  # a redelivery: skipped
    with pytest.raises(Rejected) as refused:
        executor.handle(Plan.from_fields(retyped), Entry(keys.Stream.APPLY_PLAN, "1-2", retyped, 2))

    assert refused.value.reason == "duplicate_plan"
    assert len(orders_for(sim, "ended-1")) == 1


@pytest.mark.parametrize("spoil", [
    pytest.param(lambda r, key: r.hset(key, "by", "hand"), id="a hash"),
    pytest.param(lambda r, key: r.set(key, ""), id="empty"),
])
def test_a_result_marker_spoiled_by_hand_still_says_the_plan_ended(r, access, sim, spoil) -> None:
    """Found in review: read with a plain GET, a marker of another type failed every delivery until the entry was
    dead-lettered max_deliveries_exceeded; an empty one read as no result. Either way the plan ended: its entry is a
    duplicate, nothing is sent."""
    spoil(r, keys.plan_result_marker("spoiled-marker-1"))
    grant(r, "spoiled-marker-1")
    plan(r, "spoiled-marker-1", "BUY", "0.002")

    run_executor(r, access)

    [(_id, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "duplicate_plan" and orders_for(sim, "spoiled-marker-1") == []


def test_giving_up_a_plan_older_than_the_redis_in_use_says_its_order_may_exist(r, access, sim) -> None:
    """Found in review: a failover may lose the order marker while the plan's entry survives; giving up found no
    marker and said refused, so the governor gave its rate place back and harvest could propose its rung again."""
    from shared.runtime.consumer import Entry

    class AfterAFailover:
        since_ms = None

        def predates(self, _entry_id: str) -> bool:
            return True

    grant(r, "old-1")
    entry_id = plan(r, "old-1", "BUY", "0.002")
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="test-executor",
                        incarnation=AfterAFailover())

    executor.give_up(Entry(keys.Stream.APPLY_PLAN, entry_id, {**PLAN, "plan_id": "old-1", "side": "BUY", "qty": "0.002"},
                           6), "max_deliveries_exceeded")

    assert json.loads(the_result(r, "old-1")["detail"])["order_may_exist"] == "true"
    assert results.marker_outcome(r.get(keys.plan_result_marker("old-1"))) == results.UNKNOWN
