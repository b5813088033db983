"""apply-layer: harvest proposals (P26_MODE=shadow) or calibrated proposals (enforce; and those the heat gate has not
calibrated in time, microservices.apply_layer.bypass) → reduce-only plans."""

from __future__ import annotations

import time
from collections.abc import Callable

from microservices.apply_layer.apply import ApplyLayer, OwnDryRun, expose_p26_mode, other_readers
from microservices.apply_layer.bypass import CalibrationBypass
from microservices.apply_layer.settings import ApplySettings
from shared.modes import P26Mode
from shared import keys
from shared.freshness import redis_ms
from shared.redis_conn import unavailable
from shared.runtime import daemon, maintenance
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import CalibratedProposal, HarvestProposal
from shared.settings import load_settings

NAME = "apply-layer"


def main() -> int:
    settings = load_settings(ApplySettings)
    ctx = daemon.start(NAME, settings)
    ctx.facts["p26_mode"] = settings.p26_mode.value  # in each heartbeat: which stream it reads (see release_left)
    access = open_exchange_or_exit(ctx)
    stream = settings.p26_mode.input_stream
    parse = CalibratedProposal.from_fields if settings.p26_mode is P26Mode.ENFORCE else HarvestProposal.from_fields
    ctx.log.info("apply_layer_ready", apply_mode=settings.apply_mode.value, p26_mode=settings.p26_mode.value,
                 input=stream, kill_switch=settings.apply_kill_switch,
                 proposal_max_age_sec=settings.apply_proposal_max_age_sec,
                 calibration_wait_sec=settings.apply_calibration_wait_sec)
    own_dry_run = OwnDryRun(ctx.redis, settings.apply_mode, ctx.log)
    own_dry_run.check()
    if settings.apply_kill_switch:
        # The seed's switch of the layer that published every plan; here it holds back exits only, while the intent
        # bridge's opens still flow. Said at start so that no one takes it for a halt.
        ctx.log.warning("apply_kill_switch_stops_exits_only", hint="to halt opens and closes: quantum kill on")
    expose_p26_mode(settings.p26_mode)
    layer = ApplyLayer(ctx.redis, access.filters, settings)
    bypass = None
    if settings.p26_mode is P26Mode.ENFORCE:
        # An exit the heat gate has not calibrated in time is planned as proposed: a stopped gate holds back none.
        bypass = CalibrationBypass(ctx.redis, layer, settings.calibration_wait_ms, settings.proposal_max_age_ms)

    left = LeftGroup(ctx, settings.p26_mode, settings.consumer_name(NAME))
    left.maybe_release()
    # Each step runs whatever the others met (the trading rules are refreshed whatever the bypass met, the bypass runs
    # whatever they do); the first failure is raised after them all.
    steps = [own_dry_run.maybe_check, *([bypass.tick] if bypass is not None else []), left.maybe_release,
             access.filters.maybe_refresh]

    config = daemon.consumer_config(settings, NAME, stream, keys.Group.APPLY_LAYER)
    consumer = StreamConsumer(ctx.redis, config, parse, layer.handle, on_tick=lambda: run_steps(steps))
    return daemon.run(ctx, consumer)


def run_steps(steps: list[Callable[[], object]]) -> None:
    """Each step whatever the others met, the first failure raised after them all; but Redis unavailable at once: the
    loop waits for it, and each further step would wait its own timeouts first (found in review: a stalled Redis made
    the steps together outlast systemd's watchdog)."""
    failure: Exception | None = None
    for step in steps:
        try:
            step()
        except Exception as exc:
            if unavailable(exc):
                raise
            failure = failure or exc
    if failure is not None:
        raise failure


class LeftGroup:
    """After a P26_MODE switch: this daemon's group on the stream it no longer reads, let go of once it has left
    entries unread for minutes and no running apply layer says it reads that stream (maintenance.release_left_group);
    looked at once a minute. Kept while entries are pending there (said once, with how to remove it)."""

    EVERY_S = 60.0

    def __init__(self, ctx: daemon.DaemonContext, reading: P26Mode, me: str):
        self.ctx, self.me = ctx, me
        [self.stream] = [mode.input_stream for mode in P26Mode if mode is not reading]
        self.last, self.done, self.said = float("-inf"), False, ""

    def maybe_release(self) -> None:
        if self.done or time.monotonic() - self.last < self.EVERY_S:
            return
        self.last = time.monotonic()
        outcome = maintenance.release_left_group(
            self.ctx.redis, self.stream, keys.Group.APPLY_LAYER, redis_ms(self.ctx.redis),
            others_read=lambda: bool(other_readers(self.ctx.redis, self.stream, self.me)))
        # Not done while absent: another instance, in the other mode for a while, may create the group later.
        self.done = outcome == "released"
        if outcome == "released":
            self.ctx.log.info("left_group_released", stream=self.stream, group=keys.Group.APPLY_LAYER)
        elif outcome == "pending" and self.said != outcome:  # it holds back that stream's trimming until it goes
            self.ctx.log.warning("left_group_kept", stream=self.stream, group=keys.Group.APPLY_LAYER, why=outcome,
                                 hint=f"XGROUP DESTROY {self.stream} {keys.Group.APPLY_LAYER} once nothing there "
                                      "needs it")
        self.said = outcome
