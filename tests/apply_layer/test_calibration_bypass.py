"""P26_MODE=enforce with no calibrated copy in time: the proposal is planned as proposed, once, on a real Redis."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from microservices.apply_layer.apply import ApplyLayer
from microservices.apply_layer.bypass import CalibrationBypass
from microservices.apply_layer.settings import ApplySettings
from microservices.portfolio_heat_gate.calibration import uncalibrated_proposal
from microservices.portfolio_heat_gate.gate import publish_once
from shared import keys
from shared.modes import ApplyMode, P26Mode
from shared.proposals import plan_id_for
from shared.runtime.consumer import Entry
from shared.schema import CalibratedProposal, HarvestProposal, Plan

WAIT_MS = 15_000
MAX_AGE_MS = 60_000


class Clock:
    def __init__(self, now_ms: int):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def propose(r, proposal_id: str, at_ms: int, **fields: str) -> str:
    """XADD a stop-loss full close as harvest would, with the entry id of `at_ms`."""
    return r.xadd(keys.Stream.HARVEST_PROPOSAL, {
        "proposal_id": proposal_id, "symbol": "BTCUSDT", "action": "FULL_CLOSE_PROPOSED", "kill_score": "0.9",
        "r_multiple": "-1.1", "reason": "stop_loss_hit", "position_amt": "0.01", "entry_price": "88000",
        "mark_price": "87000", "ts_ms": str(at_ms), **fields}, id=f"{at_ms}-0")


def gate_publishes(r, entry_id: str) -> None:
    """The heat gate's copy of the proposal (as it publishes one it could not calibrate), with its marker."""
    [(_, fields)] = r.xrange(keys.Stream.HARVEST_PROPOSAL, entry_id, entry_id)
    publish_once(r, uncalibrated_proposal(HarvestProposal.from_fields(fields)))


def plans(r) -> list[Plan]:
    return [Plan.from_fields(fields) for _, fields in r.xrange(keys.Stream.APPLY_PLAN)]


def bypassed() -> float:
    return REGISTRY.get_sample_value("quantum_apply_calibration_bypassed_total") or 0.0


@pytest.fixture
def clock(r) -> Clock:
    seconds, micros = r.time()
    return Clock(seconds * 1000 + micros // 1000)


@pytest.fixture
def layer(r, access, clock) -> ApplyLayer:
    settings = ApplySettings(apply_mode=ApplyMode.DRY_RUN, p26_mode=P26Mode.ENFORCE)
    return ApplyLayer(r, access.filters, settings, clock)


@pytest.fixture
def bypass(r, layer, clock) -> CalibrationBypass:
    return CalibrationBypass(r, layer, WAIT_MS, MAX_AGE_MS, clock)


def test_a_proposal_not_calibrated_in_time_is_planned_as_proposed_once(r, clock, bypass) -> None:
    """Before, a stopped heat gate held back every automated exit in enforce mode, stop-loss hits included."""
    before = bypassed()
    propose(r, "waited", clock.now_ms - WAIT_MS)
    propose(r, "young", clock.now_ms - WAIT_MS + 1)

    with capture_logs() as logs:
        planned = bypass.tick()
        clock.now_ms += 1_000
        again = bypass.tick()

    waited, young = plans(r)
    assert (planned, again) == (1, 1)  # the young one a second later, the waited one not twice
    assert (waited.proposal_id, young.proposal_id) == ("waited", "young")
    assert waited.qty == D("0.01") and waited.reduce_only
    assert [line["proposal_id"] for line in logs if line["event"] == "P26_BYPASSED"] == ["waited", "young"]
    assert bypassed() == before + 2


def test_a_proposal_calibrated_or_decided_is_left_alone(r, clock, bypass) -> None:
    calibrated_id = propose(r, "calibrated", clock.now_ms - 20_000)
    propose(r, "decided", clock.now_ms - 20_000 + 1)
    gate_publishes(r, calibrated_id)
    r.set(keys.apply_proposal("decided"), "skipped apply_kill_switch")

    with capture_logs() as logs:
        assert bypass.tick() == 0

    assert plans(r) == [] and [line for line in logs if line["event"] == "P26_BYPASSED"] == []


def test_the_calibrated_copy_arriving_after_the_bypass_is_a_duplicate(r, clock, bypass, layer) -> None:
    entry_id = propose(r, "late-gate", clock.now_ms - 20_000)
    bypass.tick()
    gate_publishes(r, entry_id)
    [(late_id, late_fields)] = r.xrange(keys.Stream.HARVEST_CALIBRATED)

    with capture_logs() as logs:
        layer.handle(CalibratedProposal.from_fields(late_fields), Entry(keys.Stream.HARVEST_CALIBRATED, late_id,
                                                                        late_fields, 1))

    assert [plan.plan_id for plan in plans(r)] == [plan_id_for("late-gate")]
    assert [line["event"] for line in logs] == ["PLAN_ALREADY_PUBLISHED"]


def test_entries_older_than_the_maximum_age_at_start_are_not_looked_at(r, clock, bypass) -> None:
    propose(r, "ancient", clock.now_ms - MAX_AGE_MS - 1)

    assert bypass.tick() == 0
    assert plans(r) == [] and r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_an_entry_that_does_not_parse_is_left_to_the_gate_and_the_next_is_planned(r, clock, bypass) -> None:
    propose(r, "garbled", clock.now_ms - 20_000, position_amt="lots")
    propose(r, "sound", clock.now_ms - 20_000 + 1)

    assert bypass.tick() == 1
    assert [plan.proposal_id for plan in plans(r)] == ["sound"] and r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_a_refused_proposal_is_said_and_not_dead_lettered_here(r, clock, bypass) -> None:
    propose(r, "not-an-exit", clock.now_ms - 20_000, action="OPEN")

    with capture_logs() as logs:
        assert bypass.tick() == 0

    assert [(line["event"], line["reason"]) for line in logs if line["event"] == "P26_BYPASS_REFUSED"] == [
        ("P26_BYPASS_REFUSED", "not_an_exit_action")]
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_the_wait_must_be_below_the_maximum_age() -> None:
    with pytest.raises(ValueError, match="APPLY_CALIBRATION_WAIT_SEC"):
        ApplySettings(apply_mode=ApplyMode.DRY_RUN, apply_calibration_wait_sec=60, apply_proposal_max_age_sec=60)


def test_an_entry_that_fails_the_same_way_each_time_is_said_once_and_the_next_is_planned(r, clock, bypass) -> None:
    """Found in review: WRONGTYPE on one proposal's marker (an operator's HSET) was re-raised with the cursor held,
    so that entry failed every second and no later one was ever looked at."""
    propose(r, "wrong-type", clock.now_ms - 20_000)
    propose(r, "sound", clock.now_ms - 20_000 + 1)
    r.hset(keys.apply_proposal("wrong-type"), "by", "hand")

    with capture_logs() as logs:
        first = bypass.tick()
        clock.now_ms += 1_000
        second = bypass.tick()

    assert (first, second) == (1, 0)
    assert [plan.proposal_id for plan in plans(r)] == ["sound"]
    assert [line["proposal_id"] for line in logs if line["event"] == "P26_BYPASS_FAILED"] == ["wrong-type"]


def test_the_wait_is_measured_by_redis_s_clock_the_one_entry_ids_carry(r, layer, monkeypatch) -> None:
    """Found in review: by this host's clock, a Redis on another host whose clock is behind would have every entry
    look old enough at once, and no exit would wait for its calibration."""
    seconds, micros = r.time()
    propose(r, "just-now", seconds * 1000 + micros // 1000 - 1_000)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 30)  # this host 30 s ahead of Redis
    bypass = CalibrationBypass(r, layer, WAIT_MS, MAX_AGE_MS)  # the default clock

    assert bypass.tick() == 0 and plans(r) == []


def test_a_proposal_sent_as_json_is_told_by_its_own_id(r, clock, bypass) -> None:
    """Found in review: the markers were looked up by the flat proposal_id field, empty for a JSON payload: every
    JSON proposal looked undecided, and one already calibrated and planned was bypassed again (a false alert)."""
    import json

    entry_id = r.xadd(keys.Stream.HARVEST_PROPOSAL, {"payload": json.dumps({
        "proposal_id": "as-json", "symbol": "BTCUSDT", "action": "FULL_CLOSE_PROPOSED", "kill_score": "0.9",
        "r_multiple": "-1.1", "reason": "stop_loss_hit", "position_amt": "0.01", "entry_price": "88000",
        "mark_price": "87000", "ts_ms": clock.now_ms - 20_000})}, id=f"{clock.now_ms - 20_000}-0")
    gate_publishes(r, entry_id)

    with capture_logs() as logs:
        assert bypass.tick() == 0

    assert [line for line in logs if line["event"] == "P26_BYPASSED"] == []


def test_an_entry_whose_parse_raises_anything_is_passed_and_the_next_is_planned(r, clock, bypass) -> None:
    """Found in review: a float Decimal cannot hold raised InvalidOperation, not EntryError; the cursor stayed on
    that entry and no exit after it was ever bypassed."""
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {"payload": '{"proposal_id": "huge", "kill_score": 1.5e99999999999999999999}'},
           id=f"{clock.now_ms - 20_000}-0")
    propose(r, "after-it", clock.now_ms - 20_000 + 1)

    assert bypass.tick() == 1
    assert [plan.proposal_id for plan in plans(r)] == ["after-it"]


def test_an_entry_with_a_field_given_twice_is_left_to_the_gate(r, clock, bypass) -> None:
    """Found in review: read through redis-py's xrange (a dict: the last value wins), an entry the gate dead-letters as
    duplicate_field was planned here 15 s later, with the larger of its two closes."""
    at_ms = clock.now_ms - 20_000
    r.execute_command("XADD", keys.Stream.HARVEST_PROPOSAL, f"{at_ms}-0", "proposal_id", "twice", "symbol", "BTCUSDT",
                      "action", "PARTIAL_25", "kill_score", "0.9", "r_multiple", "1.1", "reason", "tp", "position_amt",
                      "0.04", "entry_price", "88000", "mark_price", "89000", "ts_ms", str(at_ms),
                      "action", "FULL_CLOSE_PROPOSED")
    propose(r, "sound", at_ms + 1)

    assert bypass.tick() == 1
    assert [plan.proposal_id for plan in plans(r)] == ["sound"]


def test_a_proposal_decided_meanwhile_is_not_counted_as_bypassed(r, clock, bypass, layer, monkeypatch) -> None:
    """The gate's copy (or another apply layer) may decide the proposal between the look and the plan: that is no
    bypass, and the alert on the counter must not fire for it."""
    propose(r, "raced", clock.now_ms - 20_000)
    real = layer.handle

    def gate_first(proposal, entry):
        r.set(keys.apply_proposal(proposal.proposal_id), "1")  # planned from the calibrated copy just before
        return real(proposal, entry)

    monkeypatch.setattr(layer, "handle", gate_first)
    before = bypassed()

    with capture_logs() as logs:
        assert bypass.tick() == 0

    assert bypassed() == before and [line for line in logs if line["event"] == "P26_BYPASSED"] == []
