"""harvest-proposal: open positions → exit proposals on harvest.proposal, one per position state.

Timer-driven: every HARVEST_POLL_SEC it evaluates the exchange snapshot; SIGTERM ends the wait.
"""

from __future__ import annotations

import signal
import threading

import redis

from microservices.harvest_proposal.harvester import Harvester
from microservices.harvest_proposal.settings import HarvestSettings
from shared import keys
from shared.runtime import daemon
from shared.settings import load_settings

NAME = "harvest-proposal"


def main() -> int:
    settings = load_settings(HarvestSettings)
    ctx = daemon.start(NAME, settings)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    harvester = Harvester(ctx.redis, settings)
    ctx.log.info(
        "harvest_ready", output=keys.Stream.HARVEST_PROPOSAL, poll_sec=settings.harvest_poll_sec,
        ladder=settings.harvest_tp_ladder, kill_score_critical=str(settings.harvest_kill_score_critical),
        repropose_sec=settings.harvest_repropose_sec, default_risk_pct=str(settings.harvest_default_risk_pct),
    )
    while not stopping.wait(settings.harvest_poll_sec):
        run_cycle(harvester, ctx.log)
    ctx.log.info("daemon_stopped")
    return 0


def run_cycle(harvester: Harvester, log) -> None:
    try:
        harvester.tick()
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Redis comes back; the next cycle re-evaluates from the snapshot, so nothing is lost.
        log.warning("redis_unavailable", error=exc.__class__.__name__)
