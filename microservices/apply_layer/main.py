"""apply-layer: harvest proposals (P26_MODE=shadow) or calibrated proposals (enforce; and those the heat gate has not
calibrated in time, microservices.apply_layer.bypass) → reduce-only plans."""

from __future__ import annotations

from microservices.apply_layer.apply import ApplyLayer, OwnDryRun, expose_p26_mode, other_readers
from microservices.apply_layer.bypass import CalibrationBypass
from microservices.apply_layer.settings import ApplySettings
from shared.modes import P26Mode
from shared import keys
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

    def on_tick() -> None:
        try:
            if bypass is not None:
                bypass.tick()
            own_dry_run.maybe_check()  # an executor that starts (or beats) later, sending, is met within seconds
        finally:  # the trading rules are refreshed whatever the bypass met, and the bypass runs whatever they do
            access.filters.maybe_refresh()

    release_left(ctx, stream, settings.consumer_name(NAME))
    config = daemon.consumer_config(settings, NAME, stream, keys.Group.APPLY_LAYER)
    consumer = StreamConsumer(ctx.redis, config, parse, layer.handle, on_tick=on_tick)
    return daemon.run(ctx, consumer)


def release_left(ctx: daemon.DaemonContext, stream: str, me: str) -> None:
    """After a P26_MODE switch: let go of this daemon's group on the stream it no longer reads, unless another running
    apply layer reads it (by their heartbeats) or entries are pending there."""
    left = P26Mode.SHADOW.input_stream if stream != P26Mode.SHADOW.input_stream else P26Mode.ENFORCE.input_stream
    readers = other_readers(ctx.redis, left, me)
    released = "in_use" if readers else maintenance.release_left_group(ctx.redis, left, keys.Group.APPLY_LAYER)
    if released in ("pending", "in_use"):  # kept: it holds back the trimming of that stream until it goes
        ctx.log.warning("left_group_kept", stream=left, group=keys.Group.APPLY_LAYER, why=released,
                        readers=",".join(readers), hint=f"XGROUP DESTROY {left} {keys.Group.APPLY_LAYER} once "
                                                        "nothing there needs it")
    elif released == "released":
        ctx.log.info("left_group_released", stream=left, group=keys.Group.APPLY_LAYER)
