"""HTTP/1.1 over one kept-alive socket per origin, for ApiSession's lean path; replies parsed by httptools.

requests' adapter, urllib3 and http.client (whose header parsing runs the email package) cost most of
an order's client CPU. This writes the request in one send and feeds what arrives to httptools' llhttp
parser (the C parser uvicorn uses); the request bytes themselves are built by ApiSession.

What the exchange error tree (shared.exchange.translate) reads from the exceptions raised here:
- ConnectFailed, HandshakeFailed and requests' ConnectTimeout: raised before any byte of the request
  was written, so it was never sent;
- requests' ConnectionError (any other) and ReadTimeout: the request may have reached the server.
Nothing here sends a request twice. A kept-alive socket the server has closed meanwhile is noticed
before writing (as urllib3 does) and replaced; a socket that failed during an exchange is discarded.
A CA path that cannot be loaded raises a plain OSError before any connection is opened: it is a setup
error, not an outage to wait out.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import httptools
import requests
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.util.ssl_ import ALPN_PROTOCOLS, create_urllib3_context

RECV_BYTES = 65536
DEFAULT_PORTS = {"http": 80, "https": 443}


class ConnectFailed(requests.exceptions.ConnectionError):
    """The connection could not be opened (refused, no route, name not found): nothing was sent."""


class HandshakeFailed(requests.exceptions.SSLError):
    """TLS could not be set up with the server (an untrusted certificate, no common protocol): nothing was sent.
    requests' own SSLError says less: its general path raises it for a TLS failure after the request was
    written too (a bad record or an EOF in the middle of the response)."""


class BrokenReply(requests.exceptions.ConnectionError):
    """After the request was written, the connection broke or the reply could not be read: for an order,
    an unknown outcome (as requests' own ConnectionError is)."""


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        """What requests (through http.client) sends as Host: the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # names as the server spelled them; repeated headers joined with ", "
    body: bytes  # decoded from its Content-Encoding


class _Parsed:
    """httptools' callbacks: what the first response carried. Whatever follows it in the same bytes answers
    nothing we asked: it is never read into the reply, only noted (`trailing`) so the socket is retired."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.headers_done = self.complete = self.trailing = self.keep_alive = False
        self.status = 0

    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True

    def on_status(self, reason: bytes) -> None:
        if not self.complete:
            self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # a chunked body's trailers are not headers, as in http.client
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.complete:
            self.status = self.parser.get_status_code()
            self.headers_done = True

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.complete:  # the parser forgets whether to keep the connection once it is past the message
            self.keep_alive = self.parser.should_keep_alive()
        self.complete = True

    def feed(self, data: bytes) -> None:
        """Parse what arrived; bytes the parser refuses after a whole reply only retire the socket."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.complete:
                raise BrokenReply(f"malformed response: {exc}") from exc
            self.trailing = True

    def ends_at_close(self) -> bool:
        """A body with neither a length nor chunks ends when the server closes the connection."""
        names = {name.lower() for name, _ in self.headers}
        return self.headers_done and not names & {b"content-length", b"transfer-encoding"}


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)

    def dropped(self) -> bool:
        """Readable while idle means closed by the server (or stray bytes): either way, not reusable."""
        pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
        return bool(pending or self.poller.poll(0))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def split_timeout(timeout: Any) -> tuple[float | None, float | None]:
    """requests' timeout argument: one number for both phases, or (connect, read)."""
    if isinstance(timeout, tuple):
        connect, read = timeout
        return connect, read
    return timeout, timeout


@lru_cache(maxsize=8)
def tls_context(verify: bool | str) -> ssl.SSLContext:
    """The context urllib3 builds for requests: True is certifi's bundle, a path is a CA file or directory,
    False checks nothing; hostnames are matched against subjectAltName only, never the common name."""
    if verify is False:
        context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
    else:
        context = create_urllib3_context()
        _load_ca(context, DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify))
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def _load_ca(context: ssl.SSLContext, location: str) -> None:
    if not os.path.exists(location):  # requests' own words for it
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
    try:
        if os.path.isdir(location):
            context.load_verify_locations(capath=location)
        else:
            context.load_verify_locations(cafile=location)
    except ssl.SSLError as exc:
        raise OSError(f"cannot load TLS CA certificates from {location}: {exc}") from None


class Transport:
    """One open connection per (origin, verification). Not thread-safe: one per session, one per thread."""

    def __init__(self) -> None:
        self._open: dict[tuple[Origin, bool | str], _Connection] = {}

    def exchange(self, origin: Origin, request: bytes, timeout: Any, verify: bool | str) -> Reply:
        connect_timeout, read_timeout = split_timeout(timeout)
        key = (origin, verify)
        connection = self._open.pop(key, None)
        if connection is not None and connection.dropped():
            connection.close()
            connection = None
        if connection is None:
            connection = _connect(origin, connect_timeout, verify)
        try:
            parsed = _exchange(connection.sock, request, read_timeout)
        except BaseException:
            connection.close()
            raise
        if parsed.trailing or not parsed.keep_alive:
            connection.close()
        else:
            self._keep(key, connection)
        return parsed.reply

    def _keep(self, key: tuple[Origin, bool | str], connection: _Connection) -> None:
        """Pool the connection; one pooled meanwhile (a session shared by threads) is closed, not leaked."""
        displaced = self._open.pop(key, None)
        self._open[key] = connection
        if displaced is not None and displaced is not connection:
            displaced.close()

    def close(self) -> None:
        for connection in self._open.values():
            connection.close()
        self._open.clear()


@dataclass(frozen=True)
class _Exchanged:
    reply: Reply
    keep_alive: bool
    trailing: bool


def _connect(origin: Origin, timeout: float | None, verify: bool | str) -> _Connection:
    context = tls_context(verify) if origin.scheme == "https" else None  # a bad CA path fails before dialling
    sock = _dial(origin, timeout)
    if context is not None:
        sock = _handshake(sock, context, origin)
    return _Connection(sock)


def _dial(origin: Origin, timeout: float | None) -> socket.socket:
    try:
        sock = socket.create_connection((origin.host, origin.port), timeout=timeout)
    except TimeoutError as exc:
        raise requests.exceptions.ConnectTimeout(f"connect to {origin.host}:{origin.port} timed out") from exc
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _handshake(sock: socket.socket, context: ssl.SSLContext, origin: Origin) -> ssl.SSLSocket:
    try:
        return context.wrap_socket(sock, server_hostname=origin.host)
    except ssl.SSLError as exc:
        sock.close()
        raise HandshakeFailed(f"TLS with {origin.host}:{origin.port} failed: {exc}") from exc
    except OSError as exc:
        sock.close()
        raise ConnectFailed(f"TLS with {origin.host}:{origin.port} failed: {exc}") from exc


def _exchange(sock: socket.socket, request: bytes, read_timeout: float | None) -> _Exchanged:
    if sock.gettimeout() != read_timeout:  # setting it costs system calls; it rarely changes
        sock.settimeout(read_timeout)
    try:
        sock.sendall(request)
    except TimeoutError as exc:
        raise requests.exceptions.ReadTimeout("timed out writing the request") from exc
    except OSError as exc:
        raise BrokenReply(f"connection broke while writing the request: {exc}") from exc
    parsed = _Parsed()
    while not parsed.complete:
        data = _receive(sock)
        if not data:
            if parsed.ends_at_close():
                break
            raise BrokenReply("connection closed before the response was complete")
        parsed.feed(data)
    parsed.parser = None  # the parser holds `parsed` too: no reference cycle left for the collector
    if parsed.status < 200:  # never asked for (no Expect header is sent): not an answer we can read
        raise BrokenReply(f"unexpected informational response {parsed.status}")
    headers = _headers(parsed.headers)
    reply = Reply(parsed.status, parsed.reason.decode("latin-1"), headers, _decoded(b"".join(parsed.chunks), headers))
    return _Exchanged(reply, parsed.keep_alive, parsed.trailing)


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(RECV_BYTES)
    except TimeoutError as exc:
        raise requests.exceptions.ReadTimeout("timed out waiting for the response") from exc
    except OSError as exc:
        raise BrokenReply(f"connection broke while reading the response: {exc}") from exc


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    folded: dict[str, str] = {}  # lower-case name -> the spelling kept
    for name_bytes, value_bytes in raw:
        name, value = name_bytes.decode("latin-1"), value_bytes.decode("latin-1")
        kept = folded.setdefault(name.lower(), name)
        headers[kept] = f"{headers[kept]}, {value}" if kept in headers else value
    return headers


def _decoded(body: bytes, headers: dict[str, str]) -> bytes:
    """Undo Content-Encoding as urllib3 does for what requests advertises (gzip, deflate)."""
    encoding = next((value for name, value in headers.items() if name.lower() == "content-encoding"), "")
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        try:
            body = _decode_one(coding, body)
        except zlib.error as exc:
            raise BrokenReply(f"cannot decode a {coding} body: {exc}") from exc
    return body


def _decode_one(coding: str, body: bytes) -> bytes:
    if coding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if coding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send it
    if coding == "identity":
        return body
    raise BrokenReply(f"unsupported Content-Encoding {coding!r}")
