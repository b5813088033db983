"""apply-layer: harvest proposals (P26_MODE=shadow) or calibrated proposals (enforce) → reduce-only plans."""

from __future__ import annotations

from microservices.apply_layer.apply import ApplyLayer
from microservices.apply_layer.settings import ApplySettings
from shared.modes import P26Mode
from shared import keys
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import CalibratedProposal, HarvestProposal
from shared.settings import load_settings

NAME = "apply-layer"


def main() -> int:
    settings = load_settings(ApplySettings)
    ctx = daemon.start(NAME, settings)
    access = open_exchange_or_exit(NAME, ctx.redis, ctx.log)
    stream = settings.p26_mode.input_stream
    parse = CalibratedProposal.from_fields if settings.p26_mode is P26Mode.ENFORCE else HarvestProposal.from_fields
    ctx.log.info("apply_layer_ready", apply_mode=settings.apply_mode.value, p26_mode=settings.p26_mode.value,
                 input=stream, kill_switch=settings.apply_kill_switch)
    layer = ApplyLayer(ctx.redis, access.filters, settings)
    config = daemon.consumer_config(settings, NAME, stream, keys.Group.APPLY_LAYER)
    consumer = StreamConsumer(ctx.redis, config, parse, layer.handle, on_tick=access.filters.maybe_refresh)
    return daemon.run(ctx, consumer)
