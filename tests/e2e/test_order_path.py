"""The order path end to end: governor, position-state brain and executor as processes, on the
embedded Redis and the simulator over HTTP, driven only as operators drive them."""

from __future__ import annotations

import json
import time
from decimal import Decimal as D

import pytest

from shared import keys, permits
from shared.orders import client_order_id_for
from shared.permits import PermitKind

ORDER_PATH = ("position-state-brain", "governor", "intent-executor")


def orders_for(sim, plan_id: str) -> list[dict]:
    return [o for o in sim.orders() if o["clientOrderId"] == client_order_id_for(plan_id)]


def exchange_amount(sim, symbol: str) -> D:
    return sum((D(p["positionAmt"]) for p in sim.binance_client().futures_position_information(symbol=symbol)), D(0))


def open_position(fleet, plan_id: str, symbol: str = "BTCUSDT", qty: str = "0.002") -> dict:
    fleet.plan(plan_id, symbol, "BUY", qty)
    result = fleet.wait_result(plan_id)
    assert result["executed"] == "true", (result.get("reason"), result.get("detail"))
    return result


def test_the_seed_plan_typed_as_in_the_seed_gets_an_open_permit_and_is_refused_for_min_notional(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)

    fleet.plan("test_open_005", "BTCUSDT", "BUY", "0.001")
    result = fleet.wait_result("test_open_005")

    p33 = permits.peek(fleet.client, PermitKind.P33, "test_open_005")
    assert (p33.allow, p33.safe_qty, p33.reason.value) == (True, 0, "sanity_checks_passed")
    assert (result["executed"], result["reason"]) == ("false", "min_notional_check_failed")
    assert orders_for(sim, "test_open_005") == []


def test_an_open_of_0_0023_fills_0_002_and_a_larger_close_closes_exactly_the_position(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)

    opened = open_position(fleet, "open-step", qty="0.0023")
    fleet.plan("close-all", "BTCUSDT", "SELL", "0.01", reduce_only="true")
    closed = fleet.wait_result("close-all")

    assert opened["filled_qty"] == "0.002"
    assert (closed["executed"], closed["filled_qty"]) == ("true", "0.002")
    assert exchange_amount(sim, "BTCUSDT") == 0
    assert fleet.client.exists(keys.position_ledger("BTCUSDT")) == 0


def set_kill(fleet, sim) -> None:
    fleet.client.set(keys.KILL, "1")


def set_reduce_only(fleet, sim) -> None:
    fleet.client.set(keys.GOVERNOR_EXECUTION, "DISABLED")


def set_recent_execution(fleet, sim) -> None:
    fleet.client.set(keys.cooldown_last_exec("BTCUSDT"), str(int(time.time() * 1000)))


def open_eth_first(fleet, sim) -> None:
    open_position(fleet, "eth-first", symbol="ETHUSDT", qty="0.05")


def ledger_disagrees(fleet, sim) -> None:
    open_position(fleet, "btc-first")
    fleet.client.hset(keys.position_ledger("BTCUSDT"), "position_amt", "0.05")


@pytest.mark.parametrize(
    ("overrides", "arrange", "side", "reduce_only", "reason"),
    [
        ({}, set_kill, "BUY", "false", "kill_switch"),
        ({}, set_reduce_only, "BUY", "false", "execution_disabled"),
        ({"GOV_SYMBOL_COOLDOWN_SECONDS": "60"}, set_recent_execution, "BUY", "false", "symbol_cooldown"),
        ({"P33_COOLDOWN_SEC": "60"}, set_recent_execution, "BUY", "false", "cooldown"),
        ({"GOV_MAX_OPEN_POSITIONS": "1"}, open_eth_first, "BUY", "false", "max_open_positions"),
        ({"GOV_MAX_NOTIONAL_PER_TRADE_USDT": "100"}, None, "BUY", "false", "max_notional_per_trade"),
        ({"GOV_MAX_TOTAL_NOTIONAL_USDT": "150"}, None, "BUY", "false", "total_notional_exceeded"),
        ({"P33_STALE_THRESHOLD_SEC": "0.001"}, None, "BUY", "false", "stale_snapshot"),
        ({"P33_ALLOWLIST": "ETHUSDT"}, None, "BUY", "false", "symbol_not_allowed"),
        ({}, ledger_disagrees, "SELL", "true", "reconcile_required_qty_mismatch"),
        ({}, None, "SELL", "true", "no_position"),
    ],
)
def test_each_gate_denies_with_its_own_reason_and_no_order_reaches_the_exchange(
    make_fleet, sim, overrides, arrange, side, reduce_only, reason
) -> None:
    fleet = make_fleet(**overrides).start(*ORDER_PATH)
    if arrange is not None:
        arrange(fleet, sim)

    fleet.plan("gated", "BTCUSDT", side, "0.002", reduce_only=reduce_only)
    result = fleet.wait_result("gated")

    assert (result["executed"], result["reason"]) == ("false", reason), result
    assert orders_for(sim, "gated") == []


def test_the_kill_switch_also_stops_closes(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)
    open_position(fleet, "to-close")
    fleet.client.set(keys.KILL, "1")

    fleet.plan("close-while-killed", "BTCUSDT", "SELL", "0.002", reduce_only="true")

    assert fleet.wait_result("close-while-killed")["reason"] == "kill_switch"
    assert exchange_amount(sim, "BTCUSDT") == D("0.002")


def test_closes_pass_cooldowns_and_fund_caps_in_reduce_only_state(make_fleet, sim) -> None:
    fleet = make_fleet(GOV_SYMBOL_COOLDOWN_SECONDS="600", GOV_MAX_TOTAL_NOTIONAL_USDT="200").start(*ORDER_PATH)
    open_position(fleet, "opened")
    fleet.client.set(keys.GOVERNOR_EXECUTION, "DISABLED")

    fleet.plan("close-now", "BTCUSDT", "SELL", "0.002", reduce_only="true", action="FULL_CLOSE_PROPOSED")

    assert fleet.wait_result("close-now")["executed"] == "true"


def test_a_plan_delivered_twice_makes_one_order_and_one_result(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)

    fleet.plan("twice", "BTCUSDT", "BUY", "0.002")
    fleet.plan("twice", "BTCUSDT", "BUY", "0.002")
    fleet.wait_result("twice")
    fleet.plan("after", "ETHUSDT", "BUY", "0.05")
    fleet.wait_result("after")

    assert len(fleet.results("twice")) == 1
    assert len(orders_for(sim, "twice")) == 1


def test_an_executor_killed_after_sending_is_restarted_and_makes_no_second_order(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)
    sim.set_faults(latency_ms=1500)
    fleet.plan("killed", "BTCUSDT", "BUY", "0.002")
    deadline = time.monotonic() + 15
    while "ORDER_SUBMIT" not in fleet.log("intent-executor"):
        assert time.monotonic() < deadline
        time.sleep(0.02)

    fleet.kill("intent-executor")
    while not orders_for(sim, "killed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sim.set_faults()
    fleet.start("intent-executor")
    result = fleet.wait_result("killed")

    assert result["executed"] == "true" and result["order_id"] == str(orders_for(sim, "killed")[0]["orderId"])
    assert len(orders_for(sim, "killed")) == 1 and len(fleet.results("killed")) == 1


@pytest.mark.parametrize(
    ("fault", "executed", "orders"),
    [("unknown_after_execute", "true", 1), ("unavailable_no_execute", "false", 0), ("drop_connection", "true", 1)],
)
def test_a_lost_answer_on_submit_is_resolved_by_client_order_id(make_fleet, sim, fault, executed, orders) -> None:
    fleet = make_fleet().start(*ORDER_PATH)
    sim.set_faults(**{fault: 1.0})

    fleet.plan("faulted", "BTCUSDT", "BUY", "0.002")
    result = fleet.wait_result("faulted")
    sim.set_faults()

    assert result["executed"] == executed
    assert len(orders_for(sim, "faulted")) == orders


def test_every_plan_gets_exactly_one_terminal_result(make_fleet, sim) -> None:
    fleet = make_fleet().start(*ORDER_PATH)
    plan_ids = []
    for i, (symbol, qty) in enumerate([("BTCUSDT", "0.002"), ("ETHUSDT", "0.05"), ("TRXUSDT", "700"),
                                       ("BTCUSDT", "0.001"), ("LINKUSDT", "20"), ("ETHUSDT", "0.05")]):
        plan_ids.append(f"batch-{i}")
        fleet.plan(plan_ids[-1], symbol, "BUY", qty)
    fleet.plan("not-execute", "BTCUSDT", "BUY", "0.002", decision="HOLD")
    plan_ids.append("not-execute")

    for plan_id in plan_ids:
        fleet.wait_result(plan_id)
    time.sleep(0.5)

    counts = {plan_id: len(fleet.results(plan_id)) for plan_id in plan_ids}
    assert set(counts.values()) == {1}, counts
    assert all(len(orders_for(sim, plan_id)) <= 1 for plan_id in plan_ids)
    assert json.loads(fleet.results("batch-0")[0]["p32_permit"])["allow"] is True
