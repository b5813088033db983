import pytest

from microservices.exchange_sim import errors
from microservices.exchange_sim.auth import authenticate_signed, sign, total_params

BINANCE_SECRET = "2b5eb11e18796d12d88f13dc27dbbd02c2cc51ff7059765ed9821957d82bb4d9"
BINANCE_PAYLOAD = (
    "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=9000&timeInForce=GTC&recvWindow=5000&timestamp=1591702613943"
)
BINANCE_SIGNATURE = "3c661234138461fcc7a7d8746c6558c9842d4e10870d2ecbedf7777cad694af9"
KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"


def _auth(raw_query: str, raw_body: str = "", now_ms: int = 1591702613943 + 100, key: str | None = KEY):
    return authenticate_signed(api_key_header=key, raw_query=raw_query, raw_body=raw_body, api_key=KEY,
                               api_secret=BINANCE_SECRET, now_ms=now_ms, client_ip="127.0.0.1")


def test_binance_published_example_signature():
    assert sign(BINANCE_SECRET, BINANCE_PAYLOAD) == BINANCE_SIGNATURE


@pytest.mark.parametrize("split", [None, "query", "body"])
def test_published_example_verifies_as_query_or_body(split):
    signed = f"{BINANCE_PAYLOAD}&signature={BINANCE_SIGNATURE}"
    params = _auth(signed) if split in (None, "query") else _auth("", signed)
    assert params["symbol"] == "BTCUSDT" and params["price"] == "9000"
    assert "signature" not in params


def test_mixed_query_and_body_concatenate_without_ampersand():
    query = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
    body = "quantity=1&price=9000&recvWindow=5000&timestamp=1591702613943"
    signature = sign(BINANCE_SECRET, query + body)
    assert total_params(query, f"{body}&signature={signature}") == (query + body, signature)
    assert _auth(query, f"{body}&signature={signature.upper()}")["quantity"] == "1"


def test_tampered_payload_is_rejected():
    tampered = BINANCE_PAYLOAD.replace("price=9000", "price=9001")
    with pytest.raises(errors.ApiError) as caught:
        _auth(f"{tampered}&signature={BINANCE_SIGNATURE}")
    assert (caught.value.code, caught.value.status) == (-1022, 400)


@pytest.mark.parametrize(
    ("now_ms", "message"),
    [
        (1591702613943 + 5001, "Timestamp for this request is outside of the recvWindow."),
        (1591702613943 - 1001, "Timestamp for this request was 1000ms ahead of the server's time."),
    ],
)
def test_injected_clock_drives_recv_window(now_ms, message):
    with pytest.raises(errors.ApiError) as caught:
        _auth(f"{BINANCE_PAYLOAD}&signature={BINANCE_SIGNATURE}", now_ms=now_ms)
    assert (caught.value.code, caught.value.msg) == (-1021, message)


def test_recv_window_edges_accept():
    signed = f"{BINANCE_PAYLOAD}&signature={BINANCE_SIGNATURE}"
    assert _auth(signed, now_ms=1591702613943 + 5000)
    assert _auth(signed, now_ms=1591702613943 - 999)  # timestamp < serverTime + 1000


@pytest.mark.parametrize(
    ("key", "code", "status"), [(None, -2014, 401), ("bad key", -2014, 401), ("A" * 64, -2015, 401)]
)
def test_api_key_checks_come_first(key, code, status):
    with pytest.raises(errors.ApiError) as caught:
        _auth("timestamp=1&signature=00", key=key)
    assert (caught.value.code, caught.value.status) == (code, status)


def test_missing_signature_and_timestamp_are_mandatory():
    with pytest.raises(errors.ApiError) as caught:
        _auth("symbol=BTCUSDT&timestamp=1591702613943")
    assert caught.value.msg == "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
    with pytest.raises(errors.ApiError) as caught:
        _auth("symbol=BTCUSDT&signature=ab")
    assert caught.value.msg == "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."


@pytest.mark.parametrize("raw", [
    "", "&", "a", "a=", "=a", "=", "a=b=c", "a&b=", "a=1&&b=2&", "a=1;b=2", "a=1&a=2", "sym=BTC%55SDT",
    "newClientOrderId=a%3Ab%2Fc", "a+b=c+d", "x=%zz", "k=%E2%82%AC", "k=€",
])
def test_request_params_parse_like_parse_qsl(raw):
    from urllib.parse import parse_qsl

    from microservices.exchange_sim.auth import request_params

    expected = dict(parse_qsl(raw, keep_blank_values=True))
    assert request_params("", raw) == request_params(raw, "") == expected
    assert request_params(raw, "a=body&z=body") == {"a": "body", "z": "body", **expected}


@pytest.mark.parametrize(("ahead_ms", "accepted"), [(999, True), (1000, False)])
def test_a_timestamp_is_accepted_only_below_server_time_plus_a_second(ahead_ms, accepted) -> None:
    """Binance processes a request only if timestamp < serverTime + 1000 (found in review: exactly 1000 ms ahead
    passed here)."""
    from microservices.exchange_sim.auth import check_timing
    from microservices.exchange_sim.errors import ApiError

    params = {"timestamp": str(1_800_000_000_000 + ahead_ms)}
    if accepted:
        check_timing(params, 1_800_000_000_000)
    else:
        with pytest.raises(ApiError, match="1000ms ahead"):
            check_timing(params, 1_800_000_000_000)
