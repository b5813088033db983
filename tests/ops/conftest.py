"""Run the ops scripts as operators do: locally, and on a host over ssh (a throwaway sshd on loopback)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.redis_server import free_port
from tests.e2e.conftest import make_fleet  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
ORDER_PATH = ("position-state-brain", "governor", "intent-executor")
# Every test opens the same few symbols locally and then remotely within seconds.
FLEET_LIMITS = {"GOV_MAX_EXEC_PER_5MIN": "50", "GOV_MAX_EXEC_PER_HOUR": "50", "P33_POLL_SEC": "0.5"}
FORWARDED = ("REDIS_URL", "EXCHANGE_TARGET", "EXCHANGE_SIM_URL", "EXCHANGE_SIM_API_KEY", "EXCHANGE_SIM_API_SECRET",
             "QUANTUM_ENV_FILE")
SSHD = "/usr/sbin/sshd"
SSHD_READY_S = 10.0


@dataclass(frozen=True)
class Sshd:
    port: int
    client_key: Path

    def args(self) -> list[str]:
        """What a test adds to a script's command line to run it on this 'remote' host."""
        forwarded = [arg for name in FORWARDED for arg in ("--env", name)]
        return ["--host", "root@127.0.0.1", "-p", str(self.port), "-i", str(self.client_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "--remote-python", sys.executable, *forwarded]


@pytest.fixture
def script_env(redis_url, exchange_env, tmp_path) -> dict[str, str]:
    """The environment an operator's shell would have: the fleet's Redis and exchange, its python."""
    return {**os.environ, **exchange_env, "REDIS_URL": redis_url, "QUANTUM_PYTHON": sys.executable,
            # No host configuration may leak into a test run, locally or over ssh.
            "QUANTUM_ENV_FILE": str(tmp_path / "no-common.env")}


@pytest.fixture
def order_path(make_fleet):  # noqa: F811 - the fixture imported above
    return make_fleet(**FLEET_LIMITS).start(*ORDER_PATH)


def run_script(name: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    path = OPS / name
    command = ["bash", str(path)] if path.suffix == ".sh" else [sys.executable, str(path)]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)


def same_shape(text: str) -> list[str]:
    """Lines with numbers and ids blanked, so a local and a remote run of one script compare equal."""
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\b[0-9a-f]{16,}\b", "HEX", line)  # digests of plans whose ids differ per run
        line = re.sub(r"\d+(\.\d+)?", "N", line)
        lines.append(re.sub(r"\s+", " ", line).strip())
    return lines


def missing_for_ssh() -> str | None:
    if os.geteuid() != 0:
        return "the ssh tests start a throwaway sshd, which needs root"
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if tool is None or not os.access(tool, os.X_OK):
            return "sshd/ssh/ssh-keygen not installed (apt-get install openssh-server openssh-client)"
    return None


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Iterator[Sshd]:
    reason = missing_for_ssh()
    if reason is not None:
        pytest.skip(f"ssh to localhost not available: {reason}")
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    port = free_port()
    (home / "sshd_config").write_text(sshd_config(home, port))
    # sshd insists on its privilege-separation directory, which only the service start creates.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    log = open(home / "sshd.log", "wb")
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_listening(process, home / "sshd.log")
        yield Sshd(port, home / "client_key")
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def sshd_config(home: Path, port: int) -> str:
    return "\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {home / 'host_key'}", "PidFile none",
        f"AuthorizedKeysFile {home / 'authorized_keys'}", "PermitRootLogin prohibit-password",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "",
    ])


def wait_listening(process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SSHD_READY_S
    while b"Server listening" not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"sshd did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
