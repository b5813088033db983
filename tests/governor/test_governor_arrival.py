"""The governor's read made as plans arrive (shared.runtime.arrival): the same decisions as a read of its own,
with the windows corrected to the decision's time, and a read of its own whenever that cannot be told."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from governor_support import NOW_MS, Clock, close_plan, plan, snapshot
from test_governor_batch import LIMITS, MARKS, prepare, sequence, state

from microservices.governor import lua
from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from microservices.governor import arrival
from microservices.governor.arrival import SLACK_MS
from microservices.governor.store import GovernorStore
from shared import keys
from shared import snapshot as exchange_snapshot
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.schema import Plan

HOUR_MS, FIVE_MIN_MS = 3_600_000, 300_000
WIDE = Limits(max_exec_per_5min=100, max_exec_per_hour=100, max_open_positions=100, max_total_notional=Decimal(10**6),
              symbol_cooldown_ms=0,
              auto_disarm_window_ms=600_000)


def consumer(r: redis.Redis, governor: Governor) -> StreamConsumer:
    """Wired as the daemon wires it."""
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.GOVERNOR, consumer="g1", block_ms=20)
    built = StreamConsumer(r, config, Plan.from_fields, governor.handle, batch_handler=governor.handle_batch,
                           arrival=governor)
    built.ensure_group()
    return built


def counted_reads(monkeypatch) -> list:
    calls: list = []
    real = lua.READ_OPENS
    monkeypatch.setattr(lua, "READ_OPENS", lambda client, keys_, args: calls.append(args) or real(client, keys_, args))
    return calls


def arrival_read(r: redis.Redis, store: GovernorStore, plans: list[tuple[str, str]], asked_ms: int, token: str = "tok"):
    """What the consumer's wait would hand over when these plans arrive, asked at asked_ms."""
    r.xgroup_create("arrivals", "g", id="$", mkstream=True)
    call = arrival.call(store, token, asked_ms)
    for plan_id, symbol in plans:
        r.xadd("arrivals", {"plan_id": plan_id, "symbol": symbol, "decision": "EXECUTE"})
    r.xreadgroup("g", "c", {"arrivals": ">"})
    reply = r.eval(call.script.source, 1 + len(call.keys), "arrivals", *call.keys, "(0-0", 64, *call.args)
    return arrival.parse(token, asked_ms, reply)


def test_a_batch_decided_on_its_arrival_read_decides_as_one_plan_at_a_time(r: redis.Redis, monkeypatch) -> None:
    governor = prepare(r, Clock())
    for p in sequence():
        governor.handle(p)
    expected = state(r)

    clock = Clock()
    governor = prepare(r, clock)
    for p in sequence():
        r.xadd(keys.Stream.APPLY_PLAN, p.to_fields())
    reads = counted_reads(monkeypatch)
    consumer(r, governor)._read_new(block_ms=None)

    assert state(r) == expected
    first_plans = [args[6] for args in reads]  # READ_OPENS args: token ttl 4 window starts, then the round's plans
    assert first_plans[0] == "o1"  # the batch has closes: decided first, they age the arrival read
    assert r.get(keys.GOVERNOR_LOCK) is None


def test_a_batch_of_opens_is_decided_without_a_read_of_its_own(r: redis.Redis, monkeypatch) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, WIDE, clock=Clock())
    reader = consumer(r, governor)
    for i in range(5):
        r.xadd(keys.Stream.APPLY_PLAN, plan(f"o{i}", "XRPUSDT", qty="1").to_fields())
    reads = counted_reads(monkeypatch)

    reader._read_new(block_ms=None)

    assert reads == [] and all(r.get(keys.permit_p32(f"o{i}")) for i in range(5))
    assert r.hlen(keys.GOVERNOR_INFLIGHT) == 5 and r.get(keys.GOVERNOR_LOCK) is None


@pytest.mark.parametrize("elapsed_ms", [0, 1, 999, 1000, 1001, 2500, SLACK_MS])
def test_window_counts_are_corrected_to_the_decision_time(r: redis.Redis, elapsed_ms: int) -> None:
    store = GovernorStore(r, WIDE)
    opens = keys.governor_opens("BTCUSDT")
    r.zadd(opens, {"h1": NOW_MS - HOUR_MS + 1, "h2": NOW_MS - HOUR_MS + 1000, "h3": NOW_MS - HOUR_MS + 2500,
                   "f1": NOW_MS - FIVE_MIN_MS + 1000, "f2": NOW_MS - FIVE_MIN_MS + 4000, "new": NOW_MS - 5})
    r.zadd(keys.GOVERNOR_RATE_TRIPS, {"t1": NOW_MS - 600_000 + 1000, "t2": NOW_MS - 10})
    arrived = arrival_read(r, store, [("p1", "BTCUSDT")], NOW_MS)

    corrected = arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS + elapsed_ms)
    exact = store._try_read_opens([("p1", "BTCUSDT")], NOW_MS + elapsed_ms, "tok")

    assert corrected == exact
    assert (exact.own[0].opens_last_hour, exact.own[0].opens_last_5min, exact.shared.rate_trips) == (
        6 - (elapsed_ms >= 1) - (elapsed_ms >= 1000) - (elapsed_ms >= 2500),
        3 - (elapsed_ms >= 1000) - (elapsed_ms >= 4000), 2 - (elapsed_ms >= 1000))


def test_it_reads_again_when_the_correction_cannot_be_told(r: redis.Redis) -> None:
    store = GovernorStore(r, WIDE)
    opens = keys.governor_opens("BTCUSDT")
    r.zadd(opens, {f"old{i}": NOW_MS - HOUR_MS + 1 + i for i in range(lua.ARRIVAL_SLICE)})
    r.hset(keys.GOVERNOR_INFLIGHT, "inflight", '{"symbol":"ETHUSDT","notional":"1","units":"100000000","allowed_at_ms":%d}'
           % (NOW_MS - WIDE.inflight_expiry_ms + 50))
    arrived = arrival_read(r, store, [("p1", "BTCUSDT")], NOW_MS)

    assert arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS + 10) is not None
    assert arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS + 40) is None  # a full slice passed
    assert arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS + 50) is None  # ...and the record expired
    assert arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS + SLACK_MS + 1) is None
    assert arrival.as_round(store, arrived, [("p1", "BTCUSDT")], NOW_MS - 1) is None  # the clock went back
    assert arrival.as_round(store, arrived, [("p2", "BTCUSDT")], NOW_MS) is None  # not read on arrival


def test_a_lock_another_governor_holds_on_arrival_is_waited_for_as_before(r: redis.Redis, monkeypatch) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    r.set(keys.GOVERNOR_LOCK, "other", px=30)
    governor = Governor(r, WIDE, clock=Clock())
    reads = counted_reads(monkeypatch)
    r.xadd(keys.Stream.APPLY_PLAN, plan("a", "XRPUSDT", qty="1").to_fields())

    consumer(r, governor)._read_new(block_ms=None)

    assert len(reads) >= 1 and r.get(keys.permit_p32("a")) is not None and r.get(keys.GOVERNOR_LOCK) is None


def test_a_lock_taken_on_arrival_and_not_needed_is_let_go_after_the_batch(r: redis.Redis) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, LIMITS, clock=Clock())
    r.xadd(keys.Stream.APPLY_PLAN, close_plan("c1", "BTCUSDT").to_fields())
    r.xadd(keys.Stream.APPLY_PLAN, plan("hold", "SOLUSDT", decision="HOLD").to_fields())
    reader = consumer(r, governor)
    released = []
    release = governor.store.release
    governor.store.release = lambda token: released.append(r.get(keys.GOVERNOR_LOCK) == token) or release(token)

    reader._read_new(block_ms=None)

    assert released == [True] and r.get(keys.GOVERNOR_LOCK) is None
    assert r.get(keys.permit_p32("c1")) is not None


def test_a_batch_of_plans_that_need_no_permit_takes_no_lock(r: redis.Redis) -> None:
    governor = Governor(r, LIMITS, clock=Clock())
    reader = consumer(r, governor)
    r.xadd(keys.Stream.APPLY_PLAN, plan("hold", "SOLUSDT", decision="HOLD").to_fields())
    r.config_resetstat()

    reader._read_new(block_ms=None)

    assert "cmdstat_set" not in r.info("commandstats")  # the script's SET NX of the lock never ran


def test_a_lock_asked_for_by_a_read_whose_reply_never_came_is_let_go(r: redis.Redis) -> None:
    governor = Governor(r, LIMITS, clock=Clock())
    call = governor.arrival_call()
    r.set(keys.GOVERNOR_LOCK, call.args[0], px=2000)  # as if the script ran and its reply was lost

    governor.arrived(None)

    assert r.get(keys.GOVERNOR_LOCK) is None


def test_a_plan_with_a_huge_field_is_dead_lettered_without_stalling_redis(r: redis.Redis) -> None:
    """The script bounds fields before any pattern touches them: a Lua trim of 200 KB of spaces would take
    minutes, and every client of Redis would get BUSY meanwhile."""
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, LIMITS, clock=Clock())
    reader = consumer(r, governor)
    bad = {**plan("bad", "XRPUSDT", qty="1").to_fields(), "symbol": "X" + " " * 200_000 + "Y"}
    r.xadd(keys.Stream.APPLY_PLAN, bad)
    r.xadd(keys.Stream.APPLY_PLAN, plan("good", "XRPUSDT", qty="1").to_fields())

    reader._read_new(block_ms=None)

    dead = r.xrange(keys.Stream.DEAD_LETTER)
    assert len(dead) == 1 and r.get(keys.permit_p32("good")) is not None


def test_after_closes_the_opens_read_again_under_the_lock_taken_on_arrival(r: redis.Redis, monkeypatch) -> None:
    """Closes go first (nothing about opens may hold them up); their round trips age the arrival read, so the
    opens after them read again, with the arrival's lock token."""
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    governor = Governor(r, WIDE, clock=Clock())
    reader = consumer(r, governor)
    r.xadd(keys.Stream.APPLY_PLAN, close_plan("c1", "BTCUSDT").to_fields())
    r.xadd(keys.Stream.APPLY_PLAN, plan("o1", "XRPUSDT", qty="1").to_fields())
    reads = counted_reads(monkeypatch)
    tokens = []
    commit = governor.store.commit_round
    governor.store.commit_round = lambda writes, token: tokens.append(token) or commit(writes, token)
    asked = []
    arrival_call = governor.arrival_call
    governor.arrival_call = lambda: asked.append(arrival_call()) or asked[-1]

    reader._read_new(block_ms=None)

    assert len(reads) == 1 and reads[0][0] == asked[0].args[0] == tokens[0]  # read again, same token
    assert r.get(keys.permit_p32("c1")) and r.get(keys.permit_p32("o1")) and r.get(keys.GOVERNOR_LOCK) is None


def test_a_close_is_not_held_up_by_a_lock_another_governor_holds(r: redis.Redis) -> None:
    exchange_snapshot.publish(r, snapshot(marks=MARKS))
    r.set(keys.GOVERNOR_LOCK, "other")
    decided = []
    governor = Governor(r, LIMITS, clock=Clock(), wait=lambda _s: decided.append(r.get(keys.permit_p32("c1"))))
    r.xadd(keys.Stream.APPLY_PLAN, plan("o1", "XRPUSDT", qty="1").to_fields())
    r.xadd(keys.Stream.APPLY_PLAN, close_plan("c1", "BTCUSDT").to_fields())

    consumer(r, governor)._read_new(block_ms=None)

    assert decided and all(decided)  # while the open waited for the lock, the close's permit was already there
