"""Secrets never reach a log line, a result, a dead letter, a key or a metric, on any path."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from microservices.exchange_sim.testing import running_simulator
from shared import keys
from shared.redis_server import EmbeddedRedis
from tests.e2e.fleet import ROOT, Fleet

API_KEY = "QTLEAKCHECKAPIKEY0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKL"
API_SECRET = "QTLEAKCHECKSECRET9876543210zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQP"
REDIS_PASSWORD = "QTLEAKCHECKREDISPW42"
SECRETS = (API_KEY, API_SECRET, REDIS_PASSWORD)
FLEET = ("position-state-brain", "governor", "intent-executor", "intent-bridge", "apply-layer", "portfolio-heat-gate",
         "harvest-proposal", "reconcile")


def everything_in_redis(client) -> str:
    parts = []
    for key in client.scan_iter("*", count=1000):
        kind = client.type(key)
        if kind == "stream":
            parts += [str(fields) for _, fields in client.xrange(key)]
        elif kind == "hash":
            parts.append(str(client.hgetall(key)))
        elif kind == "string":
            parts.append(client.get(key) or "")
        elif kind == "list":
            parts += client.lrange(key, 0, -1)
        parts.append(key)
    return "\n".join(parts)


def occurrences(text: str) -> dict[str, int]:
    return {secret[:14]: text.count(secret) for secret in SECRETS if text.count(secret)}


@pytest.fixture
def leak_fleet():
    with EmbeddedRedis(password=REDIS_PASSWORD) as server, \
            running_simulator(api_key=API_KEY, api_secret=API_SECRET) as sim, \
            tempfile.TemporaryDirectory() as logs:
        exchange = {"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": sim.base_url, "EXCHANGE_SIM_API_KEY": API_KEY,
                    "EXCHANGE_SIM_API_SECRET": API_SECRET}
        fleet = Fleet(server.url, exchange, Path(logs), LOG_LEVEL="DEBUG")
        yield fleet, sim, server
        fleet.stop()


def test_no_secret_anywhere_after_trading_faults_and_garbage(leak_fleet) -> None:
    fleet, sim, server = leak_fleet
    fleet.start(*FLEET, metrics=True)
    fleet.plan("leak-open", "BTCUSDT", "BUY", "0.002")
    fleet.wait_result("leak-open")
    faults = ("unknown_after_execute", "unavailable_no_execute", "rate_limited", "drop_connection")
    for fault in faults:
        sim.set_faults(**{other: 1.0 if other == fault else 0.0 for other in faults})
        fleet.plan(f"leak-{fault}", "ETHUSDT", "BUY", "0.05")
        fleet.wait_result(f"leak-{fault}")
    sim.set_faults(**{fault: 0.0 for fault in faults})
    fleet.client.xadd(keys.Stream.APPLY_PLAN, {"plan_id": "bad plan", "qty": "NaN"})
    fleet.plan("leak-close", "BTCUSDT", "SELL", "0.01", reduce_only="true")
    fleet.wait_result("leak-close")
    metric_bodies = [httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for port in fleet.metrics_ports.values()]
    wrong = run_with_wrong_secret(server.url, sim.base_url)

    logs = "\n".join(fleet.log(name) for name in FLEET)
    assert "ORDER_SUBMIT" in logs and "ORDER_ERROR" in logs  # the paths that format requests and errors ran
    assert occurrences(logs) == {}
    assert occurrences(everything_in_redis(fleet.client)) == {}
    assert occurrences("\n".join(metric_bodies)) == {}
    assert wrong.returncode == 2 and occurrences(wrong.stdout + wrong.stderr) == {}  # a key to fix: exit 2


def run_with_wrong_secret(redis_url: str, sim_url: str) -> subprocess.CompletedProcess:
    """A daemon whose secret is wrong fails its self-test: the failure line must not carry the secret."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "EXCHANGE_TARGET": "simulator",
           "EXCHANGE_SIM_URL": sim_url, "EXCHANGE_SIM_API_KEY": API_KEY, "EXCHANGE_SIM_API_SECRET": API_SECRET + "x",
           "METRICS_PORT": "0", "LOG_LEVEL": "DEBUG", "APPLY_MODE": "testnet",
           "QUANTUM_INSTANCE": "9"}  # beside the fleet's own executor: another consumer name
    done = subprocess.run([sys.executable, "-m", "microservices.intent_executor"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert "self-test failed" in done.stderr, done.stderr
    # The wrong secret differs from the real one by a suffix: check the real one, and the wrong one whole.
    assert (API_SECRET + "x") not in done.stdout + done.stderr
    return done
