"""python-binance / requests exceptions to the exchange error tree (shared.exchange.errors).

`side_effect` says whether the request could have changed state on the exchange (an order, a cancel).
For those, an ambiguous failure is OutcomeUnknown; for reads the same failure is just ExchangeUnavailable.
A 503 on an order means "not executed" only when it is Binance's own "Service Unavailable." error. Any
other 5xx (whatever its code: a real order executed after a 503 with -1008, banbox/banbot#114 in 2025-09,
though the docs call -1008 and "Internal error; unable to process your request" failures), a 408
("timeout while waiting for a response from the backend server"), an "unknown error" code, or a page
from a proxy on the way may all follow an order that executed. Reading them as unknown costs a lookup
and a wait before the plan ends `order_not_found`; reading one wrongly as unsent could let a plan end
while its order stands.
"""

from __future__ import annotations

import re

import ssl
from collections.abc import Iterable

import requests
from binance.exceptions import BinanceAPIException, BinanceRequestException
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.exceptions import SSLError as Urllib3SSLError
from urllib3.util.ssl_match_hostname import CertificateError

from shared.exchange.transport import ConnectFailed, HandshakeFailed
from shared.exchange.errors import (
    ExchangeError,
    ExchangeRejected,
    ExchangeUnavailable,
    OutcomeUnknown,
    RateLimited,
    sanitize,
)

LIBRARY_ERRORS = (BinanceAPIException, BinanceRequestException, requests.exceptions.RequestException)

# 403: Binance's web application firewall (its limits, often a rate), before the request is processed: not
# executed, and sending more soon makes it worse. Before, it read as a rejection that retrying cannot cure.
RATE_LIMIT_STATUSES = frozenset({403, 418, 429})
RATE_LIMIT_CODES = frozenset({-1003, -1015})
BANNED_UNTIL = re.compile(r"banned until (\d{10,16})")  # a 418's message: "... IP banned until 1767295800000. ..."
# -1000: "An unknown error occurred while processing the request."
# -1006: "An unexpected response was received from the message bus. Execution status unknown."
# -1007: "Timeout waiting for response from backend server. Send status unknown; execution status unknown."
UNKNOWN_OUTCOME_CODES = frozenset({-1000, -1006, -1007})
# HTTP 408: the gateway timed out waiting for the backend, which may have executed the request.
UNKNOWN_OUTCOME_STATUSES = frozenset({408})
# -1001 internal error / -1008 server overloaded / -1016 service shutting down: not executed, when they come
# with a 4xx status. On a 5xx the status decides (above).
UNAVAILABLE_CODES = frozenset({-1001, -1008, -1016})
# The one 503 error Binance documents as "the request was not executed".
SERVICE_UNAVAILABLE_MSG = "Service Unavailable."
# Failures during connection setup: the request line never reached the exchange. Not requests' SSLError as
# such: on its general path that also means a TLS failure after the request was written (maybe sent).
NOT_SENT_ERRORS = (
    ConnectFailed,
    HandshakeFailed,
    requests.exceptions.ConnectTimeout,
    requests.exceptions.ProxyError,
)


def translate(
    exc: BaseException, operation: str, side_effect: bool, secrets: Iterable[str] = ()
) -> ExchangeError:
    """The error-tree member for a library exception; its message is scrubbed of URLs' queries and secrets."""
    secrets = tuple(secrets)
    if isinstance(exc, BinanceAPIException):
        return from_api_error(exc, operation, side_effect, secrets)
    if isinstance(exc, BinanceRequestException):
        return _ambiguous(f"{operation}: unreadable response: {exc.message}", side_effect, secrets)
    if isinstance(exc, requests.exceptions.RequestException):
        return from_transport_error(exc, operation, side_effect, secrets)
    return ExchangeError(sanitize(f"{operation}: {type(exc).__name__}: {exc}", secrets))


def from_api_error(
    exc: BinanceAPIException, operation: str, side_effect: bool, secrets: tuple[str, ...]
) -> ExchangeError:
    status, code = int(exc.status_code or 0), int(exc.code or 0)
    msg = sanitize(str(exc.message or ""), secrets)
    text = f"{operation}: HTTP {status} code={code} {msg}"
    if status in RATE_LIMIT_STATUSES or code in RATE_LIMIT_CODES:
        until = BANNED_UNTIL.search(msg)
        return RateLimited(text, retry_after_s=_retry_after(exc), banned=status == 418,
                           banned_until_ms=int(until.group(1)) if until else None)
    if status == 503 and _is_service_unavailable(exc):
        return ExchangeUnavailable(text)
    if status >= 500 or status in UNKNOWN_OUTCOME_STATUSES or code in UNKNOWN_OUTCOME_CODES:
        return _ambiguous(text, side_effect, ())
    if code in UNAVAILABLE_CODES:
        return ExchangeUnavailable(text)
    return ExchangeRejected(code, msg, http_status=status, operation=operation)


def _is_service_unavailable(exc: BinanceAPIException) -> bool:
    """Binance's JSON error {"code": ..., "msg": "Service Unavailable."}, exactly (python-binance keeps the
    "msg" of a JSON body as `message`, and prefixes anything that is not JSON)."""
    return isinstance(exc.code, int) and exc.message == SERVICE_UNAVAILABLE_MSG


def from_transport_error(
    exc: requests.exceptions.RequestException, operation: str, side_effect: bool, secrets: tuple[str, ...]
) -> ExchangeError:
    text = f"{operation}: {type(exc).__name__}: {_root_cause(exc)}"
    if isinstance(exc, NOT_SENT_ERRORS) or _never_sent(exc):
        return ExchangeUnavailable(sanitize(text, secrets))
    if isinstance(exc, (requests.exceptions.Timeout, requests.exceptions.ConnectionError)):
        return _ambiguous(text, side_effect, secrets)
    return ExchangeError(sanitize(text, secrets))


def _ambiguous(text: str, side_effect: bool, secrets: Iterable[str]) -> ExchangeError:
    cleaned = sanitize(text, secrets)
    return OutcomeUnknown(cleaned) if side_effect else ExchangeUnavailable(cleaned)


def _never_sent(exc: requests.exceptions.RequestException) -> bool:
    """Connection refused, DNS failure, connect timeout or a certificate refused (checked only during the
    handshake): the request cannot have reached the exchange."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, Urllib3SSLError):  # urllib3 1.26 raises its own CertificateError for a wrong name
        return bool(reason.args) and isinstance(reason.args[0], (ssl.SSLCertVerificationError, CertificateError))
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _root_cause(exc: BaseException) -> str:
    # urllib3 nests the useful part (e.g. "Connection refused") inside MaxRetryError; drop the URL noise.
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    cause = reason if reason is not None else exc
    return str(cause)


def _retry_after(exc: BinanceAPIException) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return float(headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None
