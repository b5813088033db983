"""Exits are never filtered by an allowlist: allowlists limit opens, and an exit of any held
position (one reconcile adopted, or on a symbol since dropped from a list) must become a plan."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from structlog.testing import capture_logs

from microservices.apply_layer.apply import ApplyLayer, Skip, plan_id_for, to_plan, wall_ms
from microservices.apply_layer.settings import ApplySettings
from shared import keys
from shared.runtime.consumer import Entry
from shared.modes import ApplyMode
from shared.schema import Action, HarvestProposal, Plan, Side


def apply_settings(**values: str) -> ApplySettings:
    return ApplySettings(**{"apply_mode": ApplyMode.DRY_RUN, **values})


def just_added() -> Entry:
    """The entry as Redis added it a moment ago: its id is its time (the proposals here carry no ts_ms)."""
    return Entry(keys.Stream.HARVEST_PROPOSAL, f"{wall_ms()}-0", {}, 1)


def proposal(symbol: str, action: str, position_amt: str) -> HarvestProposal:
    return HarvestProposal.from_fields({
        "proposal_id": f"hp-{symbol}-{action}", "symbol": symbol, "action": action, "kill_score": "0.9",
        "r_multiple": "-1.1", "reason": "stop_loss_hit", "position_amt": position_amt, "entry_price": "12.5",
        "mark_price": "11.2",
    })


@pytest.mark.parametrize(("allowlist", "symbol", "action", "amount", "side", "qty"), [
    ("ETHUSDT", "BTCUSDT", "PARTIAL_25", "0.013", Side.SELL, D("0.003")),
    ("BTCUSDT,ETHUSDT", "AVAXUSDT", "FULL_CLOSE_PROPOSED", "-37", Side.BUY, D("37")),
    ("BTCUSDT", "LINKUSDT", "PARTIAL_50", "20", Side.SELL, D("10")),
])
def test_an_exit_outside_the_apply_allowlist_becomes_a_plan(access, allowlist, symbol, action, amount, side, qty) -> None:
    settings = apply_settings(apply_allowlist=allowlist)

    plan = to_plan(proposal(symbol, action, amount), access.filters.get(symbol), settings)

    assert not isinstance(plan, Skip), plan
    assert (plan.symbol, plan.side, plan.qty, plan.reduce_only, plan.action) == (symbol, side, qty, True, Action(action))


def test_the_exit_is_published_on_apply_plan(r, access) -> None:
    layer = ApplyLayer(r, access.filters, apply_settings(apply_allowlist="BTCUSDT"))
    exit_proposal = proposal("AVAXUSDT", "FULL_CLOSE_PROPOSED", "37")

    layer.handle(exit_proposal, just_added())

    [(_, fields)] = r.xrange(keys.Stream.APPLY_PLAN)
    published = Plan.from_fields(fields)
    assert (published.plan_id, published.symbol, published.is_close) == (plan_id_for(exit_proposal.proposal_id),
                                                                          "AVAXUSDT", True)


def test_the_apply_kill_switch_still_stops_every_exit(access) -> None:
    outcome = to_plan(proposal("AVAXUSDT", "FULL_CLOSE_PROPOSED", "37"), access.filters.get("AVAXUSDT"),
                      apply_settings(apply_kill_switch="true"))

    assert outcome == Skip("apply_kill_switch")


@pytest.mark.parametrize(("own", "executor_mode", "forced", "event"), [
    ("dry_run", "TESTNET", None, "PLAN_PUBLISHED"),  # the executor sends: no 'dry run' in this log
    ("testnet", "DRY_RUN", None, "DRY_RUN_PLAN_PUBLISHED"),
    ("testnet", "TESTNET", "1", "DRY_RUN_PLAN_PUBLISHED"),  # the fleet-wide switch
    ("testnet", "TESTNET", "on", "DRY_RUN_PLAN_PUBLISHED"),  # read as the executor reads it (found in review)
    ("testnet", "TESTNET", "off", "PLAN_PUBLISHED"),
])
def test_the_published_event_says_dry_run_only_when_the_executor_runs_dry(r, access, own, executor_mode, forced,
                                                                         event) -> None:
    """Seen by review: the seed's rollback set APPLY_MODE=dry_run in apply-layer.env alone; this log then said
    DRY_RUN_PLAN_PUBLISHED while the executor, reading common.env, sent every plan."""
    r.set(keys.MODE, executor_mode)
    if forced:
        r.set(keys.FORCE_DRY_RUN, forced)
    layer = ApplyLayer(r, access.filters, apply_settings(apply_mode=own))

    with capture_logs() as logs:
        layer.handle(proposal("AVAXUSDT", "FULL_CLOSE_PROPOSED", "37"), just_added())

    assert [line["event"] for line in logs if line["event"].endswith("PUBLISHED")] == [event]
