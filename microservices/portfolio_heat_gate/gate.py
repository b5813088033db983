"""harvest.proposal → heat calibration → harvest.calibrated, once per proposal, in both modes.

The calibrated entry keeps the proposal's id, so the apply layer derives the same plan id from
either stream; P26_MODE only decides which stream the apply layer acts on.
"""

from __future__ import annotations

import redis
from prometheus_client import Counter, Gauge

from microservices.portfolio_heat_gate.account import HeatSource
from microservices.portfolio_heat_gate.calibration import calibrate, calibrated_proposal
from microservices.portfolio_heat_gate.heat import HeatReading
from microservices.portfolio_heat_gate.settings import HeatGateSettings, P26Mode
from shared import keys
from shared.logging import get_logger
from shared.once import xadd_once
from shared.runtime.consumer import Entry, Rejected
from shared.schema import CalibratedProposal, HarvestProposal

HEAT = Gauge("quantum_p26_heat", "Portfolio heat (0..1) at the last calibration")
CALIBRATIONS = Counter(
    "quantum_p26_calibrations_total", "Calibrated proposals published, by original and calibrated action",
    ["original", "calibrated"],
)
MODE = Gauge("quantum_p26_mode", "P2.6 mode: 1 for the active mode (shadow or enforce)", ["mode"])
COMPARE_EVENT = "SHADOW-COMPARE"


def expose_mode(mode: P26Mode) -> None:
    for each in P26Mode:
        MODE.labels(mode=each.value).set(1 if each is mode else 0)


def compare_line(calibrated: CalibratedProposal) -> str:
    """The seed's SHADOW-COMPARE text, which operators grep for."""
    return (
        f"{COMPARE_EVENT}: {calibrated.proposal_id[:8]} | "
        f"proposal={calibrated.original_action.value} vs calibrated={calibrated.action.value} | "
        f"heat={calibrated.heat:.4f} {calibrated.heat_bucket.value} | "
        f"downgraded={calibrated.downgraded} reason={calibrated.calibration_reason}"
    )


def is_calibrated(client: redis.Redis, proposal_id: str) -> bool:
    return bool(client.exists(keys.p26_calibrated(proposal_id)))


def publish_once(client: redis.Redis, calibrated: CalibratedProposal) -> bool:
    """XADD the calibrated proposal unless it was already written; atomic against concurrent gates."""
    marker = keys.p26_calibrated(calibrated.proposal_id)
    return xadd_once(client, marker, keys.Stream.HARVEST_CALIBRATED, calibrated.to_fields())


class HeatGate:
    def __init__(self, client: redis.Redis, heat: HeatSource, settings: HeatGateSettings):
        self.r = client
        self.heat = heat
        self.settings = settings
        self.log = get_logger(component="portfolio_heat_gate")

    def handle(self, proposal: HarvestProposal, entry: Entry) -> None:
        if not proposal.action.is_close:
            raise Rejected("not_a_close_action", {"action": proposal.action.value})
        if is_calibrated(self.r, proposal.proposal_id):
            self._already(proposal, entry)
            return
        reading = self.heat.reading()
        HEAT.set(float(reading.heat))
        calibration = calibrate(proposal, reading.bucket, self.settings.p26_kill_score_critical)
        calibrated = calibrated_proposal(proposal, reading, calibration)
        if not publish_once(self.r, calibrated):
            self._already(proposal, entry)
            return
        CALIBRATIONS.labels(original=proposal.action.value, calibrated=calibrated.action.value).inc()
        self._log_compare(calibrated, reading, entry)

    def _already(self, proposal: HarvestProposal, entry: Entry) -> None:
        self.log.info("CALIBRATION_ALREADY_PUBLISHED", proposal_id=proposal.proposal_id, stream_id=entry.entry_id)

    def _log_compare(self, calibrated: CalibratedProposal, reading: HeatReading, entry: Entry) -> None:
        self.log.info(
            COMPARE_EVENT, line=compare_line(calibrated), mode=self.settings.p26_mode.value,
            proposal_id=calibrated.proposal_id, symbol=calibrated.symbol, stream_id=entry.entry_id,
            proposal=calibrated.original_action.value, calibrated=calibrated.action.value,
            heat=str(calibrated.heat), heat_bucket=calibrated.heat_bucket.value, downgraded=calibrated.downgraded,
            reason=calibrated.calibration_reason, proposal_reason=calibrated.reason,
            kill_score=str(calibrated.kill_score), leverage=str(reading.leverage), drawdown=str(reading.drawdown),
            concentration=str(reading.concentration),
        )
