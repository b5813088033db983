"""portfolio-heat-gate P2.6: harvest.proposal → heat-calibrated harvest.calibrated (both modes)."""

from __future__ import annotations

import redis

from microservices.portfolio_heat_gate.account import AccountCache, HeatSource
from microservices.portfolio_heat_gate.gate import HeatGate, expose_settings
from microservices.portfolio_heat_gate.settings import HeatGateSettings
from shared import keys
from shared.runtime import daemon
from shared.runtime.consumer import StreamConsumer
from shared.runtime.exchange import open_exchange_or_exit
from shared.schema import HarvestProposal
from shared.settings import load_settings

NAME = "portfolio-heat-gate"


def main() -> int:
    settings = load_settings(HeatGateSettings)
    ctx = daemon.start(NAME, settings)
    access = open_exchange_or_exit(ctx)
    expose_settings(settings)
    account = AccountCache(access.client, settings.p26_account_max_age_sec, settings.p26_account_stale_sec)
    heat = HeatSource(ctx.redis, account, settings)
    ctx.log.info(
        "heat_gate_ready", mode=settings.p26_mode.value.upper(), input=keys.Stream.HARVEST_PROPOSAL,
        output=keys.Stream.HARVEST_CALIBRATED,
        thresholds=f"COLD < {settings.p26_cold_max} <= WARM < {settings.p26_warm_max} <= HOT",
    )
    log_initial_heat(ctx.log, heat)
    gate = HeatGate(ctx.redis, heat, settings)
    config = daemon.consumer_config(settings, NAME, keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE)
    consumer = StreamConsumer(ctx.redis, config, HarvestProposal.from_fields, gate.handle)
    return daemon.run(ctx, consumer)


def log_initial_heat(log, heat: HeatSource) -> None:
    try:
        reading = heat.reading()
    except (redis.ConnectionError, redis.TimeoutError):
        raise
    except Exception as exc:  # a garbled input must not stop the gate at start: each proposal is published anyway
        log.warning("initial_heat_unavailable", error=exc.__class__.__name__, detail=str(exc)[:200])
        return
    log.info("initial_heat", heat=str(reading.heat), heat_bucket=reading.bucket.value,
             leverage=str(reading.leverage), drawdown=str(reading.drawdown), concentration=str(reading.concentration))
