"""ExchangeClient pieces that need no network: URL routing, request parameters, parsing, error mapping."""

import json
import os
import socket
from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from shared.exchange.client import ExchangeClient, _DecimalClient, build_binance_client, market_order_params
from shared.exchange.errors import ExchangeError, ExchangeRejected, OutcomeUnknown
from shared.exchange.models import Side, parse_open_positions, parse_order
from shared.exchange.target import ExchangeSettings

D = Decimal
KEY = "KEYVALUE7f3a9c0d1e2b"
SECRET = "SECRETVALUE9d8c7b6a5f4e"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith(("EXCHANGE_", "BINANCE_")) or name.upper() in {"TESTNET", "USE_TESTNET",
                                                                                  "PAPER_TRADING",
                                                                                  "CREDENTIALS_DIRECTORY"}:
            monkeypatch.delenv(name)


def sim_settings(**env) -> ExchangeSettings:
    return ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL="http://127.0.0.1:18090",
                            EXCHANGE_SIM_API_KEY=KEY, EXCHANGE_SIM_API_SECRET=SECRET, **env)


class StubResponse:
    def __init__(self, status: int, text: str) -> None:
        self.status_code, self.text, self.headers, self.request = status, text, {}, None


class StubBinance:
    """Stands in for python-binance's Client: each method returns or raises what the test queued."""

    def __init__(self, **outcomes) -> None:
        self.outcomes = outcomes
        self.calls: list[tuple[str, dict]] = []
        self.timestamp_offset = 0

    def __getattr__(self, name):
        def call(**params):
            self.calls.append((name, params))
            outcome = self.outcomes[name]
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return call


def api_error(status: int, code: int, msg: str) -> BinanceAPIException:
    body = json.dumps({"code": code, "msg": msg})
    return BinanceAPIException(StubResponse(status, body), status, body)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_simulator_target_routes_every_futures_version_to_the_simulator(version):
    client = build_binance_client(sim_settings())

    uri = client._create_futures_api_uri("account", version)

    assert uri == f"http://127.0.0.1:18090/fapi/v{version}/account"
    assert client.REQUEST_TIMEOUT == 5.0


def test_testnet_target_uses_python_binance_testnet_urls():
    settings = ExchangeSettings(EXCHANGE_TARGET="testnet", BINANCE_API_KEY=KEY, BINANCE_API_SECRET=SECRET)

    uri = build_binance_client(settings)._create_futures_api_uri("order", 1)

    assert uri == "https://testnet.binancefuture.com/fapi/v1/order"


def test_decimal_client_parses_json_numbers_as_decimal():
    payload = _DecimalClient._handle_response(StubResponse(200, '{"markPrice": 88000.10, "n": 3}'))

    assert payload == {"markPrice": D("88000.10"), "n": 3}
    assert isinstance(payload["markPrice"], Decimal)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(side="BUY", qty=D("0.002"), reduce_only=False, position_side=None),
         {"side": "BUY", "quantity": "0.002", "reduceOnly": "false"}),
        (dict(side=Side.SELL, qty=D("0.002"), reduce_only=True, position_side="BOTH"),
         {"side": "SELL", "quantity": "0.002", "reduceOnly": "true"}),
        (dict(side="SELL", qty=D("631"), reduce_only=True, position_side="LONG"),
         {"side": "SELL", "quantity": "631", "positionSide": "LONG"}),
        (dict(side="BUY", qty=D("1E-7"), reduce_only=False, position_side=None),
         {"quantity": "0.0000001"}),
    ],
)
def test_market_order_params(kwargs, expected):
    params = market_order_params("BTCUSDT", client_order_id="plan-1", **kwargs)

    assert params["type"] == "MARKET" and params["newOrderRespType"] == "RESULT"
    assert params["newClientOrderId"] == "plan-1"
    assert expected.items() <= params.items()
    assert not ("positionSide" in params and "reduceOnly" in params)


@pytest.mark.parametrize(
    ("qty", "client_order_id", "side"),
    [(D("0"), "ok", "BUY"), (D("-1"), "ok", "BUY"), (D("1"), "has space", "BUY"),
     (D("1"), "x" * 37, "BUY"), (D("1"), "ok", "HOLD")],
)
def test_market_order_params_refuses_bad_input(qty, client_order_id, side):
    with pytest.raises(ValueError):
        market_order_params("BTCUSDT", side, qty, False, client_order_id)


def test_get_order_returns_none_when_the_order_does_not_exist():
    stub = StubBinance(futures_get_order=api_error(400, -2013, "Order does not exist."))

    assert ExchangeClient(sim_settings(), stub).get_order("BTCUSDT", "plan-1") is None
    assert stub.calls == [("futures_get_order", {"symbol": "BTCUSDT", "origClientOrderId": "plan-1"})]


def test_get_order_raises_other_rejections():
    stub = StubBinance(futures_get_order=api_error(400, -1121, "Invalid symbol."))

    with pytest.raises(ExchangeRejected):
        ExchangeClient(sim_settings(), stub).get_order("NOPE", "plan-1")


def test_unreadable_order_answer_is_outcome_unknown():
    stub = StubBinance(futures_create_order={"unexpected": True})

    with pytest.raises(OutcomeUnknown):
        ExchangeClient(sim_settings(), stub).create_market_order("BTCUSDT", "BUY", D("0.002"), False, "p-1")


def test_unreadable_read_answer_is_an_exchange_error():
    stub = StubBinance(futures_account={"totalWalletBalance": "1"})

    with pytest.raises(ExchangeError):
        ExchangeClient(sim_settings(), stub).account()


def test_translated_errors_carry_no_library_context():
    stub = StubBinance(futures_get_order=api_error(400, -1121, "Invalid symbol."))

    with pytest.raises(ExchangeRejected) as caught:
        ExchangeClient(sim_settings(), stub).get_order("NOPE", "plan-1")

    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize("line_ending", ["\r", "\r\n", "\n"])
def test_a_key_from_a_crlf_env_file_never_reaches_an_error(line_ending):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens: every call fails, and says why
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=f"http://127.0.0.1:{port}",
                                EXCHANGE_SIM_API_KEY=KEY + line_ending,
                                EXCHANGE_SIM_API_SECRET=SECRET + line_ending)

    with pytest.raises(ExchangeError) as caught:
        ExchangeClient(settings).server_time()

    assert KEY not in caught.value.message and SECRET not in caught.value.message
    assert "refused" in caught.value.message.lower()  # the request went out: the key was clean


def test_repr_shows_target_not_secrets():
    client = ExchangeClient(sim_settings())

    assert repr(client) == "ExchangeClient(target=simulator url=http://127.0.0.1:18090)"
    assert SECRET not in repr(client) and KEY not in repr(client)


def test_parse_order_and_positions_are_decimal_valued():
    order = parse_order({"symbol": "BTCUSDT", "orderId": 7, "clientOrderId": "p-1", "side": "BUY",
                         "positionSide": "BOTH", "type": "MARKET", "status": "FILLED", "origQty": "0.002",
                         "executedQty": "0.002", "avgPrice": "87964.30", "cumQuote": "175.9286",
                         "reduceOnly": False, "updateTime": 1})
    positions = parse_open_positions([
        {"symbol": "BTCUSDT", "positionAmt": "0.002", "entryPrice": "87964.3", "unRealizedProfit": "0.1"},
        {"symbol": "ETHUSDT", "positionAmt": "0.000", "entryPrice": "0", "unRealizedProfit": "0"},
        {"symbol": "TRXUSDT", "positionAmt": "-631", "entryPrice": "0.29", "unRealizedProfit": "-1.5"},
    ])

    assert order.filled and order.avg_price == D("87964.30") and order.side is Side.BUY
    assert [(p.symbol, p.amount) for p in positions] == [("BTCUSDT", D("0.002")), ("TRXUSDT", D("-631"))]


FILLED_ORDER = {"symbol": "BTCUSDT", "orderId": 7, "clientOrderId": "p-1", "side": "BUY", "type": "MARKET",
                "status": "FILLED", "origQty": "0.002", "executedQty": "0.002"}


@pytest.mark.parametrize(("fields", "price"), [
    ({"avgPrice": "87964.30", "cumQuote": "175.9286"}, D("87964.30")),
    ({"cumQuote": "175.9286"}, D("87964.3")),  # avgPrice gone from the new-order reply: the quote over the quantity
    ({"avgPrice": "0", "cumQuote": "175.9286"}, D("87964.3")),
])
def test_an_orders_average_price_comes_from_the_quote_when_the_reply_has_none(fields, price) -> None:
    assert parse_order({**FILLED_ORDER, **fields}).avg_price == price


def test_a_fill_without_any_price_is_malformed_not_a_fill_at_zero() -> None:
    """Found in review: a reply without avgPrice recorded the open at entry price 0 in the ledger."""
    with pytest.raises(ValueError, match="without avgPrice or cumQuote"):
        parse_order(FILLED_ORDER)
    assert parse_order({**FILLED_ORDER, "status": "EXPIRED", "executedQty": "0"}).avg_price == 0


@pytest.mark.parametrize("env,expected", [({}, 5000), ({"EXCHANGE_RECV_WINDOW_MS": "2500"}, 2500)])
def test_signed_requests_carry_the_configured_recv_window(env, expected) -> None:
    settings = sim_settings(**env)

    assert build_binance_client(settings).REQUEST_RECVWINDOW == expected
    assert ExchangeClient(settings).recv_window_ms == expected


def test_each_request_says_the_daemon_is_alive_before_and_after_it_even_when_it_fails():
    """A tick of several requests to a slow exchange outlasted systemd's WatchdogSec with the watchdog unfed: each
    request now feeds it on the way in and out (shared.runtime.exchange wires watchdog_alive)."""
    events: list[str] = []

    class Traced(StubBinance):
        def __getattr__(self, name):
            call = super().__getattr__(name)
            return lambda **params: (events.append(name), call(**params))[1]

    stub = Traced(futures_time={"serverTime": 1}, futures_position_information=api_error(500, -1000, "boom"))
    client = ExchangeClient(sim_settings(), binance_client=stub, alive=lambda: events.append("alive"))

    client.server_time()
    with pytest.raises(ExchangeError):
        client.positions()

    assert events == ["alive", "futures_time", "alive", "alive", "futures_position_information", "alive"]
