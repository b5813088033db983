"""The exit path end to end: harvest → heat gate → apply layer → permits → executor, and reconcile,
with the simulator's price steered by the test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from decimal import Decimal as D

import pytest

from shared import keys, ledger
from shared.orders import client_order_id_for
from tests.e2e.fleet import ROOT

FLEET = ("position-state-brain", "governor", "intent-executor", "intent-bridge", "portfolio-heat-gate", "apply-layer",
         "harvest-proposal", "reconcile")
FAST = {"HARVEST_POLL_SEC": "0.2", "RECONCILE_INTERVAL_SEC": "0.5", "RECONCILE_GRACE_SEC": "2"}


def exchange_amount(sim, symbol: str) -> D:
    return sum((D(p["positionAmt"]) for p in sim.binance_client().futures_position_information(symbol=symbol)), D(0))


def wait_for(predicate, what: str, fleet, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + fleet._tails()
        time.sleep(0.05)


def exits(fleet, symbol: str) -> list[dict]:
    return [f for _, f in fleet.client.xrange(keys.Stream.APPLY_RESULT)
            if f.get("symbol") == symbol and f.get("reduceOnly") == "true" and f.get("source") == "apply_layer"]


def open_by_intent(fleet, sim, symbol: str, price: str, stop: str, size_usd: str = "180") -> D:
    sim.set_price(symbol, D(price))
    fleet.client.xadd(keys.Stream.TRADE_INTENT, {
        "symbol": symbol, "side": "BUY", "position_size_usd": size_usd, "leverage": "5", "entry_price": price,
        "stop_loss": stop, "confidence": "0.9", "timestamp": "2026-11-21T00:00:00Z"})
    return wait_for(lambda: exchange_amount(sim, symbol), f"{symbol} opened", fleet)


def test_an_intent_opens_partials_take_profit_up_the_ladder_and_the_stop_closes_the_rest(make_fleet, sim) -> None:
    fleet = make_fleet(**FAST).start(*FLEET)
    held = open_by_intent(fleet, sim, "TRXUSDT", "0.2966", "0.2900")  # risk 0.0066 per TRX
    assert held == D("606")

    for rung, price in enumerate(("0.3033", "0.3099", "0.3165"), start=1):
        sim.set_price("TRXUSDT", D(price))
        wait_for(lambda: len([e for e in exits(fleet, "TRXUSDT") if e["executed"] == "true"]) == rung, f"rung {rung}", fleet)
    after_ladder = exchange_amount(sim, "TRXUSDT")
    sim.set_price("TRXUSDT", D("0.2890"))
    wait_for(lambda: exchange_amount(sim, "TRXUSDT") == 0, "the stop to close the rest", fleet)

    filled = [D(e["filled_qty"]) for e in exits(fleet, "TRXUSDT") if e["executed"] == "true"]
    assert filled[:3] == [D("151"), D("227"), D("171")] and after_ladder == D("57")
    wait_for(lambda: ledger.read(fleet.client, "TRXUSDT") is None, "the ledger to be flat", fleet)


@pytest.mark.parametrize(("mode", "executed_qty"), [("shadow", D("303")), ("enforce", D("151"))])
def test_shadow_executes_the_proposal_and_enforce_the_calibrated_one(make_fleet, sim, mode, executed_qty) -> None:
    fleet = make_fleet(P26_MODE=mode, **FAST).start(*FLEET)
    open_by_intent(fleet, sim, "TRXUSDT", "0.2966", "0.2900")

    sim.set_price("TRXUSDT", D("0.3100"))  # straight past 2R: PARTIAL_50; a COLD portfolio calibrates it to PARTIAL_25
    closed = wait_for(lambda: [e for e in exits(fleet, "TRXUSDT") if e["executed"] == "true"], "the exit", fleet)

    assert D(closed[0]["filled_qty"]) == executed_qty
    compares = [json.loads(line) for line in fleet.log("portfolio-heat-gate").splitlines() if "SHADOW-COMPARE" in line]
    assert any("proposal=PARTIAL_50 vs calibrated=PARTIAL_25" in c.get("line", "") for c in compares), compares


def test_in_enforce_mode_a_stop_is_closed_while_the_heat_gate_is_stopped(make_fleet, sim) -> None:
    """Before, the apply layer read only harvest.calibrated in enforce mode: with the heat gate stopped (or
    crash-looping), no automated exit executed, stop-loss hits included."""
    without_gate = tuple(name for name in FLEET if name != "portfolio-heat-gate")
    fleet = make_fleet(P26_MODE="enforce", APPLY_CALIBRATION_WAIT_SEC="1", **FAST).start(*without_gate)
    open_by_intent(fleet, sim, "TRXUSDT", "0.2966", "0.2900")

    sim.set_price("TRXUSDT", D("0.2890"))  # below the stop
    wait_for(lambda: exchange_amount(sim, "TRXUSDT") == 0, "the stop to close", fleet)

    [closed] = [e for e in exits(fleet, "TRXUSDT") if e["executed"] == "true"]
    assert D(closed["filled_qty"]) == D("606")
    assert "P26_BYPASSED" in fleet.log("apply-layer")


def test_the_seed_mismatch_heals_on_its_own_and_the_next_close_executes(make_fleet, sim) -> None:
    fleet = make_fleet(**FAST).start(*FLEET)
    sim.binance_client().futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.062")
    fleet.client.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.002", "entry_price": "88000"})

    fleet.plan("held", "BTCUSDT", "SELL", "0.062", reduce_only="true")
    held = fleet.wait_result("held")
    healed = wait_for(lambda: ledger.read(fleet.client, "BTCUSDT").source == "reconcile", "the heal", fleet, timeout=10)
    fleet.plan("after-heal", "BTCUSDT", "SELL", "0.062", reduce_only="true")
    closed = fleet.wait_result("after-heal")

    assert held["reason"] == "reconcile_required_qty_mismatch"
    assert healed and closed["executed"] == "true" and closed["filled_qty"] == "0.062"
    assert exchange_amount(sim, "BTCUSDT") == 0
    assert fleet.client.xlen(keys.Stream.RECONCILE_EVENT) >= 1


def test_a_take_profit_rung_refused_downstream_is_proposed_again_and_executes(make_fleet, sim) -> None:
    """Before, a rung was done once published: refused by P3.3 (here the seed's ledger mismatch), its take-profit
    was never proposed again in that position."""
    fleet = make_fleet(HARVEST_REPROPOSE_SEC="3", **FAST).start(*FLEET)
    open_by_intent(fleet, sim, "TRXUSDT", "0.2966", "0.2900")
    wait_for(lambda: getattr(ledger.read(fleet.client, "TRXUSDT"), "amount", None) == D("606"), "the ledger", fleet)
    fleet.client.hset(keys.position_ledger("TRXUSDT"), "position_amt", "500")  # the stop and entry stay

    sim.set_price("TRXUSDT", D("0.3033"))  # 1R
    refused = wait_for(lambda: [e for e in exits(fleet, "TRXUSDT") if e["executed"] == "false"], "the refusal", fleet)
    executed = wait_for(lambda: [e for e in exits(fleet, "TRXUSDT") if e["executed"] == "true"], "the retry", fleet)

    assert refused[0]["reason"] == "reconcile_required_qty_mismatch"
    assert D(executed[0]["filled_qty"]) == D("151") and exchange_amount(sim, "TRXUSDT") == D("455")
    retried = [json.loads(line) for line in fleet.log("harvest-proposal").splitlines() if "RUNG_RETRY" in line]
    assert [(line["rung"], line["reason"]) for line in retried] == [("1.0", "reconcile_required_qty_mismatch")]


def test_a_position_opened_by_hand_on_the_exchange_is_adopted(make_fleet, sim) -> None:
    fleet = make_fleet(**FAST).start(*FLEET)

    sim.binance_client().futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.05")

    adopted = wait_for(lambda: ledger.read(fleet.client, "ETHUSDT"), "adoption", fleet, timeout=10)
    assert adopted.amount == D("-0.05") and adopted.source == "reconcile"


def test_a_proposal_read_twice_makes_one_plan_and_one_order(make_fleet, sim) -> None:
    fleet = make_fleet(**FAST).start("position-state-brain", "governor", "intent-executor", "apply-layer")
    fleet.plan("base", "TRXUSDT", "BUY", "606")
    fleet.wait_result("base")
    proposal = {"proposal_id": "operator-proposal-1", "symbol": "TRXUSDT", "action": "PARTIAL_50", "kill_score": "0.3",
                "r_multiple": "2.1", "reason": "tp_ladder_2.0R", "position_amt": "606", "entry_price": "0.2966",
                "mark_price": "0.31"}

    fleet.client.xadd(keys.Stream.HARVEST_PROPOSAL, proposal)
    fleet.client.xadd(keys.Stream.HARVEST_PROPOSAL, proposal)
    wait_for(lambda: exits(fleet, "TRXUSDT"), "the exit", fleet)
    time.sleep(1.0)

    plans = [f for _, f in fleet.client.xrange(keys.Stream.APPLY_PLAN) if f.get("proposal_id") == "operator-proposal-1"]
    assert len(plans) == 1 and len(exits(fleet, "TRXUSDT")) == 1
    assert len([o for o in sim.orders() if o["clientOrderId"] == client_order_id_for(plans[0]["plan_id"])]) == 1


def test_flatten_closes_every_position_while_opens_are_disabled(make_fleet, sim, redis_url) -> None:
    fleet = make_fleet().start("position-state-brain", "governor", "intent-executor")
    for plan_id, symbol, qty in (("f1", "BTCUSDT", "0.002"), ("f2", "ETHUSDT", "0.05"), ("f3", "TRXUSDT", "606")):
        fleet.plan(plan_id, symbol, "BUY", qty)
        assert fleet.wait_result(plan_id)["executed"] == "true"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    cli = [sys.executable, "-m", "shared.cli.main"]

    subprocess.run([*cli, "execution", "disable"], env=env, check=True, capture_output=True)
    time.sleep(1.5)  # let the snapshot show all three positions
    flattened = subprocess.run([*cli, "flatten", "--all"], env=env, capture_output=True, text=True, timeout=60)
    fleet.plan("refused-open", "BTCUSDT", "BUY", "0.002")

    assert flattened.returncode == 0, flattened.stdout + flattened.stderr
    assert "3/3 positions closed" in flattened.stdout
    assert all(exchange_amount(sim, s) == 0 for s in ("BTCUSDT", "ETHUSDT", "TRXUSDT"))
    assert fleet.wait_result("refused-open")["reason"] == "execution_disabled"


def test_flatten_refuses_when_halted(make_fleet, sim, redis_url) -> None:
    make_fleet().start("position-state-brain")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    cli = [sys.executable, "-m", "shared.cli.main"]

    subprocess.run([*cli, "kill", "on"], env=env, check=True, capture_output=True)
    refused = subprocess.run([*cli, "flatten", "--all"], env=env, capture_output=True, text=True, timeout=60)

    assert refused.returncode == 1 and "halted" in refused.stderr


def test_the_apply_kill_switch_says_at_start_that_it_holds_back_exits_only(make_fleet) -> None:
    """From a review: APPLY_KILL_SWITCH (the seed's switch of the layer that published every plan) stops only exits
    here, while the intent bridge's opens flow on: the daemon says so, and names the halt, rather than be taken for
    one."""
    fleet = make_fleet(APPLY_KILL_SWITCH="true").start("apply-layer")

    assert '"apply_kill_switch_stops_exits_only"' in fleet.log("apply-layer") and "quantum kill on" in fleet.log("apply-layer")


def test_flatten_closes_a_position_larger_than_one_market_order_over_rounds(make_fleet, sim, redis_url) -> None:
    """The executor cuts a close to one MARKET order's maxQty (120 BTC here): flatten goes on while a round closes
    something, so "close every position" holds for a position above it (it took one run per 120 BTC)."""
    sim.set_price("BTCUSDT", D("10"))  # 150 BTC worth 1,500 USDT: within the simulated account's margin
    fleet = make_fleet(GOV_MAX_NOTIONAL_PER_TRADE_USDT="10000", GOV_MAX_TOTAL_NOTIONAL_USDT="10000",
                       P33_OPEN_ON_POSITION="scale_in").start(
        "position-state-brain", "governor", "intent-executor")
    for plan_id, qty in (("big-1", "100"), ("big-2", "50")):
        fleet.plan(plan_id, "BTCUSDT", "BUY", qty)
        assert fleet.wait_result(plan_id)["executed"] == "true", fleet.results(plan_id)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}
    time.sleep(1.5)  # let the snapshot show the whole position

    flattened = subprocess.run([sys.executable, "-m", "shared.cli.main", "flatten", "BTCUSDT"], env=env,
                               capture_output=True, text=True, timeout=90)

    assert flattened.returncode == 0, flattened.stdout + flattened.stderr
    assert "round 2: 1 still open after a close cut to one order's maximum" in flattened.stdout
    assert "1/1 positions closed" in flattened.stdout and exchange_amount(sim, "BTCUSDT") == 0
