"""A proposal that can never become a reduce-only plan is bad input: dead-lettered on its first delivery,
with the reason, and the next proposal still becomes a plan (real Redis, the apply layer's own consumer)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from microservices.apply_layer.apply import ApplyLayer
from microservices.apply_layer.settings import ApplySettings
from shared import keys
from shared.modes import ApplyMode, P26Mode
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.schema import CalibratedProposal, HarvestProposal, Plan

CALIBRATION = {"original_action": "OPEN", "heat": "0.2", "heat_bucket": "COLD", "downgraded": "false",
               "calibration_reason": "cold_portfolio"}


def proposal_fields(proposal_id: str, action: str) -> dict[str, str]:
    return {"proposal_id": proposal_id, "symbol": "BTCUSDT", "action": action, "kill_score": "0.9",
            "r_multiple": "-1.1", "reason": "stop_loss_hit", "position_amt": "0.013", "entry_price": "88000",
            "mark_price": "87000"}


def run_apply_layer(r, access, mode: P26Mode, parse: Callable) -> None:
    """One pass of the daemon's loop; a failure that is retried stays pending (claimed only after a minute)."""
    layer = ApplyLayer(r, access.filters, ApplySettings(apply_mode=ApplyMode.DRY_RUN, p26_mode=mode))
    config = ConsumerConfig(stream=mode.input_stream, group=keys.Group.APPLY_LAYER, consumer="test-apply-layer",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, parse, layer.handle).run(burst=True)


@pytest.mark.parametrize(
    ("mode", "parse", "extra"),
    [
        (P26Mode.SHADOW, HarvestProposal.from_fields, {}),
        (P26Mode.ENFORCE, CalibratedProposal.from_fields, CALIBRATION),
    ],
    ids=["shadow-harvest-proposal", "enforce-calibrated-proposal"],
)
def test_an_open_proposal_is_dead_lettered_at_once_and_the_next_one_is_planned(r, access, mode, parse, extra) -> None:
    r.xadd(mode.input_stream, {**proposal_fields("hp-open", "OPEN"), **extra})
    r.xadd(mode.input_stream, {**proposal_fields("hp-close", "FULL_CLOSE_PROPOSED"), **extra})

    run_apply_layer(r, access, mode, parse)

    [(_, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    [(_, planned)] = r.xrange(keys.Stream.APPLY_PLAN)
    assert (dead["reason"], json.loads(dead["fields"])["proposal_id"]) == ("not_an_exit_action", "hp-open")
    assert "OPEN cannot become a reduce-only plan" in dead["detail"]
    assert Plan.from_fields(planned).proposal_id == "hp-close"
    assert r.xpending(mode.input_stream, keys.Group.APPLY_LAYER)["pending"] == 0
