"""Ledger arithmetic on fills, and a plan's result written exactly once with its effects."""

from __future__ import annotations

import threading
from decimal import Decimal as D

import pytest
import redis

from shared import keys, ledger, results
from shared.redis_conn import connect
from shared.schema import PlanResult, Side
from shared.snapshot import ExchangeSnapshot, PositionState


def position(amount: str, entry: str) -> ledger.LedgerPosition:
    return ledger.LedgerPosition("BTCUSDT", D(amount), D(entry))


def fill(side: Side, qty: str, price: str) -> ledger.Fill:
    return ledger.Fill("BTCUSDT", side, D(qty), D(price), "p1")


@pytest.mark.parametrize(
    ("before", "fill_", "amount", "entry"),
    [
        (None, fill(Side.BUY, "0.002", "88000"), "0.002", "88000"),
        (None, fill(Side.SELL, "0.002", "88000"), "-0.002", "88000"),
        (position("0.002", "88000"), fill(Side.BUY, "0.002", "90000"), "0.004", "89000"),
        (position("0.004", "89000"), fill(Side.SELL, "0.001", "95000"), "0.003", "89000"),
        (position("0.002", "88000"), fill(Side.SELL, "0.003", "87000"), "-0.001", "87000"),
        (position("-0.002", "88000"), fill(Side.BUY, "0.001", "87000"), "-0.001", "88000"),
    ],
)
def test_a_fill_moves_the_ledger(before, fill_, amount: str, entry: str) -> None:
    after = ledger.after_fill(before, fill_, now_ms=1)

    assert (after.amount, after.entry_price) == (D(amount), D(entry))


def test_a_fill_that_flattens_leaves_no_position() -> None:
    assert ledger.after_fill(position("0.002", "88000"), fill(Side.SELL, "0.002", "1"), now_ms=1) is None


def result(plan_id: str = "p1") -> PlanResult:
    return PlanResult(plan_id=plan_id, executed=True, symbol="BTCUSDT", side=Side.BUY, qty=D("0.002"),
                      reduce_only=False, source="test", order_id="1", client_order_id="qt-p1",
                      filled_qty=D("0.002"), avg_price=D("88000"), order_status="FILLED")


def test_a_result_is_written_once_with_ledger_and_cooldown(r: redis.Redis) -> None:
    effects = results.Effects(fill=fill(Side.BUY, "0.002", "88000"), cooldown_symbol="BTCUSDT")

    first = results.finish_plan(r, result(), effects, now_ms=1000)
    second = results.finish_plan(r, result(), effects, now_ms=2000)

    assert (first, second) == (True, False)
    assert r.xlen(keys.Stream.APPLY_RESULT) == 1
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")
    assert r.get(keys.cooldown_last_exec("BTCUSDT")) == "1000"


def test_concurrent_writers_of_one_plan_produce_one_result(redis_url: str, r: redis.Redis) -> None:
    effects = results.Effects(fill=fill(Side.BUY, "0.001", "88000"))
    outcomes: list[bool] = []

    def write() -> None:
        outcomes.append(results.finish_plan(connect(redis_url), result(), effects))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == [False] * 7 + [True]
    assert ledger.read(r, "BTCUSDT").amount == D("0.001")


def test_a_snapshot_round_trips_and_sums_notional() -> None:
    snapshot = ExchangeSnapshot(
        5000, {"BTCUSDT": PositionState("BTCUSDT", D("-0.002"), D("88000")), "ETHUSDT": PositionState("ETHUSDT", D("0.1"), D("2900"))},
        {"BTCUSDT": D("90000"), "ETHUSDT": D("3000")},
    )

    copy = ExchangeSnapshot.from_json(snapshot.to_json())

    assert copy == snapshot
    assert copy.total_notional() == D("480") and copy.open_position_count == 2
    assert copy.age_s(6500) == 1.5


def test_a_ledger_that_moved_since_the_caller_read_it_is_read_again(r: redis.Redis) -> None:
    r.hset(keys.position_ledger("BTCUSDT"), mapping=position("0.002", "88000").to_hash())
    stale = r.hgetall(keys.position_ledger("BTCUSDT"))
    r.hset(keys.position_ledger("BTCUSDT"), mapping=position("0.004", "89000").to_hash())  # e.g. reconcile

    written = results.finish_plan(r, result(), results.Effects(fill=fill(Side.SELL, "0.001", "95000")),
                                  now_ms=1000, ledger_seen=stale)

    assert written and ledger.read(r, "BTCUSDT").amount == D("0.003")
    assert r.xrange(keys.Stream.APPLY_RESULT)[0][1]["ts_ms"] == "1000"


def test_a_refusal_writes_no_ledger_and_no_cooldown(r: redis.Redis) -> None:
    refused = PlanResult(plan_id="p2", executed=False, symbol="BTCUSDT", side=Side.BUY, qty=D("0.002"),
                         reduce_only=False, source="test", reason="dry_run")

    assert results.finish_plan(r, refused, now_ms=5) and not results.finish_plan(r, refused, now_ms=6)
    assert r.exists(keys.position_ledger("BTCUSDT"), keys.cooldown_last_exec("BTCUSDT")) == 0
    assert r.get(keys.plan_result_marker("p2")).startswith("5 ") and r.xlen(keys.Stream.APPLY_RESULT) == 1


def test_a_finish_sent_again_after_its_reply_was_lost_knows_its_own_write(r: redis.Redis, monkeypatch) -> None:
    """Found in a review: redis-py sends a command again when its reply is lost; the second run found the result
    marker and answered 0, so the executor logged its own fill as duplicate_result_suppressed and left it out of
    quantum_executor_results_total."""
    real = results.FINISH

    def sent_twice(client, script_keys, args=()):
        real(client, script_keys, args)
        return real(client, script_keys, args)

    monkeypatch.setattr(results, "FINISH", sent_twice)
    assert results.finish_plan(r, result("twice"), results.Effects(fill=fill(Side.BUY, "0.002", "88000")), now_ms=7)
    assert r.xlen(keys.Stream.APPLY_RESULT) == 1 and ledger.read(r, "BTCUSDT").amount == D("0.002")

    monkeypatch.setattr(results, "FINISH", real)  # another call for the same plan, even in the same ms: not its own
    assert not results.finish_plan(r, result("twice"), now_ms=7)


def test_the_callers_claims_are_released_with_the_result_and_with_a_duplicate(r: redis.Redis) -> None:
    r.set("claim:a", "me")
    assert results.finish_plan(r, result(), now_ms=1, release=["claim:a"]) and not r.exists("claim:a")
    r.set("claim:a", "me")
    assert not results.finish_plan(r, result(), now_ms=2, release=["claim:a"]) and not r.exists("claim:a")


def test_with_results_names_the_plans_that_have_their_result(r: redis.Redis) -> None:
    results.finish_plan(r, result("ended"))

    assert results.with_results(r, ["ended", "open"]) == {"ended"}
    assert results.with_results(r, []) == set()
