"""The running totals of in-flight opens: always equal to the records, rebuilt when missing or garbled."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis
from governor_support import NOW_MS, SHOWN_MS, Clock, plan, result_marker, snapshot

from microservices.governor.governor import Governor
from microservices.governor.lua import from_units, to_units
from microservices.governor.settings import Limits
from microservices.governor.state import InFlight
from microservices.governor.store import GovernorStore
from shared import keys
from shared import snapshot as exchange_snapshot
from shared.schema import Reason

MARKS = {"BTCUSDT": "80000", "ETHUSDT": "1000", "SOLUSDT": "150.37"}
ROOMY = Limits(max_notional_per_trade=Decimal(100_000), max_total_notional=Decimal(1_000_000),
               max_open_positions=100, max_exec_per_5min=10_000, max_exec_per_hour=10_000, symbol_cooldown_ms=0)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def governor(r: redis.Redis, clock: Clock) -> Governor:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    return Governor(r, ROOMY, clock=clock)


def totals(r: redis.Redis) -> dict[str, str]:
    return r.hgetall(keys.GOVERNOR_INFLIGHT_TOTALS)


def from_records(r: redis.Redis) -> dict[str, str]:
    """What the totals must be, computed in Python from the records."""
    records = [json.loads(raw) for raw in r.hgetall(keys.GOVERNOR_INFLIGHT).values()]
    expected = {"v": "1"}
    units = sum(int(record["units"]) for record in records)
    if units:
        expected["units"] = str(units)
    for record in records:
        name = f"n:{record['symbol']}"
        expected[name] = str(int(expected.get(name, "0")) + 1)
    return expected


def test_units_round_up_so_the_totals_never_undercount() -> None:
    assert to_units(Decimal("0.000000001")) == 1
    assert to_units(Decimal("150.37") * Decimal("0.07")) == 1_052_590_000
    assert from_units(to_units(Decimal("1234.5678"))) == Decimal("1234.5678")


def test_totals_follow_allows_replays_prunes_and_expiry(r: redis.Redis, governor: Governor, clock: Clock) -> None:
    for i, (symbol, qty) in enumerate([("BTCUSDT", "0.001"), ("ETHUSDT", "0.6"), ("SOLUSDT", "0.07"), ("ETHUSDT", "1")]):
        assert governor.handle(plan(f"p{i}", symbol, qty=qty)).allow
        assert totals(r) == from_records(r)
    governor.handle(plan("p1", "ETHUSDT", qty="0.6"))  # a replay counts once
    assert totals(r) == from_records(r) and totals(r)["n:ETHUSDT"] == "2"

    r.set(keys.plan_result_marker("p0"), result_marker(NOW_MS + 10))
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.001"}, MARKS, fetched_at_ms=NOW_MS + 10 + SHOWN_MS))
    assert governor.store.prune_settled() == ["p0"]
    assert totals(r) == from_records(r) and "n:BTCUSDT" not in totals(r)

    clock.advance(120)
    exchange_snapshot.publish(r, snapshot(marks=MARKS, fetched_at_ms=NOW_MS + 120_000))
    governor.handle(plan("late", "BTCUSDT"))
    assert r.hkeys(keys.GOVERNOR_INFLIGHT) == ["late"] and totals(r) == from_records(r)


def test_a_decision_reads_the_totals_not_the_records(r: redis.Redis, governor: Governor) -> None:
    for i in range(300):
        governor.handle(plan(f"p{i}", "ETHUSDT", qty="0.01"))
    looked: list[bool] = []
    governor.store.read_inflight = lambda: looked.append(True)  # type: ignore[method-assign]

    verdict = governor.handle(plan("one-more", "SOLUSDT", qty="1"))

    assert verdict.allow and not looked
    assert verdict.context["total_notional_after"] == str(Decimal("3000") + Decimal("150.37"))


@pytest.mark.parametrize("damage", [
    lambda r: r.delete(keys.GOVERNOR_INFLIGHT_TOTALS),
    lambda r: r.hset(keys.GOVERNOR_INFLIGHT_TOTALS, "units", "lots"),
    lambda r: r.hset(keys.GOVERNOR_INFLIGHT_TOTALS, "v", "0"),
], ids=["deleted", "garbled value", "older version"])
def test_missing_or_garbled_totals_are_rebuilt_from_the_records(r: redis.Redis, governor: Governor, damage) -> None:
    governor.handle(plan("a", "ETHUSDT", qty="1"))
    governor.handle(plan("b", "SOLUSDT", qty="1"))
    damage(r)

    verdict = governor.handle(plan("c", "BTCUSDT"))

    assert verdict.context["total_notional_after"] == "1230.37"
    assert totals(r) == from_records(r)


def test_records_written_before_the_totals_existed_are_migrated_at_start(r: redis.Redis, clock: Clock) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    r.hset(keys.GOVERNOR_INFLIGHT, "old", json.dumps({"symbol": "ETHUSDT", "notional": "900", "allowed_at_ms": NOW_MS}))
    governor = Governor(r, Limits(max_notional_per_trade=Decimal(1500), symbol_cooldown_ms=0), clock=clock)

    assert governor.store.migrate_records() == 1 and governor.store.migrate_records() == 0
    verdict = governor.handle(plan("a", "ETHUSDT", qty="1.2"))

    assert verdict.reason == Reason.TOTAL_NOTIONAL_EXCEEDED and verdict.context["total_notional"] == "900"
    assert r.get(keys.GOVERNOR_LOCK) is None and totals(r) == from_records(r)


def test_records_that_do_not_parse_are_dropped_as_unreadable(r: redis.Redis, governor: Governor) -> None:
    r.hset(keys.GOVERNOR_INFLIGHT, "garbled", "{not json")

    verdict = governor.handle(plan("a", "ETHUSDT", qty="1"))

    assert verdict.allow and r.hkeys(keys.GOVERNOR_INFLIGHT) == ["a"] and totals(r) == from_records(r)


def test_the_exact_look_still_lifts_a_denial_the_totals_caused(r: redis.Redis, clock: Clock) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_notional_per_trade=Decimal(1500), symbol_cooldown_ms=0), clock=clock)
    governor.handle(plan("a", "ETHUSDT", qty="1.5"))
    r.set(keys.plan_result_marker("a"), result_marker(NOW_MS + 1))
    exchange_snapshot.publish(r, snapshot({"ETHUSDT": "1.5"}, MARKS, fetched_at_ms=NOW_MS + 1 + SHOWN_MS))
    clock.advance(SHOWN_MS / 1000)

    verdict = governor.handle(plan("b", "ETHUSDT", qty="0.5"))

    assert verdict.reason == Reason.OPEN_ALLOWED and verdict.context["total_notional_after"] == "2000"
    assert r.hkeys(keys.GOVERNOR_INFLIGHT) == ["b"] and totals(r) == from_records(r)


def test_drop_ignores_unknown_ids_and_resets_the_totals_when_nothing_is_left(r: redis.Redis) -> None:
    store = GovernorStore(r, ROOMY)
    record = InFlight("x", "ETHUSDT", Decimal("12.5"), NOW_MS).to_json()
    r.hset(keys.GOVERNOR_INFLIGHT, "x", record)
    r.hset(keys.GOVERNOR_INFLIGHT, "bad", "{")

    assert store.drop(["nope", "bad", "x"]) == 1
    assert r.hlen(keys.GOVERNOR_INFLIGHT) == 0 and totals(r) == {"v": "1"}


def test_an_open_that_ended_unexecuted_gives_back_its_place_in_the_rate_windows(r: redis.Redis, clock: Clock) -> None:
    # Found in a review: the rate windows counted every allowed open, executed or not. A symbol P3.3 holds
    # (every open refused there) used up GOV_MAX_EXEC_PER_5MIN with refusals, the next opens were denied
    # rate_limit_5min, and those denials tripped the auto-disarm: execution DISABLED fleet-wide, nothing executed.
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=2, max_exec_per_hour=10, symbol_cooldown_ms=0), clock=clock)
    for i in range(2):
        assert governor.handle(plan(f"refused-{i}", "BTCUSDT")).allow
        # ended: P3.3 refused it, nothing sent
        r.set(keys.plan_result_marker(f"refused-{i}"), result_marker(NOW_MS + 10, "reconcile_required_qty_mismatch"))
    r.set(keys.cooldown_last_exec("ETHUSDT"), str(NOW_MS + 5))  # an execution elsewhere does not count here
    exchange_snapshot.publish(r, snapshot(marks=MARKS, fetched_at_ms=NOW_MS + 10 + SHOWN_MS))
    clock.advance(SHOWN_MS / 1000)

    assert sorted(governor.store.prune_settled()) == ["refused-0", "refused-1"]

    assert governor.handle(plan("third", "BTCUSDT")).reason is Reason.OPEN_ALLOWED


def test_an_open_that_executed_keeps_its_place_in_the_rate_windows(r: redis.Redis, clock: Clock) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=1, max_exec_per_hour=10, symbol_cooldown_ms=0), clock=clock)
    assert governor.handle(plan("filled", "BTCUSDT")).allow
    r.set(keys.plan_result_marker("filled"), result_marker(NOW_MS + 10))
    r.set(keys.cooldown_last_exec("BTCUSDT"), str(NOW_MS + 10))  # FINISH sets it with every fill
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.001"}, MARKS, fetched_at_ms=NOW_MS + 10 + SHOWN_MS))
    clock.advance(SHOWN_MS / 1000)

    assert governor.store.prune_settled() == ["filled"]

    assert governor.handle(plan("second", "BTCUSDT")).reason is Reason.RATE_LIMIT_5MIN


def test_an_open_ended_as_orphaned_keeps_its_place_in_the_rate_windows(r: redis.Redis, clock: Clock) -> None:
    """From a review: reconcile ends a plan whose entry was deleted while its order's outcome was unknown
    (shared.sending.release_orphans) with a result marker but no last-execution time, though its order may have
    filled: it read as "ended unexecuted" and gave back its place."""
    from shared import sending

    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=1, max_exec_per_hour=10, symbol_cooldown_ms=0), clock=clock)
    assert governor.handle(plan("orphan", "BTCUSDT")).allow
    r.set(keys.plan_result_marker("orphan"), f"{NOW_MS + 10} {sending.ORPHAN_REASON}")
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.001"}, MARKS, fetched_at_ms=NOW_MS + 10 + SHOWN_MS))
    clock.advance(SHOWN_MS / 1000)

    assert governor.store.prune_settled() == ["orphan"]

    assert governor.handle(plan("second", "BTCUSDT")).reason is Reason.RATE_LIMIT_5MIN


@pytest.mark.parametrize("marker", [
    result_marker(NOW_MS + 10, "-"),  # given up while its order may exist: the executor never learnt its fate
    str(NOW_MS + 10),  # a marker that does not say (an earlier version's)
])
def test_an_open_whose_order_may_have_filled_keeps_its_place_in_the_rate_windows(r: redis.Redis, clock: Clock,
                                                                                 marker: str) -> None:
    """From a review: only the orphan's marker kept the place; a plan the executor gave up on (its order may have
    filled, with no last-execution time written) gave it back, and the symbol could execute once more than
    GOV_MAX_EXEC_PER_5MIN allows. Only a marker that says the plan was refused gives the place back now."""
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=1, max_exec_per_hour=10, symbol_cooldown_ms=0), clock=clock)
    assert governor.handle(plan("gave-up", "BTCUSDT")).allow
    r.set(keys.plan_result_marker("gave-up"), marker)
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.001"}, MARKS, fetched_at_ms=NOW_MS + 10 + SHOWN_MS))
    clock.advance(SHOWN_MS / 1000)

    assert governor.store.prune_settled() == ["gave-up"]

    assert governor.handle(plan("second", "BTCUSDT")).reason is Reason.RATE_LIMIT_5MIN
