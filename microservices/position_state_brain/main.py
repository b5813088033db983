"""position-state-brain (P3.3): apply.plan → quantum:permit:p33:<plan_id>, against the exchange's truth."""

from __future__ import annotations

from microservices.position_state_brain import metrics
from microservices.position_state_brain.brain import PositionStateBrain
from microservices.position_state_brain.keeper import SnapshotKeeper
from microservices.position_state_brain.settings import PositionStateSettings
from shared import keys
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.liveness import SoleInstance
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import Plan
from shared.settings import load_settings

NAME = "position-state-brain"


def main() -> int:
    settings = load_settings(PositionStateSettings)
    ctx = daemon.start(NAME, settings)
    access = open_exchange_or_exit(ctx)
    keeper = SnapshotKeeper(access.client, ctx.redis, settings.p33_poll_sec,
                            must_refresh_after_s=settings.p33_stale_threshold_sec / 2)
    if not keeper.refresh():
        ctx.log.warning("initial_snapshot_failed", detail="plans are denied stale_snapshot until a refresh succeeds")
    log_startup(ctx.log, settings)
    sole = SoleInstance(ctx.redis, keys.P33_INSTANCE, settings.consumer_name(NAME),
                        why="P3.3 keeps the opens it permitted in memory, so only one may run (stop one, or give it "
                            "its own Redis)")
    sole.hold()  # before the permitted opens are read back: they are this instance's now
    brain = PositionStateBrain(ctx.redis, keeper, access.filters, settings.policy(), settings.p33_permit_ttl)
    ctx.log.info("p33_permitted_opens_recovered", count=brain.recover())

    def on_tick() -> None:
        sole.keep()
        keeper.maybe_refresh()
        access.filters.maybe_refresh()
        brain.maybe_catch_up()

    # Blocking no longer than the poll interval makes the loop tick, and so refresh, on schedule (maybe_refresh
    # refreshes when due); no longer than STREAM_BLOCK_MS either, so it beats its liveness as every loop does.
    config = daemon.consumer_config(settings, NAME, keys.Stream.APPLY_PLAN, keys.Group.POSITION_STATE_BRAIN,
                                    block_ms=max(1, min(settings.stream_block_ms, int(settings.p33_poll_sec * 1000))))
    consumer = StreamConsumer(ctx.redis, config, Plan.from_fields, brain.handle, on_tick=on_tick,
                              batch_handler=brain.handle_batch, arrival=brain)
    try:
        return daemon.run(ctx, consumer)
    finally:
        sole.let_go()


def log_startup(log, settings: PositionStateSettings) -> None:
    metrics.STALE_THRESHOLD.set(settings.p33_stale_threshold_sec)
    log.info("p33_ready", allowlist=",".join(sorted(settings.allowlist)), poll_sec=settings.p33_poll_sec,
             stale_threshold_sec=settings.p33_stale_threshold_sec, cooldown_sec=settings.p33_cooldown_sec,
             permit_ttl_sec=settings.p33_permit_ttl, qty_tolerance_steps=settings.p33_qty_tolerance_steps,
             open_on_position=settings.p33_open_on_position.value)
    if settings.stale_below_poll:
        log.warning("stale_threshold_below_poll", detail="plans arriving between refreshes are denied stale_snapshot")
