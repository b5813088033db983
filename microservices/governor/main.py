"""governor (P3.2): apply.plan → quantum:permit:p32:<plan_id>, allow or deny with a reason code."""

from __future__ import annotations

from microservices.governor.governor import Governor
from microservices.governor.settings import GovernorSettings, Limits
from shared import keys
from shared.exchange.filter_cache import FilterCache
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.schema import Plan
from shared.settings import load_settings

NAME = "governor"


def main() -> int:
    settings = load_settings(GovernorSettings)
    limits = Limits.from_settings(settings)
    ctx = daemon.start(NAME, settings)
    ctx.log.info("governor_caps", **limits.summary())
    # No exchange access here: quantities are rounded with the fleet's shared copy of the rules.
    filters = FilterCache(None, redis=ctx.redis)
    filters.load()
    governor = Governor(ctx.redis, limits, filters=filters)
    migrated = governor.store.migrate_records()
    if migrated:
        ctx.log.info("inflight_records_migrated", count=migrated, detail="records from before the running totals")
    governor.refresh_gauges()
    config = daemon.consumer_config(settings, NAME, keys.Stream.APPLY_PLAN, keys.Group.GOVERNOR)
    consumer = StreamConsumer(ctx.redis, config, Plan.from_fields, governor.handle, on_tick=governor.on_tick,
                              batch_handler=governor.handle_batch, arrival=governor)
    return daemon.run(ctx, consumer)
