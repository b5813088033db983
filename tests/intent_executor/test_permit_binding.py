"""A permit authorises the plan it was decided for, not whatever is later sent under the same plan_id.

Two apply.plan entries sharing a plan_id (an operator re-sending a corrected plan, a producer bug)
share one permit key; the gates decide each and the later decision overwrites the earlier one.
Each permit carries the digest of the plan decided on, and the executor sends only that plan.
"""

from __future__ import annotations

import json

import pytest
import redis

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from microservices.intent_executor.executor import Executor
from microservices.intent_executor.settings import ExecutorSettings
from microservices.position_state_brain.brain import PositionStateBrain
from microservices.position_state_brain.gates import GatePolicy
from microservices.position_state_brain.keeper import SnapshotKeeper
from shared import keys, permits
from shared.modes import ApplyMode
from shared.permits import PermitKind
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.schema import Plan

BASE = {"plan_id": "dup-1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
        "reduceOnly": "false", "source": "test_manual"}


def decide_both(r: redis.Redis, access, plans: list[Plan]) -> None:
    """The governor and P3.3 decide each entry in turn, as their consumers would."""
    keeper = SnapshotKeeper(access.client, r, poll_s=1.0)
    assert keeper.refresh()
    governor = Governor(r, Limits(max_exec_per_hour=100, max_exec_per_5min=100), filters=access.filters)
    brain = PositionStateBrain(r, keeper, access.filters, GatePolicy(frozenset({"BTCUSDT"}), 10.0, 1, 15.0),
                               permit_ttl_s=60)
    for plan in plans:
        governor.handle(plan)
        brain.handle(plan)


def run_executor(r: redis.Redis, access) -> None:
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="t", wait=lambda _s: None)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="t", block_ms=50)
    StreamConsumer(r, config, Plan.from_fields, executor.handle).run(burst=True)


def test_an_allow_decided_for_another_entry_under_the_plan_id_sends_nothing(r, access, sim) -> None:
    for qty in ("0.05", "0.002"):  # 4,400 USDT (over the 200 USDT per-trade cap), then 176 USDT
        r.xadd(keys.Stream.APPLY_PLAN, {**BASE, "qty": qty})
    big, small = (Plan.from_fields(fields) for _id, fields in r.xrange(keys.Stream.APPLY_PLAN))
    decide_both(r, access, [big, small])
    assert permits.peek(r, PermitKind.P32, "dup-1").allow  # the small entry's allow overwrote the big one's deny

    run_executor(r, access)

    (result,) = [fields for _id, fields in r.xrange(keys.Stream.APPLY_RESULT)]
    assert (result["executed"], result["reason"], result["qty"]) == ("false", "permit_mismatch", "0.05")
    assert json.loads(result["detail"])["plan_digest"] == big.digest
    assert [o for o in sim.orders() if o["clientOrderId"] == "qt-dup-1"] == []
    assert r.get(keys.plan_order_marker("dup-1")) is None  # refused before anything could be sent


def test_the_same_plan_sent_twice_executes_once(r, access, sim) -> None:
    for _ in range(2):  # e.g. a producer re-publishing after a crash: same content, same digest
        r.xadd(keys.Stream.APPLY_PLAN, {**BASE, "qty": "0.002"})
    first, again = (Plan.from_fields(fields) for _id, fields in r.xrange(keys.Stream.APPLY_PLAN))
    decide_both(r, access, [first, again])

    run_executor(r, access)

    (result,) = [fields for _id, fields in r.xrange(keys.Stream.APPLY_RESULT)]
    assert (result["executed"], result["order_status"]) == ("true", "FILLED")
    assert len([o for o in sim.orders() if o["clientOrderId"] == "qt-dup-1"]) == 1


@pytest.mark.parametrize("kind", list(PermitKind))
def test_both_gates_bind_their_permit_to_the_plan_as_sent_by_its_producer(r, access, kind) -> None:
    plan = Plan.from_fields({**BASE, "qty": "0.0023"})  # the governor prices the step-rounded 0.002
    decide_both(r, access, [plan])

    assert permits.peek(r, kind, "dup-1").plan_digest == plan.digest
