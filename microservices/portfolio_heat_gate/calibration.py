"""Heat calibration of an exit proposal: a fixed table per bucket, and one safety rule.

    bucket  FULL_CLOSE_PROPOSED   PARTIAL_75            PARTIAL_50   PARTIAL_25
    COLD    PARTIAL_50            PARTIAL_50            PARTIAL_25   PARTIAL_25
    WARM    unchanged             unchanged             unchanged    unchanged
    HOT     FULL_CLOSE_PROPOSED   FULL_CLOSE_PROPOSED   PARTIAL_75   PARTIAL_50

A cold portfolio can afford to keep more of a position; a hot one sheds more.
Safety: a proposal whose reason is one of harvest's risk exits (stop_loss_hit, kill_score_critical),
or whose kill_score >= P26_KILL_SCORE_CRITICAL, is never downgraded (a HOT upgrade still applies):
harvest's own reason counts whatever the two kill-score thresholds are set to. "downgraded" means
the calibrated action closes a smaller share than the proposal. When heat cannot be read, the proposal is published
as proposed, never downgraded, with calibration_reason=heat_unavailable (gate.py says when).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import Enum

from microservices.portfolio_heat_gate.heat import HeatReading
from shared.schema import Action, CalibratedProposal, HarvestProposal, HeatBucket

STOP_LOSS_HIT = "stop_loss_hit"  # harvest-proposal's reason for a hit stop (HarvestReason.STOP_LOSS_HIT)
KILL_SCORE_CRITICAL = "kill_score_critical"  # and for a critical kill score (HarvestReason.KILL_SCORE_CRITICAL)

TABLE: dict[HeatBucket, dict[Action, Action]] = {
    HeatBucket.COLD: {
        Action.FULL_CLOSE_PROPOSED: Action.PARTIAL_50,
        Action.CLOSE: Action.PARTIAL_50,
        Action.PARTIAL_75: Action.PARTIAL_50,
        Action.PARTIAL_50: Action.PARTIAL_25,
        Action.PARTIAL_25: Action.PARTIAL_25,
    },
    HeatBucket.WARM: {},
    HeatBucket.HOT: {
        Action.PARTIAL_75: Action.FULL_CLOSE_PROPOSED,
        Action.PARTIAL_50: Action.PARTIAL_75,
        Action.PARTIAL_25: Action.PARTIAL_50,
    },
}


class CalibrationReason(str, Enum):
    COLD_DOWNGRADE = "cold_downgrade"
    HOT_UPGRADE = "hot_upgrade"
    UNCHANGED = "unchanged"
    PROTECTED_STOP_LOSS = "protected_stop_loss"
    PROTECTED_KILL_SCORE = "protected_kill_score"
    HEAT_UNAVAILABLE = "heat_unavailable"


@dataclass(frozen=True)
class Calibration:
    action: Action
    downgraded: bool
    reason: CalibrationReason


def table_action(action: Action, bucket: HeatBucket) -> Action:
    return TABLE[bucket].get(action, action)


def protection(proposal: HarvestProposal, kill_score_critical: Decimal) -> CalibrationReason | None:
    """Why this proposal must not be downgraded, or None."""
    if proposal.reason == STOP_LOSS_HIT:
        return CalibrationReason.PROTECTED_STOP_LOSS
    if proposal.reason == KILL_SCORE_CRITICAL or proposal.kill_score >= kill_score_critical:
        return CalibrationReason.PROTECTED_KILL_SCORE
    return None


def calibrate(proposal: HarvestProposal, bucket: HeatBucket, kill_score_critical: Decimal) -> Calibration:
    original = proposal.action
    target = table_action(original, bucket)
    shrinks = target.close_fraction < original.close_fraction
    if shrinks:
        protected = protection(proposal, kill_score_critical)
        if protected is not None:
            return Calibration(original, False, protected)
        return Calibration(target, True, CalibrationReason.COLD_DOWNGRADE)
    if target.close_fraction > original.close_fraction:
        return Calibration(target, False, CalibrationReason.HOT_UPGRADE)
    return Calibration(original, False, CalibrationReason.UNCHANGED)


def calibrated_proposal(proposal: HarvestProposal, reading: HeatReading, calibration: Calibration) -> CalibratedProposal:
    """The proposal with the calibrated action; every other field, proposal_id included, is kept."""
    return CalibratedProposal(
        **proposal.model_dump(exclude={"action"}), action=calibration.action, original_action=proposal.action,
        heat=reading.heat, heat_bucket=reading.bucket, downgraded=calibration.downgraded,
        calibration_reason=calibration.reason.value,
    )


def uncalibrated_proposal(proposal: HarvestProposal) -> CalibratedProposal:
    """The proposal exactly as proposed, for when heat cannot be read: an exit is never held for it.

    heat 0 and bucket WARM are placeholders the schema requires (WARM is the bucket that changes
    nothing); calibration_reason=heat_unavailable is what says no heat was read.
    """
    return CalibratedProposal(
        **proposal.model_dump(exclude={"action"}), action=proposal.action, original_action=proposal.action,
        heat=Decimal(0), heat_bucket=HeatBucket.WARM, downgraded=False,
        calibration_reason=CalibrationReason.HEAT_UNAVAILABLE.value,
    )
