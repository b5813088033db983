"""The governor's handler on a real Redis: permits, each denial end to end, skips, replays, settling."""

from __future__ import annotations

import json

from decimal import Decimal

import pytest
import redis
from governor_support import NOW_MS, SHOWN_MS, Clock, close_plan, plan, positions_worth, result_marker, snapshot

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from microservices.governor.store import LockBusy
from shared import keys, permits
from shared import snapshot as exchange_snapshot
from shared.permits import PermitKind
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.schema import P32Permit, Plan, Reason

MARKS = {"BTCUSDT": "80000", "ETHUSDT": "1000"}  # 0.001 BTC is 80 USDT; 0.6 ETH is 600
ROOMY = Limits(max_notional_per_trade=Decimal(1500), max_exec_per_5min=100, max_exec_per_hour=100,
               symbol_cooldown_ms=0)  # caps alone: the cooldown would hold a second open on a symbol


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def governor(r: redis.Redis, clock: Clock) -> Governor:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    return Governor(r, Limits(), clock=clock)


def permit_of(r: redis.Redis, plan_id: str = "test_open_005") -> P32Permit | None:
    return permits.peek(r, PermitKind.P32, plan_id)


def publish(r: redis.Redis, positions: dict[str, str] | None = None, marks: dict[str, str] | None = None,
            at_ms: int = NOW_MS) -> None:
    exchange_snapshot.publish(r, snapshot(positions, {**MARKS, **(marks or {})}, fetched_at_ms=at_ms))


def test_the_seed_plan_gets_an_allow_permit_with_ttl_that_wakes_the_executor(r: redis.Redis, governor: Governor) -> None:
    governor.handle(plan())

    permit = permit_of(r)
    raw = json.loads(r.get(keys.permit_p32("test_open_005")))
    assert (permit.allow, permit.reason, permit.symbol) == (True, Reason.OPEN_ALLOWED, "BTCUSDT")
    assert raw["computed_notional"] == "80" and raw["mark_price"] == "80000" and raw["created_at"] == NOW_MS / 1000
    assert raw["context"]["max_notional_per_trade"] == "200" and raw["context"]["computed_notional"] == "80"
    assert 55 < r.ttl(keys.permit_p32("test_open_005")) <= 60
    assert r.lrange(keys.permit_ready("test_open_005"), 0, -1) == ["p32"]  # the executor's wake-up
    assert r.get(keys.GOVERNOR_LOCK) is None


def rate_opens(count: int, age_ms: int):
    def setup(r: redis.Redis) -> None:
        r.zadd(keys.governor_opens("BTCUSDT"), {f"earlier-{i}": NOW_MS - age_ms - i for i in range(count)})
    return setup


OPEN_DENIALS = [
    ("kill", lambda r: r.set(keys.KILL, "1"), Reason.KILL_SWITCH),
    ("garbage kill", lambda r: r.set(keys.KILL, "banana"), Reason.KILL_SWITCH),
    ("disabled", lambda r: r.set(keys.GOVERNOR_EXECUTION, "DISABLED"), Reason.EXECUTION_DISABLED),
    ("garbage execution", lambda r: r.set(keys.GOVERNOR_EXECUTION, "PAUSED"), Reason.EXECUTION_DISABLED),
    ("cooldown", lambda r: r.set(keys.cooldown_last_exec("BTCUSDT"), str(NOW_MS - 47_300)), Reason.SYMBOL_COOLDOWN),
    ("no snapshot", lambda r: r.delete(keys.EXCHANGE_POSITIONS), Reason.STALE_SNAPSHOT),
    ("old snapshot", lambda r: publish(r, at_ms=NOW_MS - 10_001), Reason.STALE_SNAPSHOT),
    ("corrupt snapshot", lambda r: r.set(keys.EXCHANGE_POSITIONS, "{not json"), Reason.STALE_SNAPSHOT),
    ("ten positions", lambda r: publish(r, *positions_worth(10)), Reason.MAX_OPEN_POSITIONS),
    ("no mark", lambda r: exchange_snapshot.publish(r, snapshot()), Reason.NO_MARK_PRICE),
    ("per trade", lambda r: publish(r, marks={"BTCUSDT": "200001"}), Reason.MAX_NOTIONAL_PER_TRADE),
    ("total", lambda r: publish(r, *positions_worth(1, "1921")), Reason.TOTAL_NOTIONAL_EXCEEDED),
    ("hour", rate_opens(3, 20 * 60_000), Reason.RATE_LIMIT_HOUR),
    ("five minutes", rate_opens(2, 60_000), Reason.RATE_LIMIT_5MIN),
]


@pytest.mark.parametrize("setup, expected", [c[1:] for c in OPEN_DENIALS], ids=[c[0] for c in OPEN_DENIALS])
def test_each_denial_reaches_the_permit(r: redis.Redis, governor: Governor, setup, expected: Reason) -> None:
    setup(r)

    governor.handle(plan())

    permit = permit_of(r)
    assert (permit.allow, permit.reason) == (False, expected)
    assert 0 < r.ttl(keys.permit_p32("test_open_005")) <= 60
    assert r.hlen(keys.GOVERNOR_INFLIGHT) == 0 and r.get(keys.GOVERNOR_LOCK) is None


def test_the_seeds_blocked_close_passes_cooldown_caps_and_reduce_only(r: redis.Redis, governor: Governor) -> None:
    r.set(keys.cooldown_last_exec("BTCUSDT"), str(NOW_MS - 47_300))
    r.set(keys.GOVERNOR_EXECUTION, "DISABLED")
    r.delete(keys.EXCHANGE_POSITIONS)

    governor.handle(close_plan("close_bt", action="PARTIAL_75"))

    assert (permit_of(r, "close_bt").allow, permit_of(r, "close_bt").reason) == (True, Reason.CLOSE_ALLOWED)


@pytest.mark.parametrize("kill", ["1", "true", "garbage"])
def test_the_kill_switch_denies_closes(r: redis.Redis, governor: Governor, kill: str) -> None:
    r.set(keys.KILL, kill)

    governor.handle(close_plan("close_bt"))

    assert (permit_of(r, "close_bt").allow, permit_of(r, "close_bt").reason) == (False, Reason.KILL_SWITCH)


@pytest.mark.parametrize("the_plan", [plan(decision="HOLD"), close_plan(decision="SKIP")], ids=["open", "close"])
def test_plans_not_to_execute_get_no_permit(r: redis.Redis, governor: Governor, the_plan: Plan) -> None:
    assert governor.handle(the_plan) is None
    assert permit_of(r, the_plan.plan_id) is None


@pytest.mark.parametrize("the_plan", [plan(), close_plan()], ids=["open", "close"])
def test_plans_that_already_ended_get_no_permit(r: redis.Redis, governor: Governor, the_plan: Plan) -> None:
    r.set(keys.plan_result_marker(the_plan.plan_id), str(NOW_MS))

    assert governor.handle(the_plan) is None
    assert permit_of(r, the_plan.plan_id) is None and r.get(keys.GOVERNOR_LOCK) is None


def test_the_stream_consumer_drives_the_handler_in_burst_mode(r: redis.Redis, governor: Governor) -> None:
    r.xadd(keys.Stream.APPLY_PLAN, plan().to_fields())
    r.xadd(keys.Stream.APPLY_PLAN, plan("held", decision="HOLD").to_fields())
    r.xadd(keys.Stream.APPLY_PLAN, {"plan_data": json.dumps(close_plan("close_bt").to_fields())})
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.GOVERNOR, consumer="gov-test")

    processed = StreamConsumer(r, config, Plan.from_fields, governor.handle).run(burst=True)

    assert processed == 3 and r.xpending(keys.Stream.APPLY_PLAN, keys.Group.GOVERNOR)["pending"] == 0
    assert permit_of(r).allow and permit_of(r, "close_bt").allow and permit_of(r, "held") is None


def held(count: int, each_usdt: str) -> tuple[dict[str, str], dict[str, str]]:
    positions, marks = positions_worth(count, each_usdt)
    return positions, {**MARKS, **marks}


@pytest.fixture
def roomy(r: redis.Redis, clock: Clock) -> Governor:
    """Caps loose enough that only the total notional and position caps bind."""
    return Governor(r, ROOMY, clock=clock)


def test_two_opens_that_fit_alone_but_not_together_get_one_allow(r: redis.Redis, roomy: Governor) -> None:
    governor = roomy
    publish(r, *held(1, "900"))

    first, second = governor.handle(plan("a", "ETHUSDT", qty="0.6")), governor.handle(plan("b", "ETHUSDT", qty="0.6"))

    assert (first.reason, second.reason) == (Reason.OPEN_ALLOWED, Reason.TOTAL_NOTIONAL_EXCEEDED)
    assert second.context["total_notional"] == "1500"


def test_a_replayed_plan_is_counted_once(r: redis.Redis, clock: Clock) -> None:
    publish(r, *held(1, "1100"))
    governor = Governor(r, Limits(max_exec_per_5min=1, max_notional_per_trade=Decimal(1500)), clock=clock)

    first = governor.handle(plan("a", "ETHUSDT", qty="0.6"))
    clock.advance(1)
    replay = governor.handle(plan("a", "ETHUSDT", qty="0.6"))

    assert (first.reason, replay.reason) == (Reason.OPEN_ALLOWED, Reason.OPEN_ALLOWED)
    assert r.hlen(keys.GOVERNOR_INFLIGHT) == 1
    assert r.zrange(keys.governor_opens("ETHUSDT"), 0, -1, withscores=True) == [("a", NOW_MS)]


def test_a_late_replay_counts_its_open_as_long_as_the_permit_it_renews(r: redis.Redis, clock: Clock) -> None:
    # Found in a review: the replay's permit was written anew (TTL from now) while its in-flight record kept the
    # first allow's time, and expired while the renewed permit could still be taken.
    governor = Governor(r, Limits(max_notional_per_trade=Decimal(1500), max_total_notional=Decimal(2000),
                                  max_exec_per_5min=100, max_exec_per_hour=100, max_open_positions=100), clock=clock)
    publish(r)
    assert governor.handle(plan("a", "ETHUSDT", qty="1.2")).allow  # 1200 of 2000
    clock.advance(90)  # the governor was down past a permit's TTL; a's entry is handled again
    publish(r, at_ms=NOW_MS + 90_000)
    assert governor.handle(plan("a", "ETHUSDT", qty="1.3")).allow  # the mark moved: 1300 now

    record = json.loads(r.hget(keys.GOVERNOR_INFLIGHT, "a"))
    assert record["allowed_at_ms"] == NOW_MS + 90_000 and Decimal(record["notional"]) == Decimal(1300)
    assert r.zscore(keys.GOVERNOR_INFLIGHT_BY_TIME, "a") == NOW_MS + 90_000
    assert r.hget(keys.GOVERNOR_INFLIGHT_TOTALS, "units") == str(1300 * 10**8)  # counted once, at its new value

    clock.advance(31)  # past the first allow's expiry, within the renewed permit's
    publish(r, at_ms=NOW_MS + 121_000)
    assert permit_of(r, "a").allow
    b = governor.handle(plan("b", "BTCUSDT", qty="0.01"))  # 800 more: 2100 with a
    assert (b.allow, b.reason) == (False, Reason.TOTAL_NOTIONAL_EXCEEDED)


def test_an_in_flight_open_counts_until_a_snapshot_after_its_result_shows_it(r: redis.Redis, roomy: Governor,
                                                                            clock: Clock) -> None:
    governor = roomy
    publish(r)
    governor.handle(plan("a", "ETHUSDT", qty="1.2"))
    before = governor.handle(plan("b", "ETHUSDT", qty="0.9"))
    r.set(keys.plan_result_marker("a"), result_marker(NOW_MS + 100))
    publish(r, {"ETHUSDT": "1.2"}, at_ms=NOW_MS + 100 + SHOWN_MS)
    clock.advance(1.2)

    after = governor.handle(plan("c", "ETHUSDT", qty="0.6"))

    assert (before.reason, after.reason) == (Reason.TOTAL_NOTIONAL_EXCEEDED, Reason.OPEN_ALLOWED)
    assert after.context["total_notional_after"] == "1800"
    assert r.hkeys(keys.GOVERNOR_INFLIGHT) == ["c"]


def test_an_in_flight_open_stops_counting_after_its_hard_expiry(r: redis.Redis, roomy: Governor, clock: Clock) -> None:
    governor = roomy
    publish(r)
    governor.handle(plan("a", "ETHUSDT", qty="1.2"))
    clock.advance(120)
    publish(r, at_ms=NOW_MS + 120_000)

    later = governor.handle(plan("b", "ETHUSDT", qty="1.2"))

    assert later.reason == Reason.OPEN_ALLOWED
    assert r.hkeys(keys.GOVERNOR_INFLIGHT) == ["b"]


def _result_written(r: redis.Redis, plan_id: str, symbol: str, at_ms: int) -> None:
    """The executor's result, written as it writes it (shared.results.finish_plan: the marker says when)."""
    from decimal import Decimal

    from shared import results
    from shared.schema import PlanResult, Side

    done = PlanResult(plan_id=plan_id, executed=True, symbol=symbol, side=Side.BUY, qty=Decimal("0.001"),
                      reduce_only=False, source="test", order_id="1", client_order_id=f"qt-{plan_id}",
                      filled_qty=Decimal("0.001"), avg_price=Decimal("100"), order_status="FILLED")
    assert results.finish_plan(r, done, now_ms=at_ms)


def test_the_tick_drops_settled_in_flight_opens(r: redis.Redis, governor: Governor) -> None:
    publish(r, marks={"SOLUSDT": "100"})
    governor.handle(plan("a"))
    governor.handle(plan("b", "ETHUSDT", qty="0.01"))
    governor.handle(plan("c", "SOLUSDT", qty="0.1"))
    assert sorted(r.hkeys(keys.GOVERNOR_INFLIGHT)) == ["a", "b", "c"]
    _result_written(r, "a", "BTCUSDT", NOW_MS + 100)
    _result_written(r, "c", "SOLUSDT", NOW_MS + 300)  # too close before the snapshot: its fill may not be in it yet
    publish(r, {"BTCUSDT": "0.001"}, marks={"SOLUSDT": "100"}, at_ms=NOW_MS + 100 + SHOWN_MS)

    governor.on_tick()

    # Found when the result marker gained its writer's token: a marker read as "written at 0" settled every open at
    # once, so neither the in-flight record nor the snapshot counted it, and chaos saw the total cap exceeded.
    assert sorted(r.hkeys(keys.GOVERNOR_INFLIGHT)) == ["b", "c"]


def test_a_decision_waits_for_the_lock_another_governor_holds(r: redis.Redis, clock: Clock) -> None:
    publish(r)
    r.set(keys.GOVERNOR_LOCK, "other", px=30)

    verdict = Governor(r, Limits(), clock=clock).handle(plan())

    assert verdict.reason == Reason.OPEN_ALLOWED and r.get(keys.GOVERNOR_LOCK) is None


def test_a_lock_held_past_the_budget_leaves_the_entry_for_a_retry(r: redis.Redis, clock: Clock) -> None:
    publish(r)
    r.set(keys.GOVERNOR_LOCK, "other")
    waits: list[float] = []

    with pytest.raises(LockBusy):
        Governor(r, Limits(), clock=clock, wait=waits.append).handle(plan())

    assert sum(waits) >= 4.0 and r.get(keys.GOVERNOR_LOCK) == "other" and permit_of(r) is None


def test_corrupt_bookkeeping_is_ignored_and_dropped(r: redis.Redis, governor: Governor) -> None:
    r.hset(keys.GOVERNOR_INFLIGHT, "garbled", "not json")
    r.set(keys.cooldown_last_exec("BTCUSDT"), "soon")

    verdict = governor.handle(plan())

    assert verdict.reason == Reason.OPEN_ALLOWED
    assert r.hkeys(keys.GOVERNOR_INFLIGHT) == ["test_open_005"]
