"""harvest-proposal: open positions → exit proposals on harvest.proposal, one per position state.

Timer-driven: every HARVEST_POLL_SEC it evaluates the exchange snapshot; SIGTERM ends the wait.
"""

from __future__ import annotations

from microservices.harvest_proposal.harvester import Harvester
from microservices.harvest_proposal.settings import HarvestSettings
from shared import keys
from shared.runtime import daemon
from shared.runtime.liveness import HEARTBEAT_TTL_S, SoleInstance
from shared.settings import load_settings

NAME = "harvest-proposal"


def main() -> int:
    settings = load_settings(HarvestSettings)
    ctx = daemon.start(NAME, settings)
    harvester = Harvester(ctx.redis, settings)
    ctx.log.info(
        "harvest_ready", output=keys.Stream.HARVEST_PROPOSAL, poll_sec=settings.harvest_poll_sec,
        ladder=settings.harvest_tp_ladder, kill_score_critical=str(settings.harvest_kill_score_critical),
        repropose_sec=settings.harvest_repropose_sec, default_risk_pct=str(settings.harvest_default_risk_pct),
    )
    # One instance per Redis (found in review: two, seeing a new position in the same cycle, each began its record
    # with its own start time, which every proposal id carries: two partial closes for one take-profit rung). Renewed
    # each tick, so the key outlives the longest poll.
    sole = SoleInstance(ctx.redis, keys.HARVEST_INSTANCE, settings.consumer_name(NAME),
                        ttl_s=HEARTBEAT_TTL_S + 2 * int(settings.harvest_poll_sec + 1),
                        why="two would each start a position's record and propose its exits twice, so only one may "
                            "run (stop one)")
    sole.hold()

    def tick() -> None:
        sole.keep()
        harvester.tick()

    try:
        return daemon.run_timer(ctx, settings.harvest_poll_sec, tick)
    finally:
        sole.let_go()
