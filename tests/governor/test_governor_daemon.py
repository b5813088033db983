"""`python -m microservices.governor` as systemd runs it: startup caps, a permit, /metrics, SIGTERM, bad settings."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

import redis
from governor_support import plan

from shared import keys, permits
from shared import snapshot as exchange_snapshot
from shared.permits import PermitKind
from shared.snapshot import ExchangeSnapshot

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def governor_process(env: dict[str, str]) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.Popen([sys.executable, "-m", "microservices.governor"], env=full_env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)
    return value


def test_the_daemon_issues_a_permit_serves_metrics_and_stops_on_sigterm(redis_url: str, r: redis.Redis) -> None:
    exchange_snapshot.publish(r, ExchangeSnapshot(int(time.time() * 1000), {}, {"BTCUSDT": Decimal("80000")}))
    r.xadd(keys.Stream.APPLY_PLAN, plan().to_fields())
    port = free_port()
    process = governor_process({"REDIS_URL": redis_url, "METRICS_PORT": str(port), "GOV_MAX_OPEN_POSITIONS": "7"})
    try:
        permit = wait_for(lambda: permits.peek(r, PermitKind.P32, "test_open_005"))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()

    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    caps = next(e for e in events if e["event"] == "governor_caps")
    assert permit.allow and process.returncode == 0, err
    assert caps["max_open_positions"] == 7 and caps["max_total_notional_usdt"] == "2000"
    assert any(e["event"] == "PERMIT_DECISION" and e["plan_id"] == "test_open_005" for e in events)
    assert "quantum_governor_kill_switch 0.0" in metrics and "quantum_governor_execution_enabled 1.0" in metrics


def test_a_bad_setting_exits_2_with_one_line() -> None:
    process = governor_process({"GOV_MAX_TOTAL_NOTIONAL_USDT": "plenty", "METRICS_PORT": "0"})

    out, err = process.communicate(timeout=30)

    assert process.returncode == 2
    assert len(err.strip().splitlines()) == 1 and "GOV_MAX_TOTAL_NOTIONAL_USDT" in err


def test_an_unreachable_redis_exits_1() -> None:
    """After REDIS_STARTUP_WAIT_S (here 1 s; 60 by default)."""
    process = governor_process({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "METRICS_PORT": "0",
                                "REDIS_STARTUP_WAIT_S": "1"})

    out, err = process.communicate(timeout=60)

    assert process.returncode == 1 and "Redis" in err
