"""Every Binance error the simulator promises, produced by a request that should produce it."""

import time

import pytest
from binance.client import Client
from binance.exceptions import BinanceAPIException

from microservices.exchange_sim.testing import running_simulator

MARKET_BTC = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}


def _client_for(sim, key=None, secret=None) -> Client:
    client = sim.binance_client()
    client.API_KEY = key or sim.api_key
    client.API_SECRET = secret or sim.api_secret
    client.session.headers["X-MBX-APIKEY"] = client.API_KEY
    return client


def _stale_timestamp(sim, client, signed):
    client.timestamp_offset = -20_000
    client.futures_account_balance()


def _future_timestamp(sim, client, signed):
    client.timestamp_offset = 5_000
    client.futures_account_balance()


def _bad_signature(sim, client, signed):
    _client_for(sim, secret="not-the-secret").futures_account()


def _bad_key_format(sim, client, signed):
    _client_for(sim, key="bad-key").futures_position_information()


def _unknown_key(sim, client, signed):
    _client_for(sim, key="A" * 64).futures_account_balance()


def _missing_quantity(sim, client, signed):
    client.futures_create_order(**MARKET_BTC)


def _too_precise(sim, client, signed):
    client.futures_create_order(**MARKET_BTC, quantity="0.0001")


def _zero_quantity(sim, client, signed):
    client.futures_create_order(**MARKET_BTC, quantity="0")


def _above_market_max(sim, client, signed):
    client.futures_create_order(**MARKET_BTC, quantity="121")


def _below_min_notional(sim, client, signed):
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.001")


def _margin(sim, client, signed):
    client.futures_create_order(**MARKET_BTC, quantity="2.5")


def _reduce_only_without_position(sim, client, signed):
    client.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.002", reduceOnly="true")


def _cancel_unknown(sim, client, signed):
    client.futures_cancel_order(symbol="BTCUSDT", orderId=123)


def _query_unknown(sim, client, signed):
    client.futures_get_order(symbol="BTCUSDT", origClientOrderId="never-sent")


def _bad_client_order_id(sim, client, signed):
    client.futures_create_order(**MARKET_BTC, quantity="0.002", newClientOrderId="a" * 37)


def _duplicate_open_client_order_id(sim, client, signed):
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.002",
             "price": "87000", "newClientOrderId": "dup-1"}
    client.futures_create_order(**order)
    client.futures_create_order(**order)


def _weight_limit(sim, client, signed):
    with running_simulator(weight_limit_per_minute=5) as small:
        limited = small.binance_client()
        for _ in range(6):
            limited.futures_exchange_info()


def _orders_beyond(limits: dict[str, int]):
    def action(sim, client, signed):
        with running_simulator(**limits) as small:
            limited = small.binance_client()
            small.set_price("TRXUSDT", "0.3")
            for _ in range(4):
                limited.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
    action.__name__ = "_orders_beyond_" + "_".join(limits)
    return action


def _conditional_order(sim, client, signed):
    # python-binance reroutes STOP_MARKET to the Algo API itself, so send the raw request
    return signed("POST", "/fapi/v1/order", {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_MARKET",
                                             "quantity": "0.002", "stopPrice": "80000"})


CASES = [
    (-1021, 400, "Timestamp for this request is outside of the recvWindow.", _stale_timestamp),
    (-1021, 400, "Timestamp for this request was 1000ms ahead of the server's time.", _future_timestamp),
    (-1022, 400, "Signature for this request is not valid.", _bad_signature),
    (-2014, 401, "API-key format invalid.", _bad_key_format),
    (-2015, 401, "Invalid API-key, IP, or permissions for action, request ip: 127.0.0.1", _unknown_key),
    (-1102, 400, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.", _missing_quantity),
    (-1111, 400, "Precision is over the maximum defined for this asset.", _too_precise),
    (-4003, 400, "Quantity less than or equal to zero.", _zero_quantity),
    (-4005, 400, "Quantity greater than max quantity.", _above_market_max),
    (-4164, 400, "Order's notional must be no smaller than 20 (unless you choose reduce only).", _below_min_notional),
    (-2019, 400, "Margin is insufficient.", _margin),
    (-2022, 400, "ReduceOnly Order is rejected.", _reduce_only_without_position),
    (-2011, 400, "Unknown order sent.", _cancel_unknown),
    (-2013, 400, "Order does not exist.", _query_unknown),
    (-4015, 400, "Client order id is not valid.", _bad_client_order_id),
    (-4116, 400, "clientOrderId is duplicated.", _duplicate_open_client_order_id),
    (-1003, 429, "Too much request weight used; current limit is 5 request weight per 1 MINUTE. "
                 "Please use the websocket for live updates to avoid polling the API.", _weight_limit),
    (-4120, 400, "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
     _conditional_order),
    (-1015, 429, "Too many new orders; current limit is 3 orders per TEN_SECONDS.",
     _orders_beyond({"order_limit_per_10s": 3})),
    (-1015, 429, "Too many new orders; current limit is 3 orders per MINUTE.", _orders_beyond({"order_limit_per_minute": 3})),
]


@pytest.mark.parametrize(("code", "status", "msg", "action"), CASES, ids=[f"{c[0]}-{c[3].__name__}" for c in CASES])
def test_binance_error(sim, client, signed, code, status, msg, action):
    sim.set_price("BTCUSDT", "88000")
    sim.set_price("ETHUSDT", "2920")
    try:
        response = action(sim, client, signed)
    except BinanceAPIException as exc:
        got = (exc.status_code, exc.code, exc.message, exc.response.json())
    else:
        assert response is not None, "the request unexpectedly succeeded"
        got = (response.status_code, response.json()["code"], response.json()["msg"], response.json())
    assert got == (status, code, msg, {"code": code, "msg": msg})


def test_the_weight_limits_retry_after_is_what_is_left_of_its_minute():
    now = [29_933_334 * 60_000 + 42_300]  # 42.3 s into a minute
    with running_simulator(clock=lambda: now[0], weight_limit_per_minute=5) as small:
        limited = small.binance_client()
        with pytest.raises(BinanceAPIException) as caught:
            for _ in range(6):
                limited.futures_exchange_info()

    assert (caught.value.status_code, caught.value.response.headers["Retry-After"]) == (429, "18")


def test_reduce_only_orders_are_exempt_from_min_notional(sim, client):
    sim.set_price("ETHUSDT", "2920")
    client.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.01")
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.005", reduceOnly="true")
    [position] = client.futures_position_information(symbol="ETHUSDT")
    assert position["positionAmt"] == "0.005"


def test_duplicate_client_order_id_is_allowed_once_the_first_is_closed(sim, client):
    sim.set_price("BTCUSDT", "88000")
    client.futures_create_order(**MARKET_BTC, quantity="0.002", newClientOrderId="reuse-1")
    client.futures_create_order(**MARKET_BTC, quantity="0.002", newClientOrderId="reuse-1")
    assert [o["clientOrderId"] for o in sim.orders()] == ["reuse-1", "reuse-1"]


def test_the_ten_second_order_window_opens_again_and_both_counts_are_in_the_headers():
    """Binance counts orders per 10 s (300) and per minute (1,200) and says both counts on each order's answer; the
    simulator enforced only the minute, while its exchangeInfo advertised the 10 s limit too."""
    now = [int(time.time() * 1000) // 60_000 * 60_000 + 1_000]  # 1 s into a minute and into its first 10 s
    with running_simulator(clock=lambda: now[0], order_limit_per_10s=2) as small:
        limited = small.binance_client()
        limited.timestamp_offset = now[0] - int(time.time() * 1000)
        small.set_price("TRXUSDT", "0.3")
        for _ in range(2):
            limited.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
        headers = limited.response.headers
        assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"]) == ("2", "2")
        with pytest.raises(BinanceAPIException) as caught:
            limited.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
        assert caught.value.code == -1015

        now[0] += 9_000  # the next window
        limited.timestamp_offset += 9_000
        limited.futures_create_order(symbol="TRXUSDT", side="BUY", type="MARKET", quantity="100")
        headers = limited.response.headers
        assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1M"]) == ("1", "4")
        limits = {(limit["interval"], limit["intervalNum"]): limit["limit"]
                  for limit in limited.futures_exchange_info()["rateLimits"] if limit["rateLimitType"] == "ORDERS"}
        assert limits == {("SECOND", 10): 2, ("MINUTE", 1): 1200}


def test_a_client_that_keeps_sending_past_the_weight_limit_is_banned_with_418():
    """Binance bans an IP that does not back off after 429s (418, "from 2 minutes to 3 days"); the simulator only
    ever answered 429, so a client regression there would pass every test. Past EXCHANGE_SIM_BAN_AFTER_429S 429s in
    one window, every request is answered 418 until the ban ends."""
    now = [int(time.time() * 1000) // 60_000 * 60_000 + 1_000]
    with running_simulator(clock=lambda: now[0], weight_limit_per_minute=5, ban_after_429s=2, ban_seconds=120) as small:
        limited = small.binance_client()
        statuses = []
        for _ in range(9):
            try:
                limited.futures_exchange_info()
                statuses.append(200)
            except BinanceAPIException as exc:
                statuses.append(exc.status_code)
                last = exc
        assert statuses == [200] * 5 + [429, 429, 418, 418]
        assert last.code == -1003 and "IP banned until" in last.message
        assert 110 <= int(last.response.headers["Retry-After"]) <= 120

        now[0] += 60_000  # a new minute window: still banned
        with pytest.raises(BinanceAPIException) as banned:
            limited.futures_exchange_info()
        assert banned.value.status_code == 418
        now[0] += 61_000  # the ban is over
        assert limited.futures_exchange_info()["symbols"]
