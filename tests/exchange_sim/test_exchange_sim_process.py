"""`python -m microservices.exchange_sim` as a process: settings errors, serving, JSON logs."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shared.exchange.sim_defaults import SIM_DEV_API_KEY, SIM_DEV_API_SECRET

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_SIM_")}
    return {**env, **extra}


@pytest.mark.parametrize(
    ("name", "value"),
    [("EXCHANGE_SIM_PORT", "not-a-port"), ("EXCHANGE_SIM_BALANCE_USDT", "-1"), ("EXCHANGE_SIM_SEED", "x"),
     ("EXCHANGE_SIM_TAKER_FEE", "2"), ("EXCHANGE_SIM_KLINES_CSV", "/does/not/exist.csv"),
     ("EXCHANGE_SIM_LOG_LEVEL", "LOUD")],
)
def test_bad_setting_prints_one_line_and_exits_2(name, value):
    done = subprocess.run([sys.executable, "-m", "microservices.exchange_sim"], cwd=ROOT, env=_env(**{name: value}),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve_one_request(**env: str) -> str:
    """Start the module, ask it for the balance through python-binance, stop it; its stdout."""
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "microservices.exchange_sim"], cwd=ROOT,
                               env=_env(EXCHANGE_SIM_PORT=str(port), **env), stdout=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"{base}/fapi/v1/ping", timeout=1).json() == {}
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "simulator did not start"
                time.sleep(0.05)
        from microservices.exchange_sim.testing import SimHandle

        client = SimHandle(base, SIM_DEV_API_KEY, SIM_DEV_API_SECRET).binance_client()
        assert client.futures_account_balance()[0]["asset"] == "USDT"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    return output


def test_module_serves_binance_api_and_logs_json_without_secrets():
    output = _serve_one_request()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(r.get("path") == "/fapi/v3/balance" and r.get("status") == 200 for r in records)
    assert SIM_DEV_API_SECRET not in output and "signature" not in output


def test_log_level_warning_keeps_request_lines_out():
    output = _serve_one_request(EXCHANGE_SIM_LOG_LEVEL="warning")
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all(r.get("level") in ("warning", "error") for r in records)
