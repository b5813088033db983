"""Binance request authentication: X-MBX-APIKEY plus HMAC-SHA256 over query string + body."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl

from . import errors

API_KEY_RE = re.compile(r"^[A-Za-z0-9]{1,128}$")
DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
FUTURE_TOLERANCE_MS = 1000


def sign(secret: str, payload: str) -> str:
    return hmac.digest(secret.encode(), payload.encode(), hashlib.sha256).hex()


def _strip_signature(raw: str) -> tuple[str, str | None]:
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part.removeprefix("signature=")
        else:
            kept.append(part)
    return "&".join(kept), signature


def total_params(raw_query: str, raw_body: str) -> tuple[str, str | None]:
    """The signed payload exactly as Binance defines it (query string concatenated with body, no '&')."""
    query, query_sig = _strip_signature(raw_query)
    body, body_sig = _strip_signature(raw_body)
    return query + body, query_sig if query_sig is not None else body_sig


def _pairs(raw: str) -> list[tuple[str, str]]:
    """parse_qsl(raw, keep_blank_values=True), without its per-field unquoting when nothing is escaped."""
    if "%" in raw or "+" in raw:
        return parse_qsl(raw, keep_blank_values=True)
    # with no '%' or '+' parse_qsl's unquoting is the identity: it drops empty fields and splits each
    # at its first '=' (a field with none gets the value "")
    return [(name, value) for name, _, value in (field.partition("=") for field in raw.split("&") if field)]


def request_params(raw_query: str, raw_body: str) -> dict[str, str]:
    """Body params overridden by query params, as Binance resolves duplicates."""
    params = dict(_pairs(raw_body))
    params.update(_pairs(raw_query))
    return params


def check_api_key(header: str | None, expected: str, client_ip: str) -> None:
    if not header or not API_KEY_RE.match(header):
        raise errors.api_key_format_invalid()
    if not hmac.compare_digest(header.encode(), expected.encode()):
        raise errors.rejected_api_key(client_ip)


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise errors.mandatory_missing(name) if name == "timestamp" else errors.invalid_param(name)
    return int(raw)


def _window(params: dict[str, str]) -> tuple[int, int]:
    """(timestamp, recvWindow) of a signed request, each checked."""
    timestamp = _int_param(params, "timestamp")
    if timestamp is None:
        raise errors.mandatory_missing("timestamp")
    recv_window = _int_param(params, "recvWindow")
    if recv_window is None:
        recv_window = DEFAULT_RECV_WINDOW
    if recv_window <= 0 or recv_window > MAX_RECV_WINDOW:
        raise errors.invalid_param("recvWindow")
    return timestamp, recv_window


def check_timing(params: dict[str, str], now_ms: int) -> None:
    timestamp, recv_window = _window(params)
    if timestamp >= now_ms + FUTURE_TOLERANCE_MS:  # Binance: processed only if timestamp < serverTime + 1000
        raise errors.timestamp_ahead()
    if now_ms - timestamp > recv_window:
        raise errors.timestamp_outside_window()


def check_engine_window(params: dict[str, str], now_ms: int) -> None:
    """The matching engine's own check when it takes the order: a request it gets past timestamp + recvWindow
    is refused, not executed, however long it waited on the way (the latency fault), so a client that saw no
    answer may believe "no such order" once that window is over."""
    timestamp, recv_window = _window(params)
    if now_ms - timestamp > recv_window:
        raise errors.outside_engine_window()


def check_signature(raw_query: str, raw_body: str, secret: str) -> None:
    payload, signature = total_params(raw_query, raw_body)
    if not signature:
        raise errors.mandatory_missing("signature")
    expected = sign(secret, payload)
    # Binance treats the hex signature case-insensitively
    if not hmac.compare_digest(expected, signature.lower()):
        raise errors.bad_signature()


def authenticate_signed(
    *, api_key_header: str | None, raw_query: str, raw_body: str, api_key: str, api_secret: str,
    now_ms: int, client_ip: str,
) -> dict[str, str]:
    """Validate a SIGNED request and return its parameters; raises ApiError like Binance."""
    check_api_key(api_key_header, api_key, client_ip)
    params = request_params(raw_query, raw_body)
    check_timing(params, now_ms)
    check_signature(raw_query, raw_body, api_secret)
    params.pop("signature", None)
    return params
