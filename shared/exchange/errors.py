"""The exchange error tree and the scrubbing applied to every message that leaves this package.

ExchangeError                 base; `retryable` says whether sending the same request again is safe
  ExchangeUnavailable         the request was not executed (connection refused, 503 "Service Unavailable.")
    RateLimited               -1003 / HTTP 429 / 418; retry after `retry_after_s`
  OutcomeUnknown              the request may or may not have executed (timeout, 503 "Unknown error...");
                              query the order by its client order id before doing anything else
  ExchangeRejected            the exchange refused the request with a code (fatal for this request)
  UnknownSymbol               the symbol is not in the exchange's trading rules
  ExchangeStartupError        the startup self-test failed; the daemon exits with this line
  ExchangeSettingsError       the exchange settings are invalid; the daemon exits with this line
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_MESSAGE_CHARS = 300
REDACTED = "<redacted>"

_URL_QUERY = re.compile(r"(https?://[^\s?'\"<>]+)\?[^\s'\"<>]*")
_SIGNATURE = re.compile(r"(signature=)[^&\s'\"]+", re.IGNORECASE)
_API_KEY_HEADER = re.compile(r"(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+", re.IGNORECASE)


class ExchangeError(Exception):
    """Base of every error raised by shared.exchange."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ExchangeUnavailable(ExchangeError):
    """Nothing was executed; the same request may be sent again later."""

    retryable = True


class RateLimited(ExchangeUnavailable):
    """The exchange asked us to slow down (-1003, HTTP 429, or 418 IP ban). `retry_after_s`: its Retry-After header,
    if any; `banned_until_ms`: for a ban, the end its message names (exchange time), if any."""

    def __init__(self, message: str, retry_after_s: float | None = None, banned: bool = False,
                 banned_until_ms: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.banned = banned
        self.banned_until_ms = banned_until_ms


class OutcomeUnknown(ExchangeError):
    """The request may have executed; reconcile by client order id before retrying."""

    retryable = False


class ExchangeRejected(ExchangeError):
    """The exchange answered with an error code; sending the same request again will fail again."""

    retryable = False

    def __init__(self, code: int, msg: str, http_status: int | None = None, operation: str = "request") -> None:
        super().__init__(f"{operation}: exchange rejected: code={code} msg={msg}")
        self.code = code
        self.msg = msg
        self.http_status = http_status


class UnknownSymbol(ExchangeError):
    """The symbol has no trading rules in the filter cache."""

    def __init__(self, symbol: str) -> None:
        super().__init__(f"unknown symbol: {symbol}")
        self.symbol = symbol


# What the exchange answers to credentials or a signature it refuses: the same on every start until they change.
CREDENTIAL_CODES = frozenset({-1002, -1022, -2014, -2015})


class ExchangeStartupError(ExchangeError):
    """The startup self-test failed; `str()` is the one line the daemon prints before exiting. `misconfigured`:
    it fails the same way on every start until an operator changes something (a refused key, hedge mode)."""

    def __init__(self, target: str, step: str, detail: str, misconfigured: bool = False) -> None:
        super().__init__(f"exchange self-test failed: target={target} step={step}: {detail}")
        self.target = target
        self.step = step
        self.misconfigured = misconfigured


def refuses_credentials(error: ExchangeError) -> bool:
    """The exchange refused our key or signature (-2015, -2014, -1022, -1002, or HTTP 401)."""
    return isinstance(error, ExchangeRejected) and (error.code in CREDENTIAL_CODES or error.http_status == 401)


class ExchangeSettingsError(ExchangeError):
    """Invalid exchange settings; `str()` is one line naming the variable(s), never a secret value."""


def sanitize(text: str, secrets: Iterable[str] = (), max_chars: int = MAX_MESSAGE_CHARS) -> str:
    """Strip query strings, signatures, API-key headers and the given secret values; one line, bounded."""
    cleaned = _URL_QUERY.sub(rf"\1?{REDACTED}", text)
    cleaned = _SIGNATURE.sub(rf"\1{REDACTED}", cleaned)
    cleaned = _API_KEY_HEADER.sub(rf"\1{REDACTED}", cleaned)
    for secret in secrets:
        for form in secret_forms(secret):
            cleaned = cleaned.replace(form, REDACTED)
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 3] + "..."
    return cleaned


def secret_forms(secret: str) -> tuple[str, ...]:
    """A secret as written and as repr() escapes it: an error quoting a bad header value shows `'key\\r'`."""
    if not secret:
        return ()
    escaped = repr(secret)[1:-1]
    return (secret,) if escaped == secret else (secret, escaped)
