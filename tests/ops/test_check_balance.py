"""ops/check_balance.py: wallet, available balance, PnL and positions with their notional."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.ops.conftest import run_script, same_shape

SCRIPT = "check_balance.py"


@pytest.fixture
def positions(sim):
    """A long BTCUSDT and a short ETHUSDT opened straight on the simulator."""
    sim.set_price("ETHUSDT", Decimal("3000"))
    client = sim.binance_client()
    client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.002")
    client.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.05")
    return sim


def test_the_table_shows_balances_positions_and_total_notional(positions, script_env) -> None:
    done = run_script(SCRIPT, env=script_env)

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:2] == ["Wallet", "balance"] for line in lines)
    assert "Open positions: 2" in lines
    btc = next(line.split() for line in lines if line.strip().startswith("BTCUSDT"))
    eth = next(line.split() for line in lines if line.strip().startswith("ETHUSDT"))
    assert btc == ["BTCUSDT", "LONG", "0.002", "88000", "88000", "176.00", "+0.00"]
    assert eth == ["ETHUSDT", "SHORT", "0.05", "3000", "3000", "150.00", "+0.00"]
    assert "Total notional: 326.00 USDT" in lines
    assert script_env["EXCHANGE_SIM_API_SECRET"] not in done.stdout + done.stderr
    assert script_env["EXCHANGE_SIM_API_KEY"] not in done.stdout + done.stderr


def test_json_has_exact_decimals(positions, script_env) -> None:
    done = run_script(SCRIPT, "--json", env=script_env)

    report = json.loads(done.stdout)
    assert Decimal(report["total_notional"]) == Decimal("326")
    assert [(p["symbol"], p["side"]) for p in report["positions"]] == [("BTCUSDT", "LONG"), ("ETHUSDT", "SHORT")]
    assert Decimal(report["available_balance"]) <= Decimal(report["wallet_balance"])


def test_an_unreachable_exchange_is_one_line_and_exit_1(script_env) -> None:
    done = run_script(SCRIPT, env={**script_env, "EXCHANGE_SIM_URL": "http://127.0.0.1:1"})

    assert done.returncode == 1
    assert done.stderr.startswith("check_balance.py: ExchangeUnavailable") and "Traceback" not in done.stderr


def test_over_ssh_the_output_is_the_local_output(positions, script_env, sshd) -> None:
    local = run_script(SCRIPT, env=script_env)
    remote = run_script(SCRIPT, *sshd.args(), env=script_env)

    assert remote.returncode == 0, remote.stderr
    assert same_shape(remote.stdout) == same_shape(local.stdout)
