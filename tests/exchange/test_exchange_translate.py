import json
import ssl

import pytest
import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException
import urllib3
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError
from urllib3.util.ssl_match_hostname import CertificateError

from shared.exchange.errors import (
    ExchangeError,
    ExchangeRejected,
    ExchangeUnavailable,
    OutcomeUnknown,
    RateLimited,
    sanitize,
)
from shared.exchange.translate import translate

SECRET = "SECRETVALUE-9d8c7b6a5f4e"
SIGNED_URL = "http://127.0.0.1:8090/fapi/v1/order?symbol=BTCUSDT&timestamp=1&signature=abcdef0123456789"
TIMEOUT_1007 = ("Timeout waiting for response from backend server. Send status unknown; "
                "execution status unknown.")
PROXY_503 = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"


class StubResponse:
    def __init__(self, text: str, headers: dict | None = None) -> None:
        self.text = text
        self.headers = headers or {}
        self.request = None


def api_error(status: int, code: int | None, msg: str, headers: dict | None = None) -> BinanceAPIException:
    body = msg if code is None else json.dumps({"code": code, "msg": msg})
    return BinanceAPIException(StubResponse(body, headers), status, body)


def refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, SIGNED_URL, reason))


def dropped() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104)))


def tls_failed(cause: Exception) -> requests.exceptions.SSLError:
    """requests' general path: urllib3's SSLError around what the ssl module (or urllib3 1.26) raised."""
    return requests.exceptions.SSLError(MaxRetryError(None, SIGNED_URL, urllib3.exceptions.SSLError(cause)))


@pytest.mark.parametrize(
    ("exc", "side_effect", "expected"),
    [
        (api_error(503, -1000, "Unknown error, please check your request or try again later."), True,
         OutcomeUnknown),
        (api_error(503, None, "Unknown error, please check your request or try again later."), True,
         OutcomeUnknown),
        (api_error(503, -1000, "Unknown error, please check your request or try again later."), False,
         ExchangeUnavailable),
        (api_error(503, -1001, "Service Unavailable."), True, ExchangeUnavailable),
        (api_error(503, -1001, "Service Unavailable."), False, ExchangeUnavailable),
        (api_error(503, None, "Service Unavailable."), True, OutcomeUnknown),
        (api_error(503, -1001, "service unavailable"), True, OutcomeUnknown),
        (api_error(503, None, PROXY_503), True, OutcomeUnknown),
        (api_error(503, None, PROXY_503), False, ExchangeUnavailable),
        (api_error(503, None, ""), True, OutcomeUnknown),
        (api_error(503, -1001, "Internal error; unable to process your request. Please try again."), True,
         OutcomeUnknown),
        (api_error(503, -1001, "Internal error; unable to process your request. Please try again."), False,
         ExchangeUnavailable),
        (api_error(503, -1007, TIMEOUT_1007), True, OutcomeUnknown),
        (api_error(503, -1007, TIMEOUT_1007), False, ExchangeUnavailable),
        (api_error(500, -1007, TIMEOUT_1007), True, OutcomeUnknown),
        (api_error(504, -1007, TIMEOUT_1007), True, OutcomeUnknown),
        (api_error(400, -1007, "Timeout waiting for response from backend server."), True, OutcomeUnknown),
        (api_error(500, -1001, "Internal error; unable to process your request. Please try again."), True,
         OutcomeUnknown),  # any 5xx but Binance's own "Service Unavailable." may follow an executed order
        (api_error(500, -1001, "Internal error; unable to process your request. Please try again."), False,
         ExchangeUnavailable),
        (api_error(504, -1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
         True, OutcomeUnknown),
        (api_error(502, -1016, "This service is no longer available."), True, OutcomeUnknown),
        (api_error(400, -1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
         True, ExchangeUnavailable),
        (api_error(408, None, "<html>Request Timeout</html>"), True, OutcomeUnknown),  # the backend may have run it
        (api_error(408, -1000, "An unknown error occured while processing the request."), True, OutcomeUnknown),
        (api_error(408, None, "<html>Request Timeout</html>"), False, ExchangeUnavailable),
        (api_error(400, -1000, "An unknown error occured while processing the request."), True, OutcomeUnknown),
        (api_error(502, None, "<html>Bad Gateway</html>"), True, OutcomeUnknown),
        (api_error(429, -1003, "Too many requests."), True, RateLimited),
        (api_error(418, -1003, "Way too many requests; IP banned."), False, RateLimited),
        (api_error(403, None, "<html>403 Forbidden</html>"), True, RateLimited),  # the WAF: not executed, back off
        (api_error(400, -4164, "Order's notional must be no smaller than 100 (unless you choose reduce only)."),
         True, ExchangeRejected),
        (api_error(400, -2019, "Margin is insufficient."), True, ExchangeRejected),
        (api_error(400, -2013, "Order does not exist."), False, ExchangeRejected),
        (api_error(401, -2015, "Invalid API-key, IP, or permissions for action."), False, ExchangeRejected),
        (requests.exceptions.ReadTimeout("read timed out"), True, OutcomeUnknown),
        (requests.exceptions.ReadTimeout("read timed out"), False, ExchangeUnavailable),
        (requests.exceptions.ConnectTimeout("connect timed out"), True, ExchangeUnavailable),
        (refused(), True, ExchangeUnavailable),
        (dropped(), True, OutcomeUnknown),
        (dropped(), False, ExchangeUnavailable),
        (tls_failed(ssl.SSLCertVerificationError(1, "certificate verify failed")), True, ExchangeUnavailable),
        (tls_failed(CertificateError("hostname doesn't match")), True, ExchangeUnavailable),  # urllib3 1.26
        (tls_failed(ssl.SSLError(1, "decryption failed or bad record mac")), True, OutcomeUnknown),
        (tls_failed(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")), True, OutcomeUnknown),
        (BinanceRequestException("Invalid Response: <html>"), True, OutcomeUnknown),
        (BinanceRequestException("Invalid Response: <html>"), False, ExchangeUnavailable),
        (requests.exceptions.InvalidURL("bad url"), False, ExchangeError),
    ],
)
def test_translation_table(exc, side_effect, expected):
    error = translate(exc, "op", side_effect)

    assert type(error) is expected


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (ExchangeUnavailable("x"), True),
        (RateLimited("x"), True),
        (OutcomeUnknown("x"), False),
        (ExchangeRejected(-2019, "Margin is insufficient."), False),
    ],
)
def test_retryable_flags(error, retryable):
    assert error.retryable is retryable


def test_rejection_keeps_code_and_message():
    error = translate(api_error(400, -4164, "notional too small"), "create_market_order", True)

    assert (error.code, error.msg, error.http_status) == (-4164, "notional too small", 400)


def test_rate_limit_reads_retry_after():
    error = translate(api_error(429, -1003, "slow down", {"Retry-After": "7"}), "op", False)

    assert error.retry_after_s == 7.0


def test_a_ban_names_its_end_and_a_limit_without_header_says_none():
    banned = translate(api_error(418, -1003, "Way too much request weight used; IP banned until 1767295800000. "
                                             "Please use WebSocket Streams for live updates to avoid bans."), "op", False)
    limited = translate(api_error(429, -1003, "Too many requests"), "op", False)

    assert (banned.banned, banned.banned_until_ms, banned.retry_after_s) == (True, 1767295800000, None)
    assert (limited.banned, limited.banned_until_ms, limited.retry_after_s) == (False, None, None)


def test_messages_drop_signed_urls_and_secrets():
    exc = requests.exceptions.ReadTimeout(f"timeout for {SIGNED_URL} key={SECRET}")

    text = str(translate(exc, "get_order", False, secrets=[SECRET]))

    assert "abcdef0123456789" not in text
    assert "timestamp=1" not in text and SECRET not in text


@pytest.mark.parametrize(
    ("raw", "forbidden"),
    [
        (SIGNED_URL, "abcdef0123456789"),
        ("signature=deadbeef&x=1", "deadbeef"),
        ("headers={'X-MBX-APIKEY': 'abc123key'}", "abc123key"),
        (f"secret is {SECRET}", SECRET),
        ("line1\nline2", "\n"),
    ],
)
def test_sanitize(raw, forbidden):
    assert forbidden not in sanitize(raw, secrets=[SECRET])


@pytest.mark.parametrize("secret", ["AbCdEf0123456789KEY\r", "AbCdEf0123456789KEY\r\n", "\tAbCdEf0123456789KEY",
                                    "AbCdEf01234\x1b56789KEY"], ids=["cr", "crlf", "tab", "escape"])
def test_sanitize_redacts_a_secret_quoted_with_escapes(secret):
    # requests' InvalidHeader quotes the bad header value with repr()
    raw = f"Invalid leading whitespace, reserved character(s), or return character(s) in header value: {secret!r}"

    cleaned = sanitize(raw, secrets=[secret])

    assert "0123456789" not in cleaned and "<redacted>" in cleaned

