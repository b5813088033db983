"""ops/p33_proof_e2e.sh: one plan through both permits to the exchange, shown with redis-cli."""

from __future__ import annotations

import pytest

from tests.ops.conftest import run_script, same_shape

SCRIPT = "p33_proof_e2e.sh"


def test_open_and_close_show_both_permits_and_execute(order_path, script_env) -> None:
    done = run_script(SCRIPT, "--close", env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("Governor ALLOW → P3.3 ALLOW → executed") == 2
    assert done.stdout.count('"allow":true') == 4
    assert "result: executed=true  BTCUSDT BUY 0.002" in done.stdout
    assert "result: executed=true  BTCUSDT SELL 0.002" in done.stdout
    assert '"reason":"close_allowed"' in done.stdout
    assert done.stdout.rstrip().endswith("PROOF OK: permit chain allowed and the exchange executed")


def test_a_denied_permit_fails_the_proof_and_names_the_reason(order_path, script_env) -> None:
    order_path.client.set("quantum:kill", "1")

    done = run_script(SCRIPT, "--close", env=script_env)

    assert done.returncode == 1
    assert "Governor DENY (kill_switch)" in done.stdout
    assert "not executed (kill_switch)" in done.stdout and "Close skipped" in done.stdout


def test_missing_permits_and_result_fail_the_proof(script_env, r) -> None:
    done = run_script(SCRIPT, "--timeout", "1", env=script_env)

    assert done.returncode == 1
    assert "result: none within 1s" in done.stdout
    assert done.stdout.count("MISSING") == 2 and "PROOF FAILED" in done.stdout


@pytest.mark.parametrize("url", ["redis://:s3cr3t-pw@127.0.0.1:1/0", "redis://ops:s3cr3t-pw@127.0.0.1:1/0"])
def test_a_redis_password_is_never_printed(script_env, url) -> None:
    done = run_script(SCRIPT, env={**script_env, "REDIS_URL": url})

    assert done.returncode == 1
    assert "cannot use Redis at redis://" in done.stderr and ":***@127.0.0.1:1/0" in done.stderr
    assert "s3cr3t-pw" not in done.stdout + done.stderr


def test_over_ssh_the_output_is_the_local_output(order_path, script_env, sshd) -> None:
    local = run_script(SCRIPT, "--close", env=script_env)
    remote = run_script(SCRIPT, *sshd.args(), "--close", env=script_env)

    assert local.returncode == 0, local.stdout + local.stderr
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert same_shape(remote.stdout) == same_shape(local.stdout)


def test_the_close_takes_what_the_open_filled(order_path, script_env) -> None:
    """Found in review: the close asked for --qty, not what the open filled (with ALLOW_UPSIZE the open may fill more),
    and the rest stayed open under "PROOF OK". Here the open's 0.0025 fills 0.002 (BTCUSDT's step)."""
    done = run_script(SCRIPT, "--close", "--qty", "0.0025", env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "-close: BTCUSDT SELL 0.002 MARKET reduceOnly=true" in done.stdout


@pytest.mark.parametrize("timeout", ["2.5", "08", "-1"])
def test_a_timeout_that_is_not_whole_seconds_is_refused_up_front(script_env, timeout) -> None:
    """Found in review: "08" (octal to bash's arithmetic) passed the first check, and the proof then said OK
    without waiting for anything."""
    done = run_script(SCRIPT, "--timeout", timeout, env=script_env)

    assert done.returncode == 1 and f"--timeout takes whole seconds, not '{timeout}'" in done.stderr
