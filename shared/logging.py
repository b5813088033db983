"""JSON-lines logging with structlog; a processor redacts secrets before anything is written."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog

REDACTED = "***"
_SECRET_KEY = re.compile(r"(?i)(secret|password|passwd|api_?key|signature|token|authorization|credential)")
_PATTERNS = (
    (re.compile(r"(?i)(signature=)[0-9a-f]{16,}"), r"\1" + REDACTED),
    # A password in any URL's userinfo (redis://:pw@host, unix://:pw@/run/redis.sock, user:pw@) or query (?password=).
    # The userinfo runs to the netloc's last "@", as urllib (and so redis-py) splits it: a password may hold "@".
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^:/?#\s]*:)[^/?#\s]*@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?i)([?&;]password=['\"]?)[^&;\s'\"]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9]+"), r"\1" + REDACTED),
)
_MARKERS = ("signature", "://", "password", "apikey")


def _screen_for(secrets: Iterable[str]) -> re.Pattern[str]:
    """One search that finds whatever redact_text would act on: a registered secret (as it is) or a marker
    of the patterns (in any case, as the patterns match). Most text has neither and is returned at once."""
    markers = "(?i:" + "|".join(_MARKERS) + ")"
    return re.compile("|".join([markers, *(re.escape(secret) for secret in sorted(secrets, key=len, reverse=True))]))


# The registered secrets and their screen, replaced together in one assignment: a line logged by another
# thread while secrets are being registered sees the old pair or the new one, never a screen without them.
_secrets: tuple[frozenset[str], re.Pattern[str]] = (frozenset(), _screen_for(()))
_registering = threading.Lock()


def register_secrets(values: Iterable[str | None]) -> None:
    """Values that must never be written anywhere, wherever they appear in a message, also as repr() escapes
    them (an error quoting a header value shows a stray CR as a backslash and an r)."""
    global _secrets
    with _registering:
        registered = set(_secrets[0])
        for value in values:
            if value and len(value) >= 6:
                registered.update({value, repr(value)[1:-1]})
        _secrets = (frozenset(registered), _screen_for(registered))


def register_url_password(url: str) -> None:
    """The password in a connection URL is never written, also on its own or in another spelling of the URL (the
    URL itself may be shown with the password redacted: which Redis a command reached)."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    register_secrets([password and unquote(password)])


def redact_text(text: str) -> str:
    registered, screen = _secrets
    if not screen.search(text):
        return text
    for secret in registered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    lowered = text.lower()
    if any(marker in lowered for marker in _MARKERS):  # the patterns cost more than this scan
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
    return text


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    """Log keys repeat on every line: each is matched against the pattern once."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any, key: str = "") -> Any:
    if key and _is_secret_key(key) and isinstance(value, (str, bytes)) and value:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, Decimal, Enum)):
        return value
    return redact_text(repr(value))  # anything else is written as its repr (an exception, bytes): text to redact


def _redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: redact(value, key) for key, value in event_dict.items()}


def _json_default(value: Any) -> Any:
    """What JSON has no type for: an amount as its exact digits ("1.50", not "Decimal('1.50')"), an enum as its
    value, anything else as its repr (structlog's own fallback, without its per-call import); redact has already
    turned other objects into redacted text, so this sees them only in a line logged without it."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return repr(value)


def configure(daemon: str, level: str = "INFO") -> structlog.typing.FilteringBoundLogger:
    """JSON lines on stdout; tracebacks as text without local variables."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            structlog.processors.JSONRenderer(sort_keys=False, default=_json_default),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger().bind(daemon=daemon)


def get_logger(**bindings: Any) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger().bind(**bindings)
