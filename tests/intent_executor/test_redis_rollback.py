"""Redis comes back with less than it had: an order sent for a plan is never sent again.

The executor's guard against a second order is the order marker in Redis. A Redis that restarts
from an older file (or a replica promoted before it caught up) has lost the marker, the result and
the group's progress, but not the plan entry written before them: the plan is delivered again and
the gates permit it again. The executor then asks the exchange first (shared.incarnation).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from microservices.intent_executor.executor import Executor
from microservices.intent_executor.settings import ExecutorSettings
from shared import keys, permits
from shared.exchange.client import ExchangeClient
from shared.exchange.filter_cache import FilterCache
from shared.exchange.target import load_exchange_settings
from shared.incarnation import RedisIncarnation
from shared.modes import ApplyMode
from shared.orders import client_order_id_for
from shared.redis_conn import connect
from shared.redis_server import EmbeddedRedis
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.runtime.exchange import ExchangeAccess
from shared.schema import P32Permit, P33Permit, Plan, Reason

FIELDS = {"plan_id": "rollback-1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
          "qty": "0.002", "reduceOnly": "false", "source": "test_manual"}
AOF = ("appendonly.aof", "appendonlydir")  # Redis 6 writes one file, Redis 7 a directory


def grant(client, plan: Plan) -> None:
    """What the gates write when they decide the plan (again, after the rollback)."""
    now = time.time()
    permits.issue(client, P32Permit(plan_id=plan.plan_id, allow=True, symbol="BTCUSDT", reason=Reason.OPEN_ALLOWED,
                                    created_at=now, context={"max_notional_per_trade": "200"},
                                    plan_digest=plan.digest), 60)
    permits.issue(client, P33Permit(plan_id=plan.plan_id, allow=True, symbol="BTCUSDT", created_at=now,
                                    reason=Reason.SANITY_CHECKS_PASSED, plan_digest=plan.digest), 60)


def run_executor(client, incarnation: RedisIncarnation | None) -> None:
    settings = load_exchange_settings()
    exchange = ExchangeClient(settings)
    filters = FilterCache(exchange.exchange_info, redis=client)
    filters.load()
    executor = Executor(client, ExchangeAccess(settings, exchange, filters),
                        ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="rollback-executor", wait=lambda _s: None, incarnation=incarnation)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR,
                            consumer="rollback-executor", block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(client, config, Plan.from_fields, executor.handle).run(burst=True)


def copy_aof(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for name in AOF:
        if (source / name).is_dir():
            shutil.rmtree(target / name, ignore_errors=True)
            shutil.copytree(source / name, target / name)
        elif (source / name).exists():
            shutil.copy2(source / name, target / name)


@pytest.mark.parametrize("asks_first,orders", [(True, 1), (False, 2)], ids=["with-incarnation", "without"])
def test_a_plan_redelivered_by_a_rolled_back_redis_is_not_sent_twice(exchange_env, sim, tmp_path, asks_first,
                                                                     orders) -> None:
    incarnation = RedisIncarnation() if asks_first else None
    (tmp_path / "redis").mkdir()
    with EmbeddedRedis(data_dir=str(tmp_path / "redis")) as server:
        client = connect(server.url, on_connect=incarnation.on_connect if incarnation else None)
        client.config_set("appendfsync", "always")  # the copy below is exactly what was written so far
        client.xadd(keys.Stream.APPLY_PLAN, FIELDS)
        copy_aof(Path(server.data_dir), tmp_path / "before")  # the plan, and nothing done about it yet
        plan = Plan.from_fields(FIELDS)
        grant(client, plan)
        run_executor(client, incarnation)
        assert client.exists(keys.plan_order_marker(plan.plan_id))

        server.stop()
        copy_aof(tmp_path / "before", Path(server.data_dir))  # restarts from the older file
        server.start()
        assert not client.exists(keys.plan_order_marker(plan.plan_id))  # the marker is gone with the rest
        grant(client, plan)
        run_executor(client, incarnation)

        (result,) = [fields for _id, fields in client.xrange(keys.Stream.APPLY_RESULT)]
        client.close()
    sent = [o for o in sim.orders() if o["clientOrderId"] == client_order_id_for(plan.plan_id)]
    assert len(sent) == orders
    assert (result["executed"], result["order_status"]) == ("true", "FILLED")
    if asks_first:
        assert result["order_id"] == str(sent[0]["orderId"])  # the result of the order sent before the rollback
