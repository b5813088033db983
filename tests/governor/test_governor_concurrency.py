"""Two governors on separate connections deciding at once never let both of two cap-sharing opens through."""

from __future__ import annotations

import threading
from decimal import Decimal

import redis
from governor_support import NOW_MS, Clock, plan, snapshot

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
