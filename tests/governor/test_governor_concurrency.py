"""Two governors on separate connections deciding at once never let both of two cap-sharing opens through."""

from __future__ import annotations

import threading
from decimal import Decimal

import redis
from governor_support import NOW_MS, SHOWN_MS, Clock, plan, result_marker, snapshot

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from shared import keys
from shared import snapshot as exchange_snapshot
from shared.redis_conn import connect
from shared.schema import Reason

ROUNDS = 40
LIMITS = Limits(max_notional_per_trade=Decimal(1500), max_exec_per_5min=100, max_exec_per_hour=100, auto_disarm=False)


def decide_together(governors: list[Governor], plans: list) -> list[Reason]:
    barrier = threading.Barrier(len(governors))
    reasons: list[Reason | None] = [None] * len(governors)

    def run(index: int) -> None:
        barrier.wait()
        reasons[index] = governors[index].handle(plans[index]).reason

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(governors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return reasons


def test_two_governors_racing_on_the_total_cap_allow_exactly_one(redis_url: str, r: redis.Redis) -> None:
    clients = [connect(redis_url) for _ in range(2)]
    governors = [Governor(client, LIMITS, clock=Clock()) for client in clients]
    outcomes = []
    for round_no in range(ROUNDS):
        r.flushdb()
        exchange_snapshot.publish(r, snapshot({"POSUSDT": "900"}, {"POSUSDT": "1", "ETHUSDT": "1000", "SOLUSDT": "100"}))
        plans = [plan(f"eth-{round_no}", "ETHUSDT", qty="0.6"), plan(f"sol-{round_no}", "SOLUSDT", qty="6")]

        outcomes.append(sorted(decide_together(governors, plans)))

    assert outcomes == [sorted([Reason.OPEN_ALLOWED, Reason.TOTAL_NOTIONAL_EXCEEDED])] * ROUNDS
    assert r.get(keys.GOVERNOR_LOCK) is None
    for client in clients:
        client.close()


def test_two_governors_racing_on_the_position_cap_allow_exactly_one(redis_url: str, r: redis.Redis) -> None:
    clients = [connect(redis_url) for _ in range(2)]
    governors = [Governor(client, LIMITS, clock=Clock()) for client in clients]
    outcomes = []
    for round_no in range(ROUNDS):
        r.flushdb()
        positions = {f"P{i}USDT": "1" for i in range(9)}
        exchange_snapshot.publish(r, snapshot(positions, {**{s: "1" for s in positions}, "ETHUSDT": "1000", "SOLUSDT": "100"},
                                              fetched_at_ms=NOW_MS))
        plans = [plan(f"eth-{round_no}", "ETHUSDT", qty="0.01"), plan(f"sol-{round_no}", "SOLUSDT", qty="0.1")]

        outcomes.append(sorted(decide_together(governors, plans)))

    assert outcomes == [sorted([Reason.MAX_OPEN_POSITIONS, Reason.OPEN_ALLOWED])] * ROUNDS
    for client in clients:
        client.close()


def test_a_prune_by_another_governor_waits_while_a_decision_reads_the_records(r: redis.Redis, monkeypatch) -> None:
    """Found in a review: governor A's exact look judges the records it reads against its round's (older)
    snapshot; governor B pruned an open the newer snapshot shows in between, and A then counted it nowhere."""
    limits = Limits(max_notional_per_trade=Decimal(1500), max_total_notional=Decimal(2000), max_exec_per_5min=100,
                    max_exec_per_hour=100, max_open_positions=100)
    marks = {"BTCUSDT": "80000", "ETHUSDT": "1000"}
    clock = Clock()
    a, b = Governor(r, limits, clock=clock), Governor(r, limits, clock=clock)
    exchange_snapshot.publish(r, snapshot(marks=marks))  # S1: no positions
    assert a.handle(plan("p", "ETHUSDT", qty="1.2")).allow  # 1200 in flight
    r.set(keys.plan_result_marker("p"), result_marker(NOW_MS + 100))  # p filled
    clock.advance(0.3)
    pruned: list = []
    read_inflight = a.store.read_inflight

    def b_prunes_meanwhile():
        exchange_snapshot.publish(r, snapshot({"ETHUSDT": "1.2"}, marks, fetched_at_ms=NOW_MS + 100 + SHOWN_MS))  # S2 shows p
        pruned.append(b.store.prune_settled())
        return read_inflight()

    monkeypatch.setattr(a.store, "read_inflight", b_prunes_meanwhile)
    q = a.handle(plan("q", "BTCUSDT", qty="0.015"))  # 1200 more: 2400 with p

    assert pruned == [[]]  # B waits for the lock A holds
    assert (q.allow, q.reason) == (False, Reason.TOTAL_NOTIONAL_EXCEEDED)
    assert b.store.prune_settled() == ["p"]  # once A is done
