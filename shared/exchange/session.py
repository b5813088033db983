"""ApiSession: the requests.Session python-binance drives, with a lean path for its own call shapes.

python-binance calls `session.get/post/put/delete(url, headers=..., data=..., params=..., timeout=...)`.
For exactly those shapes ApiSession writes the request requests would write (same request line,
headers and body: tests compare the two on the wire for every shape) and sends it on its own
kept-alive connection (shared.exchange.transport), then hands python-binance a requests.Response.
requests' general path costs an order ~0.4 ms of client CPU for things a signed REST API never
uses: cookie jars, auth and hooks merged, environment lookups, redirects, urllib3's pool and
http.client's header parsing. Any other call (another method, cookies, files, json, auth, proxies,
client certificates, a query already in the URL, a URL or query whose escaping requests and urllib3
would rewrite...) goes through requests.Session.request unchanged.

Differences from requests, all on purpose: a redirect is returned, not followed (Binance's REST API
does not redirect; if something on the way did, python-binance raises on the 3xx instead of a signed
POST being sent again to another address); cookies are neither stored nor sent (every request is
authenticated by key and signature); `response.elapsed` is not measured and `response.raw` is None.
Exceptions are requests' types, with the meaning the exchange error tree reads from them (see
shared.exchange.transport: never sent, or maybe sent).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers, requote_uri

from shared.exchange.transport import DEFAULT_PORTS, Origin, Transport

# The keyword arguments python-binance passes (through Session.get/post/put/delete, which add
# allow_redirects and json=None); anything else takes requests' general path.
_LEAN_ARGUMENTS = frozenset({"params", "data", "headers", "timeout", "allow_redirects", "json"})
# python-binance's methods; HEAD's reply has no body to wait for, and nothing else is ever used.
_LEAN_METHODS = frozenset({"GET", "POST", "PUT", "DELETE"})
# What the transport can decode (requests advertises brotli/zstd too when those modules are installed).
ACCEPT_ENCODING = "gzip, deflate"
_BODYLESS = frozenset({"GET", "HEAD"})
# Where requests' requote_uri and urllib3's target encoding rewrite a URL beyond what requote_uri alone
# does: '%' not starting an upper-case escape, '[', ']', '#' (a fragment), space, control or non-ASCII.
_REWRITTEN = re.compile(r"%(?![0-9A-F]{2})|[^\x21-\x7e]|[\[\]#]")
# urllib3 drops "." and ".." path segments before requests requotes the URL.
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")
FORM = "application/x-www-form-urlencoded"
# The header names and values requests accepts (requests.utils.check_header_validity).
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*")
_HEADER_VALUE = re.compile(r"\S[^\r\n]*|")


class ApiSession(requests.Session):
    """A requests.Session for a signed JSON API: no cookies, no redirects, no environment lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False  # the target is explicit: no proxy/netrc lookup on every request
        self.headers["Accept-Encoding"] = ACCEPT_ENCODING
        self.transport = Transport()

    def request(self, method: str, url: Any, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        lean = self._lean_request(method, url, args, kwargs)
        if lean is None:
            return super().request(method, url, *args, **kwargs)
        origin, path_and_query, request_bytes = lean
        reply = self.transport.exchange(origin, request_bytes, kwargs.get("timeout"), self.verify)
        return _response(reply, f"{origin.scheme}://{origin.host_header}{path_and_query}")

    def _lean_request(self, method: str, url: Any, args: tuple, kwargs: dict) -> tuple[Origin, str, bytes] | None:
        """(origin, request target, the bytes requests would write) for python-binance's call shapes; None
        for anything else."""
        target = _lean_target(url) if isinstance(url, str) else None
        params, data = kwargs.get("params"), kwargs.get("data")
        headers = self.merged_headers(kwargs.get("headers"))
        if (target is None or headers is None or args or method.upper() not in _LEAN_METHODS
                or not _LEAN_ARGUMENTS.issuperset(kwargs) or kwargs.get("json") is not None
                or not _is_plain_query(params) or not _is_form(data) or self._has_session_state()):
            return None
        body = _form(data).encode() if data else b""
        if data and not body:  # requests sends a body that encodes to nothing as an empty chunked stream
            return None
        origin, path = target
        path_and_query = requote_uri(f"{path}?{params}") if params else path
        return origin, path_and_query, _request_bytes(method.upper(), origin, path_and_query, headers, body)

    def merged_headers(self, headers: Any) -> CaseInsensitiveDict | None:
        """The session's headers, overridden (or removed, by None) by the call's; None when one of them is
        not a header requests would send (it then raises its own error on the general path)."""
        merged = CaseInsensitiveDict(self.headers)
        for name, value in (headers or {}).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        valid = all(isinstance(name, str) and isinstance(value, str) and _sendable_header(name, value)
                    for name, value in merged.items())
        return merged if valid else None

    def _has_session_state(self) -> bool:
        """Session-wide settings the lean path does not apply: with any of them, use requests' path."""
        return bool(self.auth or self.params or self.stream or self.trust_env or self.hooks["response"]
                    or self.proxies or self.cert or not _is_plain_verify(self.verify))

    def close(self) -> None:
        self.transport.close()
        super().close()


@lru_cache(maxsize=256)
def _sendable_header(name: str, value: str) -> bool:
    """A header requests would send as it is. The same few headers go with every request: each pair is
    matched once."""
    return bool(_HEADER_NAME.fullmatch(name) and _HEADER_VALUE.fullmatch(value))


@lru_cache(maxsize=64)
def _lean_target(url: str) -> tuple[Origin, str] | None:
    """(origin, path) of a plain http(s) URL; None for anything requests should handle (a query or
    fragment already there, user:password@, a non-ASCII host, an odd port)."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    host = parts.hostname
    if (parts.scheme not in DEFAULT_PORTS or not host or not host.isascii() or parts.query or parts.fragment
            or "@" in parts.netloc or port is None or _REWRITTEN.search(parts.path)
            or _DOT_SEGMENT.search(parts.path)):
        return None
    return Origin(parts.scheme, host, port), requote_uri(parts.path or "/")


def _is_plain_query(params: Any) -> bool:
    """None, or a query string that requote_uri alone turns into the bytes requests and urllib3 send."""
    return params is None or (isinstance(params, str) and not _REWRITTEN.search(params))


def _is_plain_verify(verify: Any) -> bool:
    """True, False or a CA path; requests reads other values (None, "") its own way."""
    return isinstance(verify, bool) or (isinstance(verify, str) and bool(verify))


def _is_form(data: Any) -> bool:
    """python-binance's bodies: None, {} (an unsigned call without parameters), or an ordered list of
    (name, value) pairs."""
    if data is None or data == {}:
        return True
    return isinstance(data, (list, tuple)) and all(isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in data)


def _form(pairs: list[tuple[Any, Any]]) -> str:
    """python-binance's ordered (name, value) list as a form body, encoded as requests encodes it
    (UTF-8, quote_plus, None values left out) without its per-value type checks."""
    return urlencode([(name, value) for name, value in pairs if value is not None], doseq=True)


def _request_bytes(method: str, origin: Origin, path_and_query: str, headers: CaseInsensitiveDict,
                   body: bytes) -> bytes:
    if body or method not in _BODYLESS:
        headers["Content-Length"] = str(len(body))
    if body and "Content-Type" not in headers:
        headers["Content-Type"] = FORM  # as requests labels a form body
    lines = [f"{method} {path_and_query} HTTP/1.1", f"Host: {origin.host_header}",
             *(f"{name}: {value}" for name, value in headers.items()), "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def _response(reply, url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = reply.status
    response.reason = reply.reason
    response.headers = CaseInsensitiveDict(reply.headers)
    response._content = reply.body
    response.encoding = get_encoding_from_headers(response.headers)
    response.url = url
    return response
