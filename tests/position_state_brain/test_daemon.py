"""`python -m microservices.position_state_brain` end to end: real Redis, the simulator, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest
from p33_helpers import sim_env

from shared import keys
from shared import snapshot as exchange_snapshot

SEED_FIELDS = {"plan_id": "test_open_005", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY",
               "type": "MARKET", "qty": "0.001", "reduceOnly": "false", "source": "test_manual"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout_s: float = 20.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def daemon_env(sim, redis_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("P33_", "EXCHANGE_", "BINANCE_"))}
    return {**env, **sim_env(sim), "REDIS_URL": redis_url, "METRICS_PORT": str(port), "P33_POLL_SEC": "0.2",
            "P33_STALE_THRESHOLD_SEC": "5", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def daemon(r, redis_url, sim, tmp_path):
    sim.reset()
    port = free_port()
    out = (tmp_path / "stdout.log").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "microservices.position_state_brain"],
                               env=daemon_env(sim, redis_url, port), stdout=out, stderr=subprocess.STDOUT)
    yield process, port, out
    if process.poll() is None:
        process.kill()
        process.wait(10)
    out.close()


def log_events(out) -> list[dict]:
    out.seek(0)
    return [json.loads(line) for line in out.read().splitlines() if line.startswith("{")]


def test_the_daemon_permits_the_seed_plan_refreshes_serves_metrics_and_stops(r, daemon):
    process, port, out = daemon
    r.xadd(keys.Stream.APPLY_PLAN, SEED_FIELDS)

    permit = json.loads(wait_for(lambda: r.get(keys.permit_p33("test_open_005"))))
    first = wait_for(lambda: exchange_snapshot.read(r)).fetched_at_ms
    wait_for(lambda: exchange_snapshot.read(r).fetched_at_ms > first, timeout_s=5)
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    process.send_signal(signal.SIGTERM)
    code = process.wait(15)

    assert (permit["allow"], permit["safe_qty"], permit["reason"]) == (True, "0", "sanity_checks_passed")
    assert 'quantum_p33_decisions_total{allow="true",reason="sanity_checks_passed"} 1.0' in text
    assert "quantum_p33_snapshot_age_seconds" in text and "quantum_p33_snapshot_refresh_failures_total 0.0" in text
    assert code == 0
    events = log_events(out)
    ready = next(e for e in events if e["event"] == "p33_ready")
    assert (ready["poll_sec"], ready["stale_threshold_sec"], ready["cooldown_sec"], ready["permit_ttl_sec"]) == \
        (0.2, 5.0, 15.0, 60)
    assert "BTCUSDT" in ready["allowlist"]
    assert [e["plan_id"] for e in events if e["event"] == "PERMIT_DECISION"] == ["test_open_005"]
    promtool = shutil.which("promtool")
    if promtool:
        checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
