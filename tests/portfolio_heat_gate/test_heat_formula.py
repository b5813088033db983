"""Pure P2.6 parts: the heat formula, its buckets, the calibration table and the never-downgrade rule."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from microservices.harvest_proposal.decision import HarvestReason
from microservices.portfolio_heat_gate.calibration import CalibrationReason, calibrate, calibrated_proposal
from microservices.portfolio_heat_gate.gate import compare_line
from microservices.portfolio_heat_gate.heat import Exposure, bucket_for, exposure_from, portfolio_heat
from microservices.portfolio_heat_gate.settings import HeatGateSettings, P26Mode
from shared.schema import Action, HarvestProposal, HeatBucket
from shared.snapshot import ExchangeSnapshot, PositionState

SETTINGS = HeatGateSettings()
COLD, WARM, HOT = HeatBucket.COLD, HeatBucket.WARM, HeatBucket.HOT
FULL, P75, P50, P25 = Action.FULL_CLOSE_PROPOSED, Action.PARTIAL_75, Action.PARTIAL_50, Action.PARTIAL_25


@pytest.mark.parametrize(
    ("total", "largest", "equity", "hwm", "lev", "dd", "conc", "heat"),
    [
        ("0", "0", "10000", "10000", "0", "0", "0", "0"),
        ("10000", "5000", "10000", "10000", "0.2", "0", "0.5", "0.2"),  # 0.5*0.2 + 0.2*0.5
        ("50000", "50000", "10000", "10000", "1", "0", "1", "0.7"),
        ("100000", "50000", "10000", "10000", "1", "0", "0.5", "0.6"),  # leverage saturates at 5x
        ("10000", "2500", "9500", "10000", "0.2105", "0.5", "0.25", "0.3053"),  # 5% drawdown of a 10% budget
        ("10000", "10000", "8000", "10000", "0.25", "1", "1", "0.625"),
        ("118844", "20000", "13661", "13661", "1", "0", "0.1683", "0.5337"),  # the seed's 8.7x testnet portfolio
        ("100", "100", "0", "10000", "1", "1", "1", "1"),  # no equity left
    ],
)
def test_heat_formula(total, largest, equity, hwm, lev, dd, conc, heat) -> None:
    reading = portfolio_heat(Exposure(D(total), D(largest), D(equity), D(hwm)), SETTINGS)

    assert (reading.leverage, reading.drawdown, reading.concentration) == (D(lev), D(dd), D(conc))
    assert reading.heat == D(heat)


def test_heat_weights_and_limits_are_settings() -> None:
    settings = HeatGateSettings(p26_leverage_weight=D(1), p26_drawdown_weight=D(0), p26_concentration_weight=D(0),
                                p26_max_leverage=D(10))

    assert portfolio_heat(Exposure(D(50000), D(50000), D(10000), D(10000)), settings).heat == D("0.5")


def test_exposure_comes_from_the_snapshot_notionals() -> None:
    positions = {"BTCUSDT": PositionState("BTCUSDT", D("-0.1"), D("88000")), "ETHUSDT": PositionState("ETHUSDT", D("1"), D("3000"))}
    seen = ExchangeSnapshot(0, positions, {"BTCUSDT": D("90000"), "ETHUSDT": D("3100")})

    exposure = exposure_from(seen, D("10000"), D("9000"))

    assert exposure == Exposure(D("12100"), D("9000"), D("10000"), D("10000"))  # equity above the stored mark raises it


@pytest.mark.parametrize(
    ("heat", "bucket"),
    [("0", COLD), ("0.2499", COLD), ("0.25", WARM), ("0.6499", WARM), ("0.65", HOT), ("0.8825", HOT), ("1", HOT)],
)
def test_buckets(heat, bucket) -> None:
    assert bucket_for(D(heat), SETTINGS) is bucket


def test_bucket_edges_are_settings() -> None:
    settings = HeatGateSettings(p26_cold_max=D("0.1"), p26_warm_max=D("0.2"))

    assert [bucket_for(D(h), settings) for h in ("0.05", "0.15", "0.25")] == [COLD, WARM, HOT]


def test_warm_max_must_be_above_cold_max() -> None:
    with pytest.raises(ValueError, match="P26_COLD_MAX"):
        HeatGateSettings(p26_cold_max=D("0.5"), p26_warm_max=D("0.4"))


def test_mode_is_read_in_any_case(monkeypatch) -> None:
    monkeypatch.setenv("P26_MODE", "ENFORCE")

    assert HeatGateSettings().p26_mode is P26Mode.ENFORCE
    assert HeatGateSettings.model_fields["p26_mode"].default is P26Mode.SHADOW


def proposal(action: Action, reason: str = "tp_ladder_1.0R", kill_score: str = "0.3") -> HarvestProposal:
    return HarvestProposal(
        proposal_id="0123456789abcdef0123456789abcdef", symbol="BTCUSDT", action=action, kill_score=D(kill_score),
        r_multiple=D("1"), reason=reason, position_amt=D("0.01"), entry_price=D("88000"), mark_price=D("88880"),
        state="BTCUSDT:LONG:88000", ts_ms=1,
    )


@pytest.mark.parametrize(
    ("bucket", "original", "calibrated", "downgraded"),
    [
        (COLD, FULL, P50, True), (COLD, P75, P50, True), (COLD, P50, P25, True), (COLD, P25, P25, False),
        (WARM, FULL, FULL, False), (WARM, P75, P75, False), (WARM, P50, P50, False), (WARM, P25, P25, False),
        (HOT, FULL, FULL, False), (HOT, P75, FULL, False), (HOT, P50, P75, False), (HOT, P25, P50, False),
    ],
)
def test_calibration_table(bucket, original, calibrated, downgraded) -> None:
    # A ladder rung may be a full close: harvest's risk exits (protected) are tested below.
    result = calibrate(proposal(original, reason="tp_ladder_3.0R"), bucket, D("0.8"))

    assert (result.action, result.downgraded) == (calibrated, downgraded)


@pytest.mark.parametrize(
    ("reason", "kill_score", "why"),
    [
        ("stop_loss_hit", "0.8", CalibrationReason.PROTECTED_STOP_LOSS),
        ("stop_loss_hit", "0", CalibrationReason.PROTECTED_STOP_LOSS),
        ("kill_score_critical", "0.8", CalibrationReason.PROTECTED_KILL_SCORE),
        ("tp_ladder_2.0R", "0.95", CalibrationReason.PROTECTED_KILL_SCORE),
    ],
)
@pytest.mark.parametrize("action", [FULL, P75, P50])
def test_stops_and_critical_kill_scores_are_never_downgraded(reason, kill_score, why, action) -> None:
    result = calibrate(proposal(action, reason=reason, kill_score=kill_score), COLD, D("0.8"))

    assert (result.action, result.downgraded, result.reason) == (action, False, why)


@pytest.mark.parametrize("action", [FULL, P75, P50])
def test_harvests_critical_kill_score_is_protected_below_p26s_own_threshold(action) -> None:
    """Seen by review: with HARVEST_KILL_SCORE_CRITICAL (0.6) below P26_KILL_SCORE_CRITICAL (0.8), harvest's
    critical full close (kill_score 0.6) was halved in a COLD portfolio: protection went by P2.6's threshold only."""
    result = calibrate(proposal(action, reason="kill_score_critical", kill_score="0.6"), COLD, D("0.8"))

    assert (result.action, result.downgraded, result.reason) == (action, False, CalibrationReason.PROTECTED_KILL_SCORE)


def test_every_risk_exit_reason_of_harvest_is_protected() -> None:
    """Every reason harvest gives a full close for (all but the take-profit ladder) must survive a COLD portfolio."""
    risk_reasons = [reason.value for reason in HarvestReason if reason is not HarvestReason.TP_LADDER]

    kept = [calibrate(proposal(FULL, reason=reason, kill_score="0"), COLD, D("0.8")) for reason in risk_reasons]

    assert risk_reasons and all(result.action is FULL and not result.downgraded for result in kept), kept


def test_a_protected_proposal_is_still_upgraded_when_hot() -> None:
    result = calibrate(proposal(P50, kill_score="0.9"), HOT, D("0.8"))

    assert (result.action, result.reason) == (P75, CalibrationReason.HOT_UPGRADE)


def test_a_kill_score_just_below_critical_is_downgraded() -> None:
    assert calibrate(proposal(FULL, reason="kill_score_high", kill_score="0.7999"), COLD, D("0.8")).downgraded


def test_the_calibrated_proposal_keeps_the_id_and_the_compare_line_has_the_seed_format() -> None:
    original = proposal(P75)
    reading = portfolio_heat(Exposure(D("118844"), D("118844"), D("13661"), D("13661")), SETTINGS)

    calibrated = calibrated_proposal(original, reading, calibrate(original, reading.bucket, D("0.8")))

    assert calibrated.proposal_id == original.proposal_id
    assert calibrated.model_dump(exclude={"action", "original_action", "heat", "heat_bucket", "downgraded",
                                          "calibration_reason"}) == original.model_dump(exclude={"action"})
    assert compare_line(calibrated) == (
        "SHADOW-COMPARE: 01234567 | proposal=PARTIAL_75 vs calibrated=FULL_CLOSE_PROPOSED | "
        "heat=0.7000 HOT | downgraded=False reason=hot_upgrade"
    )
