"""reconcile: exchange ⇄ ledger, on an interval and after each plan result."""

from __future__ import annotations

from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import PlanResult
from shared.settings import load_settings

NAME = "reconcile"


def main() -> int:
    settings = load_settings(ReconcileSettings)
    ctx = daemon.start(NAME, settings)
    access = open_exchange_or_exit(ctx)
    ctx.log.info("reconcile_ready", interval_sec=settings.reconcile_interval_sec, grace_sec=settings.reconcile_grace_sec,
                 tolerance_steps=settings.heal_tolerance_steps)
    reconciler = Reconciler(ctx.redis, access, settings)
    block_ms = max(1, min(settings.stream_block_ms, int(settings.reconcile_interval_sec * 1000)))  # 0 blocks forever
    config = daemon.consumer_config(settings, NAME, keys.Stream.APPLY_RESULT, keys.Group.RECONCILE, block_ms=block_ms)
    consumer = StreamConsumer(ctx.redis, config, PlanResult.from_fields, reconciler.on_result, on_tick=reconciler.tick)
    return daemon.run(ctx, consumer)
