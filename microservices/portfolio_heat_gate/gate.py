"""harvest.proposal → heat calibration → harvest.calibrated, once per proposal, in both modes.

The calibrated entry keeps the proposal's id, so the apply layer derives the same plan id from
either stream; P26_MODE only decides which stream the apply layer acts on.

When heat cannot be read the proposal is still published, uncalibrated (heat_unavailable): at
once when the account is unavailable or reading heat failed in any other way (a garbled equity
high-water mark, an unexpected error; orders may still work, and an exit must not wait or be
dead-lettered for heat: take-profit partials are proposed once); without a fresh snapshot P3.3
permits nothing anyway, so it is retried while deliveries remain, and published uncalibrated on
the last. Only a lost Redis connection leaves the proposal to the runtime, which waits for Redis.
"""

from __future__ import annotations

import redis
from prometheus_client import Counter, Gauge

from microservices.portfolio_heat_gate.account import AccountUnavailable, HeatSource, HeatUnavailable
from microservices.portfolio_heat_gate.calibration import calibrate, calibrated_proposal, uncalibrated_proposal
from microservices.portfolio_heat_gate.heat import HeatReading
from microservices.portfolio_heat_gate.settings import HeatGateSettings, P26Mode
from shared import keys, metrics
from shared.logging import get_logger
from shared.once import xadd_once
from shared.runtime.consumer import Entry, Rejected, Shutdown
from shared.schema import CalibratedProposal, HarvestProposal

HEAT = Gauge("quantum_p26_heat", "Portfolio heat (0..1) at the last calibration")
CALIBRATIONS = Counter(
    "quantum_p26_calibrations_total", "Calibrated proposals published, by original and calibrated action",
    ["original", "calibrated"],
)
MODE = Gauge("quantum_p26_mode", "P2.6 mode: 1 for the active mode (shadow or enforce)", ["mode"])
WARM_MAX = Gauge("quantum_p26_warm_max", "P26_WARM_MAX: heat at or above it is HOT (alerts compare)")
HEAT_UNAVAILABLE = Counter("quantum_p26_heat_unavailable_total", "Proposals published uncalibrated: heat unreadable")
COMPARE_EVENT = "SHADOW-COMPARE"


def expose_settings(settings: HeatGateSettings) -> None:
    """The mode and the HOT threshold, for the alerts (P26ModeDisagrees, PortfolioHeatHot) to compare with."""
    metrics.set_mode(MODE, P26Mode, settings.p26_mode)
    WARM_MAX.set(float(settings.p26_warm_max))


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
        try:
            reading = self.heat.reading()
        except (Shutdown, redis.ConnectionError, redis.TimeoutError):
            raise  # Redis is down: the runtime waits for it and the proposal is handled again
        except Exception as exc:
            if not self._publish_now(exc, entry):
                raise  # retried after STREAM_CLAIM_IDLE_MS
            self._publish_uncalibrated(proposal, entry, exc)
            return
        HEAT.set(float(reading.heat))
        calibration = calibrate(proposal, reading.bucket, self.settings.p26_kill_score_critical)
        self._publish(calibrated_proposal(proposal, reading, calibration), entry, reading)

    def _publish_now(self, exc: Exception, entry: Entry) -> bool:
        """Whether to publish uncalibrated rather than retry (see the module docstring): only a missing or stale
        snapshot is worth waiting for; any other failure to read heat (an unavailable account, a garbled input
        such as the equity high-water mark) would fail again the same way, so the exit goes on at once."""
        if not isinstance(exc, HeatUnavailable) or isinstance(exc, AccountUnavailable):
            return True
        return entry.deliveries >= self.settings.stream_max_deliveries

    def _publish_uncalibrated(self, proposal: HarvestProposal, entry: Entry, exc: Exception) -> None:
        self.log.warning("HEAT_UNAVAILABLE", proposal_id=proposal.proposal_id, symbol=proposal.symbol,
                         action=proposal.action.value, error=exc.__class__.__name__, detail=str(exc)[:200],
                         deliveries=entry.deliveries, mode=self.settings.p26_mode.value, published="uncalibrated")
        if self._publish(uncalibrated_proposal(proposal), entry, None):
            HEAT_UNAVAILABLE.inc()

    def _publish(self, calibrated: CalibratedProposal, entry: Entry, reading: HeatReading | None) -> bool:
        if not publish_once(self.r, calibrated):
            self._already(calibrated, entry)
            return False
        CALIBRATIONS.labels(original=calibrated.original_action.value, calibrated=calibrated.action.value).inc()
        self._log_compare(calibrated, reading, entry)
        return True

    def _already(self, proposal: HarvestProposal, entry: Entry) -> None:
        self.log.info("CALIBRATION_ALREADY_PUBLISHED", proposal_id=proposal.proposal_id, stream_id=entry.entry_id)

    def _log_compare(self, calibrated: CalibratedProposal, reading: HeatReading | None, entry: Entry) -> None:
        components = {} if reading is None else {"leverage": str(reading.leverage), "drawdown": str(reading.drawdown),
                                                  "concentration": str(reading.concentration)}
        self.log.info(
            COMPARE_EVENT, line=compare_line(calibrated), mode=self.settings.p26_mode.value,
            proposal_id=calibrated.proposal_id, symbol=calibrated.symbol, stream_id=entry.entry_id,
            proposal=calibrated.original_action.value, calibrated=calibrated.action.value,
            heat=str(calibrated.heat), heat_bucket=calibrated.heat_bucket.value, downgraded=calibrated.downgraded,
            reason=calibrated.calibration_reason, proposal_reason=calibrated.reason,
            kill_score=str(calibrated.kill_score), **components,
        )
