"""The lean path's HTTP transport against servers that misbehave on purpose.

What matters for orders: a request is written at most once, a failure before it is written is told
apart from one after (never sent vs unknown outcome), and a reply is read whole however it is framed.
"""

from __future__ import annotations

import gzip
import socket
import threading
import zlib
from collections.abc import Callable

import pytest
import requests

from shared.exchange import transport as transport_module
from shared.exchange.errors import ExchangeUnavailable, OutcomeUnknown
from shared.exchange.transport import BrokenReply, ConnectFailed, Origin, Transport
from shared.exchange.translate import translate

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def _request(n: int = 0) -> bytes:
    return f"POST /fapi/v1/order HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nn={n}".encode()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


class Scripted:
    """A server on 127.0.0.1 that runs `serve(conn, requests_seen)` for every connection it accepts."""

    def __init__(self, serve: Callable[[socket.socket, list[bytes]], None]):
        self.seen: list[bytes] = []
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released each time the server has closed a connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.origin = Origin("http", "127.0.0.1", self.listener.getsockname()[1])
        self._serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._serve(conn, self.seen)
            except OSError:
                pass
        self.closed.release()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def scripted():
    servers: list[Scripted] = []

    def start(serve):
        servers.append(Scripted(serve))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def answer_each(reply: bytes, then_close: bool = False):
    def serve(conn, seen):
        while request := _read_request(conn):
            seen.append(request)
            conn.sendall(reply)
            if then_close:
                return
    return serve


def test_a_kept_alive_connection_carries_every_request(scripted):
    server = scripted(answer_each(OK))
    transport = Transport()

    replies = [transport.exchange(server.origin, _request(n), 5, True) for n in range(3)]

    assert [r.body for r in replies] == [b'{"ok":true}'] * 3
    assert server.connections == 1 and len(server.seen) == 3


def test_a_connection_the_server_closed_while_idle_is_replaced_before_writing(scripted):
    server = scripted(answer_each(OK, then_close=True))
    transport = Transport()
    transport.exchange(server.origin, _request(1), 5, True)
    assert server.closed.acquire(timeout=5)

    reply = transport.exchange(server.origin, _request(2), 5, True)

    assert reply.status == 200
    assert server.connections == 2 and len(server.seen) == 2  # each request written once


def test_connection_close_in_the_reply_is_honoured(scripted):
    server = scripted(answer_each(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"))
    transport = Transport()
    for n in range(2):
        transport.exchange(server.origin, _request(n), 5, True)
    assert server.connections == 2


def test_a_connection_dropped_after_the_request_is_an_unknown_outcome_never_a_resend(scripted):
    def swallow(conn, seen):
        seen.append(_read_request(conn))  # then close without answering

    server = scripted(swallow)
    with pytest.raises(BrokenReply) as caught:
        Transport().exchange(server.origin, _request(), 5, True)

    assert len(server.seen) == 1 and server.connections == 1
    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), OutcomeUnknown)
    assert isinstance(translate(caught.value, "positions", side_effect=False), ExchangeUnavailable)


def test_no_reply_in_time_is_a_read_timeout(scripted):
    release = threading.Event()

    def stall(conn, seen):
        seen.append(_read_request(conn))
        release.wait(5)

    server = scripted(stall)
    with pytest.raises(requests.exceptions.ReadTimeout) as caught:
        Transport().exchange(server.origin, _request(), 0.2, True)
    release.set()

    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), OutcomeUnknown)


def test_connection_refused_is_never_sent():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectFailed) as caught:
        Transport().exchange(Origin("http", "127.0.0.1", port), _request(), 1, True)

    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), ExchangeUnavailable)


@pytest.mark.parametrize("reply,body", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n", b'{"a":1}'),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"[1]"))
     + gzip.compress(b"[1]"), b"[1]"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n" % len(zlib.compress(b"[2]"))
     + zlib.compress(b"[2]"), b"[2]"),
], ids=["chunked", "gzip", "deflate"])
def test_framings_and_encodings_are_read_whole(scripted, reply, body):
    server = scripted(answer_each(reply))
    assert Transport().exchange(server.origin, _request(), 5, True).body == body


def test_a_body_that_ends_when_the_server_closes(scripted):
    def answer_then_close(conn, seen):
        seen.append(_read_request(conn))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        conn.sendall(b'{"late":1}')

    server = scripted(answer_then_close)
    transport = Transport()
    assert transport.exchange(server.origin, _request(), 5, True).body == b'{"late":1}'
    assert transport._open == {}  # that connection is over


def test_repeated_headers_are_joined_and_names_keep_their_spelling(scripted):
    server = scripted(answer_each(b"HTTP/1.1 200 OK\r\nX-MBX-USED-WEIGHT-1M: 7\r\nVary: a\r\nvary: b\r\n"
                                  b"Content-Length: 0\r\n\r\n"))
    reply = Transport().exchange(server.origin, _request(), 5, True)
    assert reply.headers["X-MBX-USED-WEIGHT-1M"] == "7" and reply.headers["Vary"] == "a, b"


@pytest.mark.parametrize("reply", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
], ids=["garbage", "informational", "unknown-encoding", "cut-short"])
def test_an_unreadable_reply_is_an_unknown_outcome(scripted, reply):
    server = scripted(answer_each(reply, then_close=True))
    with pytest.raises(BrokenReply) as caught:
        Transport().exchange(server.origin, _request(), 5, True)
    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), OutcomeUnknown)
    assert len(server.seen) == 1


@pytest.mark.parametrize("after", [
    OK,
    b"HTTP/1.1 500 Oops\r\nX-Second: 1\r\nContent-Length: 5\r\n\r\nERROR",
    b"XYZ garbage",
], ids=["same-reply-again", "another-reply", "garbage"])
def test_bytes_after_the_reply_retire_the_connection(scripted, after):
    server = scripted(answer_each(OK + after))
    transport = Transport()

    first = transport.exchange(server.origin, _request(1), 5, True)
    second = transport.exchange(server.origin, _request(2), 5, True)

    for reply in (first, second):  # nothing of what followed leaks into the reply
        assert (reply.status, reply.reason, reply.body) == (200, "OK", b'{"ok":true}')
        assert reply.headers == {"Content-Type": "application/json", "Content-Length": "11"}
    assert server.connections == 2 and len(server.seen) == 2


def test_a_chunked_bodys_trailers_are_not_headers(scripted):
    server = scripted(answer_each(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
                                  b"X-MBX-USED-WEIGHT-1M: 9999\r\n\r\n"))

    reply = Transport().exchange(server.origin, _request(), 5, True)

    assert (reply.headers, reply.body) == ({"Transfer-Encoding": "chunked"}, b"{}")


class _Recorded:
    """Keeps every connection the transport opens, so one it merely dropped is seen still open."""

    def __init__(self, monkeypatch):
        self.opened: list[transport_module._Connection] = []
        recorded = self

        class Connection(transport_module._Connection):
            def __init__(self, sock):
                super().__init__(sock)
                recorded.opened.append(self)

        monkeypatch.setattr(transport_module, "_Connection", Connection)


def test_a_connection_displaced_from_the_pool_is_closed(scripted, monkeypatch):
    # Two threads sharing one session each open a connection; only one can be pooled again.
    both_arrived = threading.Barrier(2, timeout=5)

    def answer_together(conn, seen):
        while request := _read_request(conn):
            seen.append(request)
            both_arrived.wait()
            conn.sendall(OK)

    server = scripted(answer_together)
    recorded = _Recorded(monkeypatch)
    transport = Transport()

    threads = [threading.Thread(target=transport.exchange, args=(server.origin, _request(n), 5, True))
               for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    pooled = list(transport._open.values())
    assert server.connections == 2 and len(recorded.opened) == 2 and len(pooled) == 1
    displaced = next(c for c in recorded.opened if c is not pooled[0])
    assert displaced.sock.fileno() == -1 and pooled[0].sock.fileno() != -1
