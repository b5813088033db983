"""Harvest and the apply layer on one Redis: what the apply layer decides of a rung's proposal (planned, skipped,
superseded) is what harvest acts on, and a proposal harvest superseded never becomes a plan."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from microservices.apply_layer.apply import ApplyLayer
from microservices.apply_layer.settings import ApplySettings
from microservices.harvest_proposal.harvester import Harvester
from microservices.harvest_proposal.settings import HarvestSettings
from shared import keys
from shared.modes import ApplyMode
from shared.proposals import SUPERSEDED
from shared.runtime.consumer import Entry, Rejected
from shared.schema import Action, HarvestProposal, Plan
from tests.harvest_proposal.test_harvest_cycle import Clock, proposals, see, write_ledger

MARK_1R = "88880"


class Fleet:
    """Harvest, and an apply layer that handles each proposal harvest publishes as it appears."""

    def __init__(self, r, access, clock: Clock):
        self.r, self.access, self.clock = r, access, clock
        self.harvester = Harvester(r, HarvestSettings(), clock)
        self.handled = 0
        self.symbol = "BTCUSDT"
        self.apply_layer = self.with_apply(apply_kill_switch="false")

    def with_apply(self, **values: str) -> ApplyLayer:
        self.apply_layer = ApplyLayer(self.r, self.access.filters,
                                      ApplySettings(apply_mode=ApplyMode.DRY_RUN, **values), self.clock)
        return self.apply_layer

    def run(self, seconds: int, amount: str = "0.01", handle: bool = True) -> None:
        for _ in range(seconds):
            self.clock.now_ms += 1000
            see(self.r, self.clock, MARK_1R, amount=amount, symbol=self.symbol)
            self.harvester.tick()
            if handle:
                self.handle_new()

    def handle_new(self) -> None:
        entries = self.r.xrange(keys.Stream.HARVEST_PROPOSAL)[self.handled:]
        for entry_id, fields in entries:
            try:
                self.apply_layer.handle(HarvestProposal.from_fields(fields), Entry(keys.Stream.HARVEST_PROPOSAL,
                                                                                   entry_id, fields, 1))
            except Rejected:
                pass  # the consumer dead-letters it
        self.handled += len(entries)


def plans(r) -> list[Plan]:
    return [Plan.from_fields(fields) for _, fields in r.xrange(keys.Stream.APPLY_PLAN)]


@pytest.fixture
def fleet(r, access) -> Fleet:
    write_ledger(r)
    return Fleet(r, access, Clock())


def test_a_rung_skipped_under_the_apply_kill_switch_is_proposed_again_and_planned_once_it_is_off(fleet, r) -> None:
    """Before, the skipped proposal was dropped and the rung, marked done when published, never came again."""
    fleet.with_apply(apply_kill_switch="true")
    fleet.run(10)
    fleet.with_apply(apply_kill_switch="false")
    fleet.run(30)

    first, second = proposals(r)
    [plan] = plans(r)
    assert first.action is second.action is Action.PARTIAL_25
    assert r.get(keys.apply_proposal(first.proposal_id)) == "skipped apply_kill_switch"
    assert plan.proposal_id == second.proposal_id and plan.qty == D("0.002")


def test_a_rung_whose_fraction_is_below_one_step_is_given_up(fleet, r) -> None:
    with capture_logs() as logs:
        fleet.run(120, amount="0.002")  # 25 % of 0.002 BTC is below the 0.001 step

    assert len(proposals(r)) == 1 and plans(r) == []
    assert [line["reason"] for line in logs if line["event"] == "RUNG_GIVEN_UP"] == ["fraction_below_one_step"]


def test_a_rung_on_a_symbol_without_trading_rules_is_refused_once_and_given_up(fleet, r) -> None:
    """Found in review: the apply layer refused it (unknown_symbol) without deciding it, so harvest superseded and
    proposed the rung again every 30 s, a dead letter each time."""
    write_ledger(r, symbol="NOSUCHUSDT")
    fleet.symbol = "NOSUCHUSDT"

    with capture_logs() as logs:
        fleet.run(120)

    assert len(proposals(r)) == 1 and plans(r) == []
    assert [line["reason"] for line in logs if line["event"] == "RUNG_GIVEN_UP"] == ["unknown_symbol"]


def superseded_count() -> float:
    return REGISTRY.get_sample_value("quantum_apply_proposals_total", {"outcome": "superseded"}) or 0.0


def test_a_proposal_superseded_while_held_upstream_never_becomes_a_plan(fleet, r) -> None:
    """The heat gate (P26_MODE=enforce) or the apply layer down past HARVEST_REPROPOSE_SEC: harvest retires the
    proposal and proposes the rung again; when the backlog is read, only the successor becomes a plan."""
    before = superseded_count()
    fleet.run(31, handle=False)

    with capture_logs() as logs:
        fleet.handle_new()

    first, second = proposals(r)
    [plan] = plans(r)
    assert r.get(keys.apply_proposal(first.proposal_id)) == SUPERSEDED
    assert plan.proposal_id == second.proposal_id
    assert [line["event"] for line in logs] == ["PROPOSAL_SUPERSEDED", "PLAN_PUBLISHED"]
    assert superseded_count() == before + 1


def test_a_proposal_read_again_after_its_age_is_a_duplicate_not_a_dead_letter(fleet, r) -> None:
    """A redelivery (the apply layer restarted before its ack) of a proposal already planned is counted duplicate,
    even once it is older than APPLY_PROPOSAL_MAX_AGE_SEC: it was planned in time."""
    fleet.run(1)
    fleet.clock.now_ms += 120_000
    fleet.handled = 0

    with capture_logs() as logs:
        fleet.handle_new()

    assert [line["event"] for line in logs] == ["PLAN_ALREADY_PUBLISHED"]
    assert len(plans(r)) == 1
