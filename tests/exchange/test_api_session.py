"""ApiSession sends exactly what requests.Session sends, for every call shape python-binance uses."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from shared.exchange.errors import ExchangeUnavailable, OutcomeUnknown
from shared.exchange.session import ApiSession
from shared.exchange.translate import translate


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Binance and the simulator
    seen: list[dict] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        self.seen.append({"method": self.command, "path": self.path, "body": body,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "peer": self.client_address})
        if self.path.startswith("/moved"):
            self.send_response(301)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-MBX-USED-WEIGHT-1M", "7")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":  # a HEAD reply announces the body's length and sends none
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    _Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.seen
    httpd.shutdown()
    httpd.server_close()


# The shapes python-binance's Client._request produces (see _get_request_kwargs).
SIGNED_POST = [("newClientOrderId", "qt-plan/1 é"), ("quantity", "0.002"), ("side", "BUY"),
               ("symbol", "BTCUSDT"), ("timestamp", "1795261287450"), ("type", "MARKET"), ("signature", "ab12")]
CALLS = [
    ("post", "/fapi/v1/order", {"headers": {"Content-Type": "application/x-www-form-urlencoded"},
                                "data": SIGNED_POST, "timeout": 5}),
    ("get", "/fapi/v1/order", {"headers": {}, "params": "symbol=BTCUSDT&origClientOrderId=qt-x&timestamp=1&signature=ff",
                               "timeout": 5}),
    ("get", "/fapi/v1/time", {"headers": {}, "data": None, "timeout": 5}),
    ("get", "/fapi/v1/premiumIndex", {"headers": {}, "data": {}, "timeout": 5}),
    ("delete", "/fapi/v1/order", {"headers": {"Content-Type": "application/x-www-form-urlencoded"},
                                  "data": [("symbol", "BTCUSDT"), ("signature", "00")], "timeout": 5}),
    ("put", "/fapi/v1/listenKey", {"headers": {"Content-Type": "application/x-www-form-urlencoded"},
                                   "data": [], "timeout": 5}),
]
SESSION_HEADERS = {"Accept": "application/json", "User-Agent": "python-binance", "X-MBX-APIKEY": "key"}


def _query(client_order_id: str) -> dict:
    return {"headers": {}, "params": f"symbol=BTCUSDT&origClientOrderId={client_order_id}&signature=ff", "timeout": 5}


# Shapes python-binance does not produce, or only with odd values: whichever path ApiSession takes for
# them, the bytes must be requests' own (requests' requote_uri and urllib3's target encoding rewrite
# some URLs: bad or lower-case escapes, brackets, a '#', dot segments, non-ASCII).
ODD_CALLS = [
    ("head", "/fapi/v1/time", {"timeout": 2}),
    ("patch", "/fapi/v1/order", {"data": [("a", "1")], "timeout": 5}),
    ("get", "/fapi/v1/order", _query("100%")),
    ("get", "/fapi/v1/order", _query("%zz")),
    ("get", "/fapi/v1/order", _query("%2f")),
    ("get", "/fapi/v1/order", _query("%e9")),
    ("get", "/fapi/v1/order", _query("[1,2]")),
    ("get", "/fapi/v1/order", _query("a#b")),
    ("get", "/fapi/v1/order", _query("é")),
    ("get", "/fapi/v1/order", _query("a b")),
    ("get", "/fapi/v1/order", _query("%41%2F%E9")),
    ("get", "/fapi/v1/order", _query("qt-plan/1:x;y~'\"{}|^`\\")),
    ("get", "/fapi/v1/a%2fb%41", {"headers": {}, "timeout": 5}),
    ("get", "/fapi/v1/a%41", {"headers": {}, "params": "x=100%zz", "timeout": 5}),
    ("get", "/fapi/v1/[x]", {"headers": {}, "timeout": 5}),
    ("get", "/fapi/v1/./time/../time", {"headers": {}, "timeout": 5}),
    ("get", "/fapi/v1/é", {"headers": {}, "timeout": 5}),
    ("post", "/fapi/v1/order", {"headers": {"Content-Type": "application/x-www-form-urlencoded"},
                                "data": [("a", None)], "timeout": 5}),
]


def _session(cls: type[requests.Session]) -> requests.Session:
    session = cls()
    session.trust_env = False
    session.headers.update(SESSION_HEADERS)
    return session


@pytest.mark.parametrize("method,path,kwargs", CALLS + ODD_CALLS,
                         ids=[f"{m} {p} {k.get('params') or k.get('data') or ''}" for m, p, k in CALLS + ODD_CALLS])
def test_the_wire_request_is_the_one_requests_sends(server, method, path, kwargs):
    url, seen = server

    responses = [getattr(_session(cls), method)(url + path, **json.loads(json.dumps(kwargs)))
                 for cls in (requests.Session, ApiSession)]

    # the weight header is read case-insensitively, as python-binance reads it
    plain, lean = [(r.status_code, r.content, r.headers["x-mbx-used-weight-1m"]) for r in responses]
    assert plain[0] == 200 and lean == plain
    sent_plain, sent_lean = seen
    for record in (sent_plain, sent_lean):
        record.pop("peer")
    assert sent_lean == sent_plain


def test_connections_are_kept_alive(server):
    url, seen = server
    session = _session(ApiSession)
    for _ in range(3):
        session.post(url + "/fapi/v1/order", data=SIGNED_POST, timeout=5)
    assert len({record["peer"] for record in seen}) == 1


def test_a_redirect_is_returned_not_followed(server):
    url, seen = server
    response = _session(ApiSession).post(url + "/moved", data=SIGNED_POST, timeout=5)
    assert response.status_code == 301
    assert [record["path"] for record in seen] == ["/moved"]


def test_other_call_shapes_take_requests_own_path(server):
    url, seen = server
    _session(ApiSession).post(url + "/fapi/v1/order", json={"a": 1}, timeout=5)
    host = url.removeprefix("http://")
    _session(ApiSession).get(f"http://user:pw@{host}/fapi/v1/time", timeout=5)
    assert seen[0]["body"] == '{"a": 1}'
    assert seen[1]["headers"]["authorization"].startswith("Basic ")


def test_cookies_are_neither_kept_nor_sent(server):
    url, seen = server
    session = _session(ApiSession)
    session.cookies.set("c", "1")
    session.post(url + "/fapi/v1/order", data=SIGNED_POST, timeout=5)
    assert "cookie" not in seen[0]["headers"]


def test_connection_refused_is_requests_error_and_never_sent():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        _session(ApiSession).post(f"http://127.0.0.1:{port}/fapi/v1/order", data=SIGNED_POST, timeout=1)
    # The exchange error tree reads requests' exception shape: refused means the order was never sent.
    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), ExchangeUnavailable)


def test_python_binance_call_shapes_take_the_lean_path(server, monkeypatch):
    url, _ = server

    def general_path(*args, **kwargs):
        raise AssertionError("requests.Session.request was used")

    monkeypatch.setattr(requests.Session, "request", general_path)
    session = _session(ApiSession)
    for method, path, kwargs in CALLS:
        assert getattr(session, method)(url + path, **kwargs).status_code == 200


SAN_IP = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
CN_ONLY = ["-subj", "/CN=localhost"]  # no subjectAltName: urllib3 2 never matches the common name
SAN_OTHER_NAME = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=DNS:elsewhere.example"]


@pytest.fixture
def tls_server(tmp_path):
    """Starts the recorder over HTTPS with a self-signed certificate made by the openssl tool from the given
    subject arguments; returns the port and the certificate's path."""
    import shutil
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    servers = []

    def start(subject: list[str]) -> tuple[int, str]:
        cert, key = tmp_path / f"cert{len(servers)}.pem", tmp_path / f"key{len(servers)}.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject,
                        "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        servers.append(httpd)
        return httpd.server_address[1], str(cert)

    _Recorder.seen = []
    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_tls_is_verified_as_requests_verifies_it(tls_server):
    # The testnet and mainnet targets are HTTPS: an untrusted certificate is refused before anything is
    # sent (the exchange error tree reads that as 'never sent'); a trusted one works on the lean path.
    port, cert = tls_server(SAN_IP)
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(requests.exceptions.SSLError) as caught:
        _session(ApiSession).post(url + "/fapi/v1/order", data=SIGNED_POST, timeout=5)
    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), ExchangeUnavailable)
    assert _Recorder.seen == []

    trusting = _session(ApiSession)
    trusting.verify = str(cert)
    assert trusting.post(url + "/fapi/v1/order", data=SIGNED_POST, timeout=5).json() == {"ok": True}


@pytest.mark.parametrize("subject,host,verify,expected", [
    (SAN_IP, "127.0.0.1", "cert", 200),
    (CN_ONLY, "localhost", "cert", "SSLError"),
    (SAN_OTHER_NAME, "127.0.0.1", "cert", "SSLError"),
    (SAN_IP, "127.0.0.1", True, "SSLError"),
    (CN_ONLY, "localhost", False, 200),
], ids=["subject-alt-name", "common-name-only", "other-name", "not-in-certifi", "unverified"])
@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_outcome_is_the_one_requests_gives(tls_server, subject, host, verify, expected):
    port, cert = tls_server(subject)

    outcomes = []
    for cls in (requests.Session, ApiSession):
        session = _session(cls)
        session.verify = cert if verify == "cert" else verify
        try:
            outcomes.append(session.get(f"https://{host}:{port}/fapi/v1/time", timeout=5).status_code)
        except requests.exceptions.SSLError:
            outcomes.append("SSLError")  # the lean path's HandshakeFailed is one
        except requests.exceptions.RequestException as exc:
            outcomes.append(type(exc).__name__)

    assert outcomes == [expected, expected]


@pytest.mark.parametrize("cls", [requests.Session, ApiSession], ids=["general-path", "lean-path"])
def test_an_untrusted_certificate_means_the_order_was_never_sent_on_either_path(tls_server, cls):
    port, _cert = tls_server(SAN_IP)

    with pytest.raises(requests.exceptions.SSLError) as caught:
        _session(cls).post(f"https://127.0.0.1:{port}/fapi/v1/order", data=SIGNED_POST, timeout=5)

    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), ExchangeUnavailable)
    assert _Recorder.seen == []


@pytest.fixture
def tls_breaker(tls_server, tmp_path):
    """An HTTPS server that reads the request, then answers with a TLS record it cannot have sealed (or with a
    reset): the request was written, so an order may have reached the exchange. Returns the URL and the CA."""
    import ssl

    _port, cert = tls_server(SAN_IP)  # for its certificate and key
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert_path = Path(cert)
    context.load_cert_chain(cert_path, cert_path.with_name(cert_path.name.replace("cert", "key", 1)))
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                tls = context.wrap_socket(conn, server_side=True)
                received.append(tls.recv(65536))
                raw = socket.socket(fileno=tls.detach())
                raw.sendall(b"\x17\x03\x03\x00\x10" + b"x" * 16)  # application data no key sealed
                raw.close()
            except OSError:
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.1:{listener.getsockname()[1]}", cert, received
    listener.close()


@pytest.mark.parametrize("cls", [requests.Session, ApiSession], ids=["general-path", "lean-path"])
def test_a_tls_failure_after_the_order_was_written_means_it_may_have_executed(tls_breaker, cls):
    url, cert, received = tls_breaker
    session = _session(cls)
    session.verify = cert

    with pytest.raises(requests.exceptions.ConnectionError) as caught:
        session.post(url + "/fapi/v1/order", data=SIGNED_POST, timeout=5)

    assert received and received[0].startswith(b"POST /fapi/v1/order")
    # requests' general path raises its SSLError here, as it does for a refused certificate: only the
    # handshake's failures mean "never sent".
    assert isinstance(translate(caught.value, "create_market_order", side_effect=True), OutcomeUnknown)


def _not_a_bundle(tmp_path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("not a certificate\n")
    return str(path)


@pytest.mark.parametrize("verify", [lambda tmp_path: str(tmp_path / "missing.pem"), _not_a_bundle],
                         ids=["missing", "not-a-bundle"])
def test_an_unusable_ca_path_fails_before_connecting_and_not_as_an_outage(tmp_path, verify):
    session = _session(ApiSession)
    session.verify = verify(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens: dialling first would raise ConnectFailed

    with pytest.raises(OSError) as caught:
        session.post(f"https://127.0.0.1:{port}/fapi/v1/order", data=SIGNED_POST, timeout=1)

    assert not isinstance(caught.value, requests.exceptions.RequestException)
    assert session.verify in str(caught.value)
