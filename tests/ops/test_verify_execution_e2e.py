"""ops/verify_execution_e2e.py and `quantum proof`: test opens through the fleet, confirmed on the exchange."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

from shared.orders import client_order_id_for
from tests.ops.conftest import run_script, same_shape

SCRIPT = "verify_execution_e2e.py"


def proof_of(path) -> dict:
    return json.loads(path.read_text())


def test_three_opens_and_their_closes_are_proven_on_the_exchange(order_path, script_env, sim, tmp_path) -> None:
    out = tmp_path / "proof.json"

    done = run_script(SCRIPT, "--close", "--out", str(out), env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Injected 3 test plans" in done.stdout
    assert "3/3 orders verified on the exchange" in done.stdout
    assert "3/3 close orders verified on the exchange" in done.stdout
    assert f"Proof saved to: {out}" in done.stdout
    proof = proof_of(out)
    assert proof["ok"] is True and proof["failures"] == [] and proof["plans_injected"] == 6
    assert (proof["mode"], proof["stream"]) == ("SIMULATOR", "quantum:stream:apply.plan")
    on_exchange = {o["clientOrderId"]: o for o in sim.orders()}
    for order in proof["verified_orders"]:
        assert order["clientOrderId"] == client_order_id_for(order["plan_id"])
        assert on_exchange[order["clientOrderId"]]["orderId"] == order["orderId"]
        assert order["status"] == "FILLED" and order["message_id"]
    assert [o["symbol"] for o in proof["verified_orders"]] == ["BTCUSDT", "ETHUSDT", "TRXUSDT"] * 2
    assert all(Decimal(p["positionAmt"]) == 0 for p in sim.binance_client().futures_position_information())
    assert sim.api_secret not in done.stdout + done.stderr


def test_quantum_proof_prints_the_same_lines_as_the_script(order_path, script_env, tmp_path) -> None:
    script = run_script(SCRIPT, "--count", "2", "--close", "--out", str(tmp_path / "a.json"), env=script_env)
    command = subprocess.run([sys.executable, "-m", "shared.cli.main", "proof", "--count", "2", "--close",
                              "--out", str(tmp_path / "b.json")], env=script_env, capture_output=True, text=True,
                             timeout=60)

    assert script.returncode == command.returncode == 0, script.stdout + command.stdout + command.stderr
    assert same_shape(command.stdout.replace("b.json", "a.json")) == same_shape(script.stdout)
    assert proof_of(tmp_path / "b.json")["ok"] is True


def test_a_plan_that_does_not_execute_fails_the_proof_and_is_named(order_path, script_env, tmp_path) -> None:
    order_path.client.set("quantum:kill", "1")
    out = tmp_path / "proof.json"

    done = run_script(SCRIPT, "--count", "1", "--out", str(out), env=script_env)

    assert done.returncode == 1
    assert "0/1 orders verified on the exchange" in done.stdout and "kill_switch" in done.stdout
    proof = proof_of(out)
    assert proof["ok"] is False and proof["failures"][0]["reason"] == "kill_switch"


def test_over_ssh_the_output_is_the_local_output(order_path, script_env, sshd, tmp_path) -> None:
    local = run_script(SCRIPT, "--close", "--out", str(tmp_path / "local.json"), env=script_env)
    remote = run_script(SCRIPT, *sshd.args(), "--close", "--out", str(tmp_path / "remote.json"), env=script_env)

    assert local.returncode == 0, local.stdout + local.stderr
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert same_shape(remote.stdout.replace("remote.json", "local.json")) == same_shape(local.stdout)
    assert proof_of(tmp_path / "remote.json")["ok"] is True
    assert script_env["EXCHANGE_SIM_API_SECRET"] not in remote.stdout + remote.stderr


def test_on_a_mainnet_fleet_the_proofs_refuse_without_mainnet(script_env, r, sim, tmp_path) -> None:
    """Seen by review: both proofs sent their test opens to whatever the fleet traded, mainnet included."""
    r.set("quantum:mode", "MAINNET")

    proof = run_script(SCRIPT, "--count", "1", "--out", str(tmp_path / "proof.json"), env=script_env)
    p33 = run_script("p33_proof_e2e.sh", env=script_env)

    for done in (proof, p33):
        assert done.returncode == 1
        assert "the fleet trades on mainnet" in done.stderr and "--mainnet" in done.stderr
    assert r.xlen("quantum:stream:apply.plan") == 0 and sim.orders() == []
