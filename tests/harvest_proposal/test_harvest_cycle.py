"""Harvest cycles against a real Redis: one proposal per position state, published with its fields."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal as D

import pytest
from prometheus_client import REGISTRY, generate_latest
from structlog.testing import capture_logs

from microservices.harvest_proposal.harvester import Harvester
from microservices.harvest_proposal.settings import HarvestSettings
from shared import keys, proposals as fates, results, snapshot
from shared.ledger import LedgerPosition
from shared.proposals import plan_id_for
from shared.schema import Action, HarvestProposal, PlanResult, Side
from shared.snapshot import ExchangeSnapshot, PositionState

T0 = 1_769_000_000_000
ENTRY = D("88000")
STOP = D("87120")  # 1R = 880


class Clock:
    def __init__(self, now_ms: int = T0):
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def harvester(r, clock) -> Harvester:
    return Harvester(r, HarvestSettings(), clock)


def see(r, clock: Clock, mark: D | str, amount: str = "0.01", entry: D = ENTRY, symbol: str = "BTCUSDT") -> None:
    """Publish the snapshot the position-state brain would: one position, its mark, fetched now."""
    positions = {symbol: PositionState(symbol, D(amount), entry)} if D(amount) else {}
    snapshot.publish(r, ExchangeSnapshot(clock.now_ms, positions, {symbol: D(mark)}))


def write_ledger(r, stop: D = STOP, amount: str = "0.01", entry: D = ENTRY, symbol: str = "BTCUSDT") -> None:
    position = LedgerPosition(symbol, D(amount), entry, stop_loss=stop, take_profit=D("90640"), leverage=D("5"))
    r.hset(keys.position_ledger(symbol), mapping=position.to_hash())


def proposals(r) -> list[HarvestProposal]:
    return [HarvestProposal.from_fields(fields) for _, fields in r.xrange(keys.Stream.HARVEST_PROPOSAL)]


def end_plans(r, outcome: str = results.EXECUTED) -> None:
    """What the apply layer and the executor do: plan each proposal not decided yet, and end its plan with `outcome`
    (executed, or the reason it did not), through the executor's own FINISH."""
    for proposal in proposals(r):
        if r.set(keys.apply_proposal(proposal.proposal_id), fates.PLANNED, nx=True):
            end_plans_of(r, proposal, outcome)


def end_plans_of(r, proposal: HarvestProposal, outcome: str = results.EXECUTED) -> None:
    executed = outcome == results.EXECUTED
    results.finish_plan(r, PlanResult(
        plan_id=plan_id_for(proposal.proposal_id), executed=executed, symbol=proposal.symbol, side=Side.SELL,
        qty=D("0.0025"), reduce_only=True, source="apply_layer", order_id="1" if executed else None,
        reason=None if executed else outcome))


def run_at(harvester: Harvester, r, clock: Clock, mark: str, times: int = 2, outcome: str | None = results.EXECUTED,
           **position) -> None:
    """`times` cycles, a second apart, at `mark`; after each, every new plan ends with `outcome` (None: no plan)."""
    for _ in range(times):
        clock.now_ms += 1000
        see(r, clock, D(mark), **position)
        harvester.tick()
        if outcome is not None:
            end_plans(r, outcome)


def test_one_tick_publishes_the_expected_proposal(r, clock, harvester) -> None:
    write_ledger(r)
    see(r, clock, "88880")

    harvester.tick()

    [proposal] = proposals(r)
    assert (proposal.symbol, proposal.action, proposal.reason) == ("BTCUSDT", Action.PARTIAL_25, "tp_ladder_1.0R")
    assert (proposal.r_multiple, proposal.kill_score) == (D("1"), D("0"))
    assert (proposal.position_amt, proposal.entry_price, proposal.mark_price) == (D("0.01"), ENTRY, D("88880"))
    assert (proposal.state, proposal.ts_ms) == ("BTCUSDT:LONG:88000", T0)
    assert len(proposal.proposal_id) == 32


def test_price_rising_through_1r_2r_3r_proposes_each_rung_once(r, clock, harvester) -> None:
    write_ledger(r)

    for mark in ("88000", "88880", "89000", "89760", "90000", "90640", "91000", "90000"):
        run_at(harvester, r, clock, mark)

    assert [(p.action, p.reason) for p in proposals(r)] == [
        (Action.PARTIAL_25, "tp_ladder_1.0R"), (Action.PARTIAL_50, "tp_ladder_2.0R"), (Action.PARTIAL_75, "tp_ladder_3.0R"),
    ]
    assert len({p.proposal_id for p in proposals(r)}) == 3


def test_the_same_situation_twice_gives_one_proposal(r, clock, harvester) -> None:
    write_ledger(r)

    run_at(harvester, r, clock, "88880", times=5)
    Harvester(r, HarvestSettings(), clock).tick()  # a restarted daemon remembers too

    assert len(proposals(r)) == 1


def test_crossing_several_rungs_at_once_proposes_the_highest_and_marks_the_lower_done(r, clock, harvester) -> None:
    write_ledger(r)

    run_at(harvester, r, clock, "90200")  # 2.5R
    run_at(harvester, r, clock, "88900")  # back above 1R: rung 1 is done
    run_at(harvester, r, clock, "90700")

    assert [p.action for p in proposals(r)] == [Action.PARTIAL_50, Action.PARTIAL_75]


def test_a_partial_close_does_not_rearm_the_rungs(r, clock, harvester) -> None:
    write_ledger(r)
    run_at(harvester, r, clock, "88880")

    write_ledger(r, amount="0.0075")
    run_at(harvester, r, clock, "88900", amount="0.0075")

    assert [p.action for p in proposals(r)] == [Action.PARTIAL_25]


@pytest.mark.parametrize("new_entry", [D("88100"), ENTRY])
def test_a_new_position_rearms_the_rungs_with_new_ids(r, clock, harvester, new_entry) -> None:
    write_ledger(r)
    run_at(harvester, r, clock, "88880")
    run_at(harvester, r, clock, "88880", amount="0")  # closed: flat in the snapshot

    write_ledger(r, entry=new_entry, stop=new_entry - 880)
    run_at(harvester, r, clock, str(new_entry + 880), entry=new_entry)

    first, second = proposals(r)
    assert first.action is second.action is Action.PARTIAL_25
    assert first.proposal_id != second.proposal_id


def test_a_stop_that_stays_hit_is_proposed_again_once_per_repropose_interval(r, clock, harvester) -> None:
    write_ledger(r)

    see(r, clock, "87000")
    harvester.tick()
    for _ in range(29):
        run_at(harvester, r, clock, "87000", times=1)
    assert len(proposals(r)) == 1
    run_at(harvester, r, clock, "87000", times=1)  # T0 + 30 s
    run_at(harvester, r, clock, "87000", times=5)

    first, second = proposals(r)
    assert first.action is second.action is Action.FULL_CLOSE_PROPOSED
    assert first.reason == second.reason == "stop_loss_hit"
    assert first.proposal_id != second.proposal_id
    assert second.ts_ms - first.ts_ms == 30_000


def test_a_short_stop_hit_without_ledger_uses_the_default_risk(r, clock, harvester) -> None:
    see(r, clock, "88880", amount="-0.01")

    harvester.tick()

    [proposal] = proposals(r)
    assert (proposal.action, proposal.reason, proposal.r_multiple) == (Action.FULL_CLOSE_PROPOSED, "stop_loss_hit", D("-1"))
    assert proposal.state == "BTCUSDT:SHORT:88000"


def test_a_stale_or_missing_snapshot_proposes_nothing(r, clock, harvester) -> None:
    harvester.tick()
    see(r, clock, "87000")
    clock.now_ms += 6_000

    harvester.tick()

    assert proposals(r) == []


def test_lifecycles_of_closed_positions_are_forgotten(r, clock, harvester) -> None:
    write_ledger(r)
    run_at(harvester, r, clock, "88000")
    assert r.exists(keys.harvest_position("BTCUSDT"))

    run_at(harvester, r, clock, "88000", amount="0")

    assert not r.exists(keys.harvest_position("BTCUSDT"))
    assert r.smembers(keys.HARVEST_TRACKED) == set()


def test_an_unreadable_ledger_falls_back_to_the_default_risk(r, clock, harvester) -> None:
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.01", "entry_price": "88000", "stop_loss": "bad"})
    positions = {s: PositionState(s, D("0.01"), D("100")) for s in ("BTCUSDT", "ETHUSDT")}
    snapshot.publish(r, ExchangeSnapshot(clock.now_ms, positions, {"BTCUSDT": D("101"), "ETHUSDT": D("101")}))

    harvester.tick()

    assert sorted((p.symbol, p.r_multiple) for p in proposals(r)) == [("BTCUSDT", D(1)), ("ETHUSDT", D(1))]


@pytest.mark.parametrize("bad_key", [
    lambda r, key: r.set(key, "0.01"),  # SET instead of HSET
    lambda r, key: r.rpush(key, "0.01"),
    lambda r, key: r.hset(key, mapping={"position_amt": "0,01", "entry_price": "88000"}),
])
def test_a_ledger_of_the_wrong_type_falls_back_to_the_default_risk_and_the_others_are_watched(r, clock, harvester,
                                                                                              bad_key) -> None:
    """Seen by review: a ledger key SET instead of HSET raised WRONGTYPE out of the tick; every position sorting
    after it got no exit, and the daemon ended (and crash-looped under systemd)."""
    bad_key(r, keys.position_ledger("AAAUSDT"))
    positions = {s: PositionState(s, D("0.01"), D("100")) for s in ("AAAUSDT", "BTCUSDT")}
    snapshot.publish(r, ExchangeSnapshot(clock.now_ms, positions, {"AAAUSDT": D("98.9"), "BTCUSDT": D("98.9")}))

    with capture_logs() as logs:
        harvester.tick()

    assert sorted((p.symbol, p.action, p.reason) for p in proposals(r)) == [
        ("AAAUSDT", Action.FULL_CLOSE_PROPOSED, "stop_loss_hit"), ("BTCUSDT", Action.FULL_CLOSE_PROPOSED, "stop_loss_hit")]
    [warning] = [line for line in logs if line["event"] == "ledger_unreadable"]
    assert (warning["symbol"], warning["risk"]) == ("AAAUSDT", "default")


def test_a_stale_or_missing_snapshot_is_exported_as_its_age_and_counted(r, clock, harvester) -> None:
    stale_before = REGISTRY.get_sample_value("quantum_harvest_stale_snapshot_cycles_total") or 0.0

    harvester.tick()  # no snapshot at all
    missing_age = REGISTRY.get_sample_value("quantum_harvest_snapshot_age_seconds")
    see(r, clock, "88000")
    clock.now_ms += 2_000
    harvester.tick()
    fresh_age = REGISTRY.get_sample_value("quantum_harvest_snapshot_age_seconds")
    clock.now_ms += 7_000
    harvester.tick()

    assert missing_age == float("inf") and fresh_age == 2.0
    assert REGISTRY.get_sample_value("quantum_harvest_snapshot_age_seconds") == 9.0
    assert REGISTRY.get_sample_value("quantum_harvest_stale_snapshot_cycles_total") == stale_before + 2


def proposed(action: str) -> float:
    return REGISTRY.get_sample_value("quantum_harvest_proposals_total", {"action": action}) or 0.0


def test_proposals_are_counted_and_the_exposition_passes_promtool(r, clock, harvester) -> None:
    before = proposed("PARTIAL_25")
    write_ledger(r)
    run_at(harvester, r, clock, "88880")

    assert proposed("PARTIAL_25") == before + 1
    assert REGISTRY.get_sample_value("quantum_harvest_positions_watched") == 1
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=generate_latest(REGISTRY).decode(),
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def rung_events(logs: list[dict]) -> list[tuple[str, str, str | None]]:
    return [(line["event"], line["rung"], line["reason"]) for line in logs if line["event"].startswith("RUNG_")]


@pytest.mark.parametrize("reason", ["reconcile_required_qty_mismatch", "stale_snapshot", "exchange_unavailable"])
def test_a_rung_refused_for_a_reason_that_clears_is_proposed_again_after_the_interval(r, clock, harvester,
                                                                                      reason) -> None:
    """Before, a rung was done once published: refused downstream (P3.3's mismatch, a stale snapshot, the exchange
    down), its take-profit was never proposed again in that position."""
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=reason)

    with capture_logs() as logs:
        run_at(harvester, r, clock, "88880", times=28)  # T0 + 29 s: within the interval
        held = proposals(r)
        run_at(harvester, r, clock, "88880", times=1)  # T0 + 30 s: the retry, which executes
        run_at(harvester, r, clock, "88880", times=40)

    first, second = proposals(r)
    assert len(held) == 1
    assert (first.action, second.action) == (Action.PARTIAL_25, Action.PARTIAL_25)
    assert second.proposal_id != first.proposal_id and second.ts_ms - first.ts_ms == 30_000
    assert rung_events(logs) == [("RUNG_RETRY", "1.0", reason), ("RUNG_SETTLED", "1.0", None)]


@pytest.mark.parametrize("reason", ["dry_run", "below_min_qty", "no_position"])
def test_a_rung_refused_for_a_reason_that_stays_is_given_up(r, clock, harvester, reason) -> None:
    write_ledger(r)

    with capture_logs() as logs:
        run_at(harvester, r, clock, "88880", times=90, outcome=reason)

    assert len(proposals(r)) == 1
    assert rung_events(logs) == [("RUNG_GIVEN_UP", "1.0", reason)]


def test_no_other_rung_is_proposed_while_one_is_in_flight(r, clock, harvester) -> None:
    """A partial is a fraction of the position its proposal saw: two in flight would close more than the ladder."""
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=None)
    r.set(keys.apply_proposal(proposals(r)[0].proposal_id), fates.PLANNED)  # planned; its result not yet written

    run_at(harvester, r, clock, "89760", times=60, outcome=None)  # 2R for a minute
    in_flight = len(proposals(r))
    end_plans_of(r, proposals(r)[0])
    run_at(harvester, r, clock, "89760", times=2)

    assert in_flight == 1
    assert [(p.action, p.position_amt) for p in proposals(r)] == [(Action.PARTIAL_25, D("0.01")),
                                                                   (Action.PARTIAL_50, D("0.01"))]


def test_a_rung_never_planned_is_superseded_then_proposed_again(r, clock, harvester) -> None:
    """Dead-lettered (proposal_expired) or held upstream past the interval: the old proposal is retired first, so
    it can never become a plan beside its successor."""
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=None)
    [first] = proposals(r)

    run_at(harvester, r, clock, "88880", times=30, outcome=None)

    first_again, second = proposals(r)
    assert first_again == first and second.proposal_id != first.proposal_id
    assert r.get(keys.apply_proposal(first.proposal_id)) == fates.SUPERSEDED
    assert r.get(keys.apply_proposal(second.proposal_id)) is None


def test_a_rung_planned_just_as_it_would_be_superseded_is_waited_for(r, clock, harvester, monkeypatch) -> None:
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=None)
    [first] = proposals(r)
    decide = fates.decide

    def planned_first(client, proposal_id, value):  # the apply layer's write lands between the read and this one
        client.set(keys.apply_proposal(proposal_id), fates.PLANNED, nx=True)
        return decide(client, proposal_id, value)

    monkeypatch.setattr(fates, "decide", planned_first)
    run_at(harvester, r, clock, "88880", times=40, outcome=None)
    monkeypatch.undo()
    end_plans_of(r, first)
    run_at(harvester, r, clock, "90640", times=2)

    assert [p.action for p in proposals(r)] == [Action.PARTIAL_25, Action.PARTIAL_75]
    assert r.get(keys.apply_proposal(first.proposal_id)) == fates.PLANNED


def test_a_plan_whose_outcome_is_unknown_settles_its_rung(r, clock, harvester) -> None:
    """An orphaned plan (shared.sending) may have filled: its rung is not proposed again, which could over-close."""
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=None)
    [first] = proposals(r)
    r.set(keys.apply_proposal(first.proposal_id), fates.PLANNED)
    r.set(keys.plan_result_marker(plan_id_for(first.proposal_id)), f"{T0} plan_entry_deleted")

    run_at(harvester, r, clock, "88880", times=60)

    assert len(proposals(r)) == 1
    assert r.hget(keys.harvest_position("BTCUSDT"), "rungs_done") == "1.0"


def test_rung_outcomes_are_counted(r, clock, harvester) -> None:
    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("quantum_harvest_rung_outcomes_total", {"outcome": outcome}) or 0.0

    before = {outcome: counted(outcome) for outcome in ("settled", "given_up", "retry")}
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome="stale_snapshot")
    run_at(harvester, r, clock, "88880", times=31)

    assert {outcome: counted(outcome) - before[outcome] for outcome in before} == {"settled": 1, "given_up": 0,
                                                                                    "retry": 1}


def test_a_rung_whose_markers_were_lost_is_not_proposed_again_once_the_position_shrank(r, clock, harvester) -> None:
    """Found in review: a Redis restarted from an older file keeps harvest's pending rung but loses the apply
    layer's marker and the result while the partial close did fill: read as never planned, it was proposed again."""
    write_ledger(r)
    run_at(harvester, r, clock, "88880", times=1, outcome=None)

    with capture_logs() as logs:
        run_at(harvester, r, clock, "88880", times=60, outcome=None, amount="0.0075")  # 25 % closed meanwhile

    [only] = proposals(r)
    assert r.get(keys.apply_proposal(only.proposal_id)) is None  # not superseded: if it ever comes, it is the one
    assert [(line["event"], line["position_reduced"]) for line in logs if line["event"].startswith("RUNG_")] == [
        ("RUNG_SETTLED", True)]
    assert r.hget(keys.harvest_position("BTCUSDT"), "rungs_done") == "1.0"
