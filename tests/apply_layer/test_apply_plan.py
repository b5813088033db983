"""Exit proposals become one reduce-only plan each: opposite side, the action's fraction, rounded down."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from microservices.apply_layer.apply import Skip, plan_id_for, to_plan
from microservices.apply_layer.settings import ApplySettings
from shared.modes import ApplyMode
from shared.schema import Action, HarvestProposal, Side


def apply_settings(**values: str) -> ApplySettings:
    return ApplySettings(apply_mode=ApplyMode.DRY_RUN, **values)


def proposal(action: str, position_amt: str, symbol: str = "BTCUSDT") -> HarvestProposal:
    return HarvestProposal.from_fields({
        "proposal_id": f"hp-{action}", "symbol": symbol, "action": action, "kill_score": "0.539", "r_multiple": "1.2",
        "reason": "tp_ladder_1.0R", "position_amt": position_amt, "entry_price": "88000", "mark_price": "90000",
    })


@pytest.mark.parametrize(
    ("action", "amount", "side", "qty"),
    [
        ("FULL_CLOSE_PROPOSED", "0.013", Side.SELL, D("0.013")),
        ("PARTIAL_75", "0.013", Side.SELL, D("0.009")),
        ("PARTIAL_50", "-0.013", Side.BUY, D("0.006")),
        ("PARTIAL_25", "0.013", Side.SELL, D("0.003")),
    ],
)
def test_a_proposal_becomes_a_reduce_only_plan(access, action, amount, side, qty) -> None:
    plan = to_plan(proposal(action, amount), access.filters.get("BTCUSDT"), apply_settings())

    assert (plan.side, plan.qty, plan.reduce_only, plan.action) == (side, qty, True, Action(action))
    assert plan.plan_id == plan_id_for(f"hp-{action}") and plan.kill_score == D("0.539")


@pytest.mark.parametrize(
    ("settings", "amount", "reason"),
    [
        ({"apply_kill_switch": "true"}, "0.013", "apply_kill_switch"),
        ({}, "0", "no_position"),
        ({}, "0.002", "fraction_below_one_step"),
    ],
)
def test_proposals_that_cannot_become_a_plan_are_skipped_with_a_reason(access, settings, amount, reason) -> None:
    outcome = to_plan(proposal("PARTIAL_25", amount), access.filters.get("BTCUSDT"), apply_settings(**settings))

    assert outcome == Skip(reason)
