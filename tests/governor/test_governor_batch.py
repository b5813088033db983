"""A batch of opens decided in rounds (one read, one commit) decides exactly as one plan at a time would."""

from __future__ import annotations

import json
from decimal import Decimal

import redis
from governor_support import NOW_MS, SHOWN_MS, Clock, close_plan, plan, result_marker, snapshot

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from shared import keys
from shared import snapshot as exchange_snapshot
from shared.runtime.consumer import Entry

MARKS = {"BTCUSDT": "80000", "ETHUSDT": "1000", "SOLUSDT": "100", "XRPUSDT": "1"}
LIMITS = Limits(max_notional_per_trade=Decimal(1500), max_total_notional=Decimal(3000), max_open_positions=4,
                max_exec_per_5min=2, max_exec_per_hour=3, auto_disarm_trips=2, symbol_cooldown_ms=0)


def sequence():
    """Allows, the caps, a replay in the same batch, closes, a HOLD, an exact look that drops a settled
    open (o2), and rate-limit trips that disarm the governor part way through."""
    return [
        plan("o1", "ETHUSDT", qty="0.6"),
        plan("o2", "BTCUSDT", qty="0.001"),
        plan("o1", "ETHUSDT", qty="0.6"),  # replayed within the batch: counted once
        plan("big", "ETHUSDT", qty="1.6"),  # over the per-trade cap
        close_plan("c1", "BTCUSDT"),
        plan("hold", "SOLUSDT", decision="HOLD"),
        plan("nomark", "DOGEUSDT", qty="10"),
        plan("o3", "SOLUSDT", qty="5"),
        plan("o4", "ETHUSDT", qty="0.9"),  # over the total, even after the exact look
        plan("o5", "ETHUSDT", qty="0.1"),  # the second ETH open in 5 minutes
        plan("o6", "ETHUSDT", qty="0.1"),  # rate limit: trip 1
        plan("o7", "SOLUSDT", qty="1"),
        plan("o8", "ETHUSDT", qty="0.1"),  # rate limit: trip 2 -> auto-disarm
        plan("o9", "SOLUSDT", qty="1"),  # denied: execution disabled
        close_plan("c2", "ETHUSDT"),
    ]


def prepare(r: redis.Redis, clock: Clock) -> Governor:
    """An open allowed earlier whose fill the snapshot already shows: it counts in the totals until pruned."""
    r.flushdb()
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, LIMITS, clock=clock)
    assert governor.handle(plan("settled", "BTCUSDT", qty="0.015")).allow  # 1200 USDT
    r.set(keys.plan_result_marker("settled"), result_marker(NOW_MS + 1))
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.015"}, MARKS, fetched_at_ms=NOW_MS + 1 + SHOWN_MS))
    clock.advance(0.01)
    return governor


def state(r: redis.Redis) -> dict:
    permits_ = {key: json.loads(r.get(key)) for key in sorted(r.keys("quantum:permit:p32:*"))}
    zsets = {key: r.zrange(key, 0, -1, withscores=True) for key in sorted(r.keys("quantum:governor:opens:*"))}
    return {
        "permits": permits_, "opens": zsets, "inflight": r.hgetall(keys.GOVERNOR_INFLIGHT),
        "totals": r.hgetall(keys.GOVERNOR_INFLIGHT_TOTALS),
        "trips": r.zrange(keys.GOVERNOR_RATE_TRIPS, 0, -1, withscores=True),
        "execution": r.get(keys.GOVERNOR_EXECUTION), "disarmed": r.get(keys.GOVERNOR_DISARMED) is not None,
    }


def test_a_batch_decides_exactly_as_one_plan_at_a_time(r: redis.Redis) -> None:
    governor = prepare(r, Clock())
    one_at_a_time = [governor.handle(p) for p in sequence()]
    expected = state(r)

    governor = prepare(r, Clock())
    entries = [(p, Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i, p in enumerate(sequence())]
    failures = governor.handle_batch(entries)

    assert failures == [None] * len(entries)
    assert state(r) == expected
    reasons = [v.reason.value for v in one_at_a_time if v is not None]
    assert reasons == ["open_allowed", "open_allowed", "open_allowed", "max_notional_per_trade", "close_allowed",
                       "no_mark_price", "open_allowed", "total_notional_exceeded", "open_allowed", "rate_limit_5min",
                       "open_allowed", "rate_limit_5min", "execution_disabled", "close_allowed"]
    assert expected["execution"] == "DISABLED" and expected["disarmed"]
    assert "settled" not in expected["inflight"] and len(expected["inflight"]) == 5  # o1 o2 o3 o5 o7


def test_a_batch_takes_one_read_and_one_commit_round_trip_per_round(r: redis.Redis) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=100, max_exec_per_hour=100, max_open_positions=100,
                                  max_total_notional=Decimal(10**6), symbol_cooldown_ms=0), clock=Clock())
    governor.handle(plan("warm", "XRPUSDT", qty="1"))  # the scripts are loaded now
    entries = [(plan(f"p{i}", "XRPUSDT", qty="1"), Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i in range(20)]
    r.config_resetstat()

    assert governor.handle_batch(entries) == [None] * 20

    assert r.info("commandstats")["cmdstat_evalsha"]["calls"] == 1 + 20  # one read, then one commit call per plan
    assert r.hlen(keys.GOVERNOR_INFLIGHT) == 21


def test_an_open_whose_decision_raises_fails_alone_and_the_lock_is_released(r: redis.Redis, monkeypatch) -> None:
    from microservices.governor import governor as governor_module

    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=100, max_exec_per_hour=100), clock=Clock())
    real = governor_module.plan_writes

    def failing(plan, *args, **kwargs):
        if plan.plan_id == "bad":
            raise ArithmeticError("boom")
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(governor_module, "plan_writes", failing)
    batch = [plan("a", "XRPUSDT", qty="1"), plan("bad", "XRPUSDT", qty="1"), plan("c", "SOLUSDT", qty="1")]

    failures = governor.handle_batch([(p, Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i, p in enumerate(batch)])

    assert [type(f).__name__ if f else None for f in failures] == [None, "ArithmeticError", None]
    assert sorted(r.hkeys(keys.GOVERNOR_INFLIGHT)) == ["a", "c"] and r.get(keys.GOVERNOR_LOCK) is None


def test_a_lock_held_elsewhere_fails_the_opens_but_not_the_closes(r: redis.Redis) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    r.set(keys.GOVERNOR_LOCK, "other")
    governor = Governor(r, LIMITS, clock=Clock(), wait=lambda _s: None)
    batch = [plan("a", "XRPUSDT", qty="1"), close_plan("c1", "BTCUSDT")]

    failures = governor.handle_batch([(p, Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i, p in enumerate(batch)])

    assert type(failures[0]).__name__ == "LockBusy" and failures[1] is None
    assert r.get(keys.permit_p32("c1")) is not None and r.get(keys.permit_p32("a")) is None


def test_two_opens_on_one_symbol_in_a_batch_get_one_allow_while_a_cooldown_is_set(r: redis.Redis) -> None:
    # Neither has filled, so the symbol's last execution says nothing: the first one in flight holds the second.
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, Limits(max_exec_per_5min=100, max_exec_per_hour=100, symbol_cooldown_ms=60_000),
                        clock=Clock())
    batch = [plan("first", "XRPUSDT", qty="1"), plan("second", "XRPUSDT", qty="1"), plan("other", "SOLUSDT", qty="1")]

    assert governor.handle_batch([(p, Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i, p in enumerate(batch)]) \
        == [None, None, None]

    reasons = {p.plan_id: json.loads(r.get(keys.permit_p32(p.plan_id)))["reason"] for p in batch}
    assert reasons == {"first": "open_allowed", "second": "symbol_cooldown", "other": "open_allowed"}


def test_a_replay_in_a_round_counts_its_open_once_at_its_new_value(r: redis.Redis) -> None:
    """The commit replaces a replay's in-flight record, so the round's next plan decides on the new value
    (the old one out, the new one in), as Redis will count it."""
    clock = Clock()
    r.flushdb()
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    limits = Limits(max_notional_per_trade=Decimal(1500), max_total_notional=Decimal(2000), max_open_positions=10,
                    max_exec_per_5min=100, max_exec_per_hour=100, symbol_cooldown_ms=0)
    governor = Governor(r, limits, clock=clock)
    assert governor.handle(plan("a", "ETHUSDT", qty="1.2")).allow  # 1200 in flight
    clock.advance(1)
    batch = [plan("a", "ETHUSDT", qty="1.3"), plan("b", "SOLUSDT", qty="7.5")]  # a again at 1300; b 750 more

    failures = governor.handle_batch([(p, Entry(keys.Stream.APPLY_PLAN, f"{i}-0", {}, 1)) for i, p in enumerate(batch)])

    assert failures == [None, None]
    b = json.loads(r.get(keys.permit_p32("b")))
    assert (b["allow"], b["reason"]) == (False, "total_notional_exceeded")  # 1300 + 750 > 2000
    assert b["context"]["total_notional_after"] == "2050"
    assert r.hget(keys.GOVERNOR_INFLIGHT_TOTALS, "units") == str(1300 * 10**8)
