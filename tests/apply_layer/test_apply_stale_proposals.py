"""A proposal too old to act on is dead-lettered (proposal_expired), never planned: after a P26_MODE switch the
apply layer's new group reads the other stream from its start, and an old stop-loss close must not reduce a new
position on the same side."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from microservices.apply_layer.apply import (
    PROPOSAL_EXPIRED,
    PROPOSAL_TIME_INVALID,
    ApplyLayer,
    check_fresh,
    wall_ms,
)
from microservices.apply_layer.settings import ApplySettings
from shared import keys
from shared.modes import ApplyMode, P26Mode
from shared.runtime.consumer import ConsumerConfig, Rejected, StreamConsumer
from shared.schema import CalibratedProposal, HarvestProposal, Plan
from shared.settings import EXIT_CONFIG, load_settings

NOW = 1_769_000_000_000
MAX_AGE_MS = 60_000
CALIBRATION = {"original_action": "FULL_CLOSE_PROPOSED", "heat": "0.1", "heat_bucket": "COLD", "downgraded": "false",
               "calibration_reason": "protected_stop_loss"}


def stop_loss_close(proposal_id: str, ts_ms: int | None) -> dict[str, str]:
    fields = {"proposal_id": proposal_id, "symbol": "BTCUSDT", "action": "FULL_CLOSE_PROPOSED", "kill_score": "0.8",
              "r_multiple": "-1", "reason": "stop_loss_hit", "position_amt": "0.013", "entry_price": "88000",
              "mark_price": "87120", "state": "BTCUSDT:LONG:88000"}
    return fields if ts_ms is None else {**fields, "ts_ms": str(ts_ms)}


@pytest.mark.parametrize(
    ("ts_ms", "entry_ms", "refused"),
    [
        (NOW, NOW, None),
        (NOW - MAX_AGE_MS, NOW, None),  # exactly the maximum age still passes
        (NOW - MAX_AGE_MS - 1, NOW, PROPOSAL_EXPIRED),
        (NOW - 72 * 3600 * 1000, NOW - 72 * 3600 * 1000, PROPOSAL_EXPIRED),  # a P26_MODE switch replaying 72 h
        (NOW - 120_000, NOW, PROPOSAL_EXPIRED),  # calibrated late (P2.6 retried it): ts_ms decides, not the entry
        (NOW + 5_000, NOW, None),  # a little clock skew between daemons
        (NOW + MAX_AGE_MS + 1, NOW, PROPOSAL_TIME_INVALID),
        (NOW * 1000, NOW, PROPOSAL_TIME_INVALID),  # microseconds: would never expire
        (None, NOW - 1_000, None),  # an operator's XADD without ts_ms: its entry id is its time
        (None, NOW - 3_600_000, PROPOSAL_EXPIRED),
    ],
)
def test_a_proposal_is_refused_by_its_age(ts_ms, entry_ms, refused) -> None:
    proposal = HarvestProposal.from_fields(stop_loss_close("hp-1", ts_ms))

    if refused is None:
        check_fresh(proposal, f"{entry_ms}-0", NOW, MAX_AGE_MS)
        return
    with pytest.raises(Rejected) as rejected:
        check_fresh(proposal, f"{entry_ms}-0", NOW, MAX_AGE_MS)
    assert rejected.value.reason == refused
    assert rejected.value.detail["measured_from"] == ("entry_id" if ts_ms is None else "ts_ms")


def run_apply_layer(r, access, mode: P26Mode, now_ms: int, **settings) -> None:
    layer = ApplyLayer(r, access.filters, ApplySettings(apply_mode=ApplyMode.DRY_RUN, p26_mode=mode, **settings),
                       clock=lambda: now_ms)
    parse = CalibratedProposal.from_fields if mode is P26Mode.ENFORCE else HarvestProposal.from_fields
    config = ConsumerConfig(stream=mode.input_stream, group=keys.Group.APPLY_LAYER, consumer="test-apply-layer",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, parse, layer.handle).run(burst=True)


def expired_count() -> float:
    return REGISTRY.get_sample_value("quantum_apply_proposals_total", {"outcome": PROPOSAL_EXPIRED}) or 0.0


def test_switching_to_enforce_does_not_replay_old_calibrated_exits(r, access) -> None:
    """Seen by review: the new group on harvest.calibrated started at 0 and planned every exit of the last 72 h."""
    now = wall_ms()
    r.xadd(keys.Stream.HARVEST_CALIBRATED, {**stop_loss_close("hp-yesterday", now - 86_400_000), **CALIBRATION})
    r.xadd(keys.Stream.HARVEST_CALIBRATED, {**stop_loss_close("hp-now", now - 500), **CALIBRATION})
    before = expired_count()

    run_apply_layer(r, access, P26Mode.ENFORCE, now)

    [(_, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    [(_, planned)] = r.xrange(keys.Stream.APPLY_PLAN)
    assert (dead["reason"], json.loads(dead["fields"])["proposal_id"]) == (PROPOSAL_EXPIRED, "hp-yesterday")
    assert json.loads(dead["detail"])["age_ms"] == str(86_400_000)
    assert Plan.from_fields(planned).proposal_id == "hp-now"
    assert expired_count() == before + 1
    assert r.xpending(keys.Stream.HARVEST_CALIBRATED, keys.Group.APPLY_LAYER)["pending"] == 0


def test_an_old_entry_without_ts_ms_is_refused_by_its_entry_id(r, access) -> None:
    now = wall_ms()
    r.xadd(keys.Stream.HARVEST_PROPOSAL, stop_loss_close("operator-old", None), id=f"{now - 3_600_000}-0")

    run_apply_layer(r, access, P26Mode.SHADOW, now)

    [(_, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    assert (dead["reason"], json.loads(dead["detail"])["measured_from"]) == (PROPOSAL_EXPIRED, "entry_id")
    assert r.xlen(keys.Stream.APPLY_PLAN) == 0


@pytest.mark.parametrize(("max_age", "late_ms", "planned"), [("60", 59_000, 1), ("60", 61_000, 0), ("120", 61_000, 1)])
def test_the_maximum_age_is_a_setting_measured_on_the_injected_clock(r, access, max_age, late_ms, planned) -> None:
    now = wall_ms()
    r.xadd(keys.Stream.HARVEST_PROPOSAL, stop_loss_close("hp-late", now))

    run_apply_layer(r, access, P26Mode.SHADOW, now + late_ms, apply_proposal_max_age_sec=max_age)

    assert r.xlen(keys.Stream.APPLY_PLAN) == planned
    assert r.xlen(keys.Stream.DEAD_LETTER) == 1 - planned


def test_the_default_maximum_age_outlasts_harvests_repropose_interval() -> None:
    from microservices.harvest_proposal.settings import HarvestSettings

    settings = ApplySettings(apply_mode=ApplyMode.DRY_RUN)

    assert settings.apply_proposal_max_age_sec == 60
    assert settings.apply_proposal_max_age_sec > HarvestSettings().harvest_repropose_sec


@pytest.mark.parametrize("value", ["0", "-5", "soon", "nan", "7200"])
def test_a_bad_maximum_age_exits_2_naming_it(monkeypatch, capsys, value) -> None:
    monkeypatch.setenv("APPLY_MODE", "dry_run")
    monkeypatch.setenv("APPLY_PROPOSAL_MAX_AGE_SEC", value)

    with pytest.raises(SystemExit) as exited:
        load_settings(ApplySettings)

    lines = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == EXIT_CONFIG
    assert len(lines) == 1 and lines[0].startswith("configuration error: APPLY_PROPOSAL_MAX_AGE_SEC"), lines
