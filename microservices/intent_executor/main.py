"""intent-executor: apply.plan → at most one exchange order per plan → apply.result."""

from __future__ import annotations

from microservices.intent_executor.executor import Executor
from microservices.intent_executor.resolve import redelivered_too_soon
from microservices.intent_executor.settings import ExecutorSettings
from shared.modes import fleet_mode, mode_mismatch
from shared import keys
from shared.incarnation import RedisIncarnation
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import exchange_settings_or_exit, open_exchange_or_exit
from shared.schema import Plan
from shared.settings import EXIT_CONFIG, load_settings

NAME = "intent-executor"


def main() -> int:
    settings = load_settings(ExecutorSettings)
    exchange_settings = exchange_settings_or_exit(NAME)
    mismatch = mode_mismatch(settings.apply_mode, exchange_settings.target) or redelivered_too_soon(
        settings.stream_claim_idle_ms, settings.stream_max_deliveries, settings.executor_permit_wait_ms, exchange_settings)
    if mismatch:
        daemon.fail(f"{NAME}: configuration error: {mismatch}", code=EXIT_CONFIG)
    incarnation = RedisIncarnation()  # which Redis, since when: older plans are looked up before sending
    ctx = daemon.start(NAME, settings, on_connect=incarnation.on_connect)
    access = open_exchange_or_exit(ctx, exchange_settings)
    mode = fleet_mode(settings.apply_mode, access.settings.target)
    ctx.redis.set(keys.MODE, mode)
    ctx.facts["mode"] = mode  # in each heartbeat: what a running executor sends to (the apply layer reads it)
    ctx.log.info("executor_ready", apply_mode=settings.apply_mode.value, permit_wait_ms=settings.executor_permit_wait_ms,
                 allow_upsize=settings.allow_upsize)
    executor = Executor(ctx.redis, access, settings, settings.consumer_name(NAME), incarnation=incarnation)
    config = daemon.consumer_config(settings, NAME, keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR)
    consumer = StreamConsumer(ctx.redis, config, Plan.from_fields, executor.handle, on_tick=executor.on_tick,
                              on_give_up=executor.give_up)
    executor.progress = lambda: consumer.on_progress() if consumer.on_progress else None  # liveness, set by run
    return daemon.run(ctx, consumer)
