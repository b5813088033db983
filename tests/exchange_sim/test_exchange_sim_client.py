"""The unmodified python-binance Client against the simulator."""

import time
from decimal import Decimal

import pytest
import requests
from binance.exceptions import BinanceAPIException

from microservices.exchange_sim.testing import running_simulator


def test_open_query_close_with_python_binance(sim, client):
    sim.set_price("BTCUSDT", "88000")
    ack = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
                                      newClientOrderId="plan-1-open")
    assert ack["status"] == "NEW" and ack["executedQty"] == "0.000" and ack["origQty"] == "0.002"

    order = client.futures_get_order(symbol="BTCUSDT", origClientOrderId="plan-1-open")
    assert order["orderId"] == ack["orderId"]
    assert (order["status"], order["executedQty"], order["avgPrice"]) == ("FILLED", "0.002", "88000.00")

    [position] = client.futures_position_information(symbol="BTCUSDT")
    assert (position["positionAmt"], position["entryPrice"], position["positionSide"]) == ("0.002", "88000.0", "BOTH")

    sim.set_price("BTCUSDT", "89000")
    close = client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002",
                                        reduceOnly="true", newOrderRespType="RESULT")
    assert (close["status"], close["avgPrice"], close["cumQty"]) == ("FILLED", "89000.00", "0.002")
    assert client.futures_position_information(symbol="BTCUSDT") == []

    fees = Decimal("0.002") * (88000 + 89000) * Decimal("0.0004")
    expected = Decimal("10000") + Decimal("0.002") * 1000 - fees
    [usdt] = [b for b in client.futures_account_balance() if b["asset"] == "USDT"]
    assert Decimal(usdt["balance"]) == expected
    account = client.futures_account()
    assert Decimal(account["totalWalletBalance"]) == expected
    assert Decimal(account["availableBalance"]) == expected
    trades = client.futures_account_trades(symbol="BTCUSDT")
    assert [Decimal(t["realizedPnl"]) for t in trades] == [0, 2]


def test_unrealized_pnl_and_margin_follow_the_mark(sim, client):
    sim.set_price("ETHUSDT", "3000")
    client.futures_change_leverage(symbol="ETHUSDT", leverage=10)
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="1")
    sim.set_price("ETHUSDT", "2900")
    [position] = client.futures_position_information(symbol="ETHUSDT")
    assert position["positionAmt"] == "-1.000" and Decimal(position["unRealizedProfit"]) == 100
    assert Decimal(position["positionInitialMargin"]) == 290
    account = client.futures_account()
    wallet = Decimal(account["totalWalletBalance"])
    assert Decimal(account["availableBalance"]) == wallet + 100 - 290


def test_limit_order_rests_then_fills_when_mark_crosses(sim, client):
    sim.set_price("BTCUSDT", "88000")
    order = client.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                        quantity="0.002", price="87000", newClientOrderId="entry-1")
    assert [o["clientOrderId"] for o in client.futures_get_open_orders(symbol="BTCUSDT")] == ["entry-1"]
    account = client.futures_account()
    assert Decimal(account["totalOpenOrderInitialMargin"]) == Decimal("0.002") * 87000 / 20
    sim.set_price("BTCUSDT", "87500")
    assert client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])["status"] == "NEW"
    sim.set_price("BTCUSDT", "86990")
    filled = client.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert (filled["status"], filled["avgPrice"]) == ("FILLED", "87000.00")
    assert client.futures_get_open_orders(symbol="BTCUSDT") == []
    [trade] = client.futures_account_trades(symbol="BTCUSDT")
    assert trade["maker"] is True and Decimal(trade["commission"]) == Decimal("0.002") * 87000 * Decimal("0.0002")


def test_cancel_and_all_orders(sim, client):
    sim.set_price("ETHUSDT", "2920")
    order = client.futures_create_order(symbol="ETHUSDT", side="SELL", type="LIMIT", timeInForce="GTC",
                                        quantity="0.01", price="3000")
    canceled = client.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])
    assert canceled["status"] == "CANCELED"
    assert [o["status"] for o in client.futures_get_all_orders(symbol="ETHUSDT")] == ["CANCELED"]
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="0.01",
                                price="3000")
    client.futures_cancel_all_open_orders(symbol="ETHUSDT")
    assert client.futures_get_open_orders() == []


def test_margin_insufficient_when_order_exceeds_available(sim, client):
    sim.set_price("BTCUSDT", "88000")
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="2.5")
    error = caught.value
    assert (error.code, error.message, error.status_code) == (-2019, "Margin is insufficient.", 400)
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="2.2")
    assert sim.orders()[-1]["status"] == "FILLED"


def test_hedge_mode_requires_position_side(sim, client):
    sim.set_price("BTCUSDT", "88000")
    client.futures_change_position_mode(dualSidePosition="true")
    assert client.futures_get_position_mode() == {"dualSidePosition": True}
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert (caught.value.code, caught.value.message) == (-4061, "Order's position side does not match user's setting.")
    client.futures_create_order(symbol="BTCUSDT", side="BUY", positionSide="LONG", type="MARKET", quantity="0.002")
    client.futures_create_order(symbol="BTCUSDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="0.003")
    sides = {p["positionSide"]: p["positionAmt"] for p in client.futures_position_information(symbol="BTCUSDT")}
    assert sides == {"LONG": "0.002", "SHORT": "-0.003"}
    client.futures_create_order(symbol="BTCUSDT", side="SELL", positionSide="LONG", type="MARKET", quantity="0.002")
    sides = {p["positionSide"]: p["positionAmt"] for p in client.futures_position_information(symbol="BTCUSDT")}
    assert sides == {"SHORT": "-0.003"}


def test_rate_limit_headers(sim, client):
    client.futures_exchange_info()
    assert int(client.response.headers["X-MBX-USED-WEIGHT-1M"]) >= 1
    client.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
    assert client.response.headers["X-MBX-ORDER-COUNT-1M"] == "1"


def test_unknown_after_execute_answers_503_but_the_order_exists(sim, client):
    sim.set_faults(unknown_after_execute=1.0)
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
                                    newClientOrderId="plan-7-entry")
    assert caught.value.status_code == 503
    assert caught.value.message == "Unknown error, please check your request or try again later."
    sim.set_faults(unknown_after_execute=0.0)
    order = client.futures_get_order(symbol="BTCUSDT", origClientOrderId="plan-7-entry")
    assert order["status"] == "FILLED"
    assert [o["clientOrderId"] for o in sim.orders()] == ["plan-7-entry"]


def test_unavailable_no_execute_answers_503_and_nothing_happens(sim, client):
    sim.set_faults(unavailable_no_execute=1.0)
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
                                    newClientOrderId="plan-8-entry")
    assert (caught.value.status_code, caught.value.message) == (503, "Service Unavailable.")
    assert sim.orders() == []
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_get_order(symbol="BTCUSDT", origClientOrderId="plan-8-entry")
    assert caught.value.code == -2013


@pytest.mark.parametrize(("after", "orders"), [(True, 1), (False, 0)])
def test_drop_connection_before_or_after_execution(sim, client, after, orders):
    sim.set_faults(drop_connection=1.0, drop_after_execute=after)
    with pytest.raises(requests.exceptions.ConnectionError):
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert len(sim.orders()) == orders
    assert client.futures_ping() == {}


def test_rate_limited_fault_and_latency(sim, client):
    sim.set_faults(rate_limited=1.0, latency_ms=150)
    started = time.monotonic()
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    assert time.monotonic() - started >= 0.15
    assert (caught.value.status_code, caught.value.code) == (429, -1003)
    assert sim.faults()["latency_ms"] == 150


def test_fault_choice_is_seeded(sim, client):
    def outcomes():
        sim.reset()
        sim.set_faults(unavailable_no_execute=0.5)
        result = []
        for _ in range(12):
            try:
                client.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="20")
                result.append("ok")
            except BinanceAPIException:
                result.append("503")
        return result

    first = outcomes()
    assert first == outcomes() and {"ok", "503"} == set(first)


def test_same_seed_same_prices_across_simulators():
    now = [1_700_000_000_000]

    def clock() -> int:
        return now[0]

    def observe(clients) -> list[list[str]]:
        return [[c.futures_mark_price(symbol="ETHUSDT")["markPrice"] for c in clients]]

    with running_simulator(seed=7, clock=clock) as one, running_simulator(seed=7, clock=clock) as two, \
            running_simulator(seed=8, clock=clock) as three:
        clients = [s.binance_client() for s in (one, two, three)]
        for c in clients:
            c.timestamp_offset = clock() - int(time.time() * 1000)
        history = [[k[4] for k in c.futures_klines(symbol="ETHUSDT", interval="1h", limit=24)] for c in clients]
        marks = []
        for _ in range(5):
            now[0] += 7_000
            marks += observe(clients)
    assert history[0] == history[1] != history[2]
    assert [m[0] for m in marks] == [m[1] for m in marks] != [m[2] for m in marks]


def test_overrides_reach_the_account():
    with running_simulator(balance_usdt="5000") as handle:
        [usdt] = [b for b in handle.binance_client().futures_account_balance() if b["asset"] == "USDT"]
        assert usdt["balance"] == "5000.00000000"


def test_escaped_characters_must_be_signed_as_sent(sim, client, signed):
    """Binance verifies the payload as transmitted; python-binance signs ':' raw but sends it as %3A."""
    sim.set_price("BTCUSDT", "88000")
    response = signed("POST", "/fapi/v1/order", {
        "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002", "newClientOrderId": "plan:9/a"})
    assert response.status_code == 200 and response.json()["clientOrderId"] == "plan:9/a"
    with pytest.raises(BinanceAPIException) as caught:
        client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002",
                                    newClientOrderId="plan:10")
    assert caught.value.code == -1022


def test_an_order_held_past_its_recv_window_on_the_way_is_refused_not_executed(sim, signed):
    """Binance: a request must be processed within recvWindow of its timestamp or be rejected. The executor's
    lookup believes "no such order" once that window is over, so the simulator must not execute it later."""
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.002", "recvWindow": 300}
    sim.set_faults(latency_ms=400)
    late = signed("POST", "/fapi/v1/order", order)
    assert (late.status_code, late.json()["code"]) == (400, -5028)
    assert sim.orders() == []

    sim.set_faults(latency_ms=50)
    assert signed("POST", "/fapi/v1/order", order).status_code == 200
    assert len(sim.orders()) == 1
