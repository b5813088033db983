"""A request the executor makes after taking the permits and before the order (the mark price, the open's
leverage) fails on the simulator over HTTP: the plan ends at once in a result that says nothing was sent and
why. Before, a failing mark price left the entry pending, to end as order_not_found deliveries later."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from shared import keys
from tests.intent_executor.test_executor_sim import grant, orders_for, plan, run_executor, the_result


@pytest.fixture
def outage(sim):
    yield lambda endpoint, kind: sim.set_faults(outages={endpoint: kind})
    sim.set_faults(outages={})


@pytest.mark.parametrize("kind", ["service_unavailable", "rate_limited", "ip_banned", "waf_blocked"])
def test_no_mark_price_ends_the_plan_unsent_and_says_why(r, access, sim, outage, kind) -> None:
    outage("GET /fapi/v1/premiumIndex", kind)  # no snapshot in Redis: the executor asks for the mark
    grant(r, "no-mark")
    plan(r, "no-mark", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "no-mark")
    detail = json.loads(result["detail"])
    assert (result["executed"], result["reason"]) == ("false", "exchange_unavailable")
    assert detail["before_sending"] == "mark_price" and detail["error"].startswith("mark_price: ")
    assert orders_for(sim, "no-mark") == []
    assert r.xpending(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR)["pending"] == 0  # ended, not retried
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_a_leverage_request_that_is_not_served_says_which_step(r, access, sim, outage) -> None:
    outage("POST /fapi/v1/leverage", "service_unavailable")
    grant(r, "no-lev")
    plan(r, "no-lev", "BUY", "0.002", leverage="3")

    run_executor(r, access)

    result = the_result(r, "no-lev")
    assert (result["executed"], result["reason"]) == ("false", "leverage_not_set")
    assert json.loads(result["detail"])["before_sending"] == "set_leverage"
    assert orders_for(sim, "no-lev") == []


def test_an_unreadable_snapshot_is_passed_over_for_the_exchanges_mark(r, access, sim) -> None:
    r.set(keys.EXCHANGE_POSITIONS, "{not json")
    grant(r, "garbled")
    plan(r, "garbled", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "garbled")["order_status"] == "FILLED"
    assert r.xpending(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR)["pending"] == 0


def test_a_close_needs_no_mark_price_and_goes_out_while_the_mark_is_unavailable(r, access, sim, outage) -> None:
    """From a review: a close fetched a mark it never used (reduce-only orders are exempt from the notional filter),
    so with only the market-data request failing the close ended exchange_unavailable instead of closing."""
    grant(r, "open")
    plan(r, "open", "BUY", "0.002")
    run_executor(r, access)
    outage("GET /fapi/v1/premiumIndex", "service_unavailable")
    asked: list[str] = []
    real = access.client.mark_price
    access.client.mark_price = lambda symbol: asked.append(symbol) or real(symbol)

    grant(r, "close", safe_qty="0.002")
    plan(r, "close", "SELL", "0.002", reduce_only="true")
    run_executor(r, access)

    assert the_result(r, "close")["order_status"] == "FILLED" and asked == []


def test_a_position_larger_than_one_market_order_is_closed_in_orders_the_exchange_takes(r, access, sim) -> None:
    """From a review: a full close of more than MARKET_LOT_SIZE's maxQty (120 BTC) was refused above_max_qty on every
    attempt, so the position could never be closed. Each close plan now sends what one order may hold; the next
    plan (harvest proposes again while the position stays) closes the rest."""
    sim.set_price("BTCUSDT", "10")  # 150 BTC worth 1,500 USDT: within the simulated account's margin
    for part, qty in (("a", "100"), ("b", "50")):
        grant(r, f"open-{part}")
        plan(r, f"open-{part}", "BUY", qty)
        run_executor(r, access)
    max_qty = access.filters.find("BTCUSDT").market_max_qty
    assert max_qty == 120

    grant(r, "close-1", safe_qty="150")
    plan(r, "close-1", "SELL", "150", reduce_only="true")
    with capture_logs() as logs:
        run_executor(r, access)
    assert [(line["qty"], line["max_qty"]) for line in logs if line["event"] == "close_capped_at_max_qty"] == [
        ("120.000", "120")]
    grant(r, "close-2", safe_qty="30")
    plan(r, "close-2", "SELL", "30", reduce_only="true")
    run_executor(r, access)

    first, second = the_result(r, "close-1"), the_result(r, "close-2")
    assert (first["order_status"], first["filled_qty"]) == ("FILLED", "120")
    assert (second["order_status"], second["filled_qty"]) == ("FILLED", "30")
    assert sim.binance_client().futures_position_information(symbol="BTCUSDT") == []
