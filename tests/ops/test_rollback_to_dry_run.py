"""ops/rollback_to_dry_run.sh: the runtime switch, the persisted APPLY_MODE, and the proof nothing executes."""

from __future__ import annotations

import stat

import pytest

from tests.ops.conftest import run_script, same_shape

SCRIPT = "rollback_to_dry_run.sh"


def test_rollback_forces_dry_run_and_proves_nothing_executes(order_path, script_env, sim) -> None:
    done = run_script(SCRIPT, env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert order_path.client.get("quantum:apply:dry_run") == "1"
    assert "dry run FORCED" in done.stdout
    assert "systemd units not installed here: nothing to persist" in done.stdout
    assert "result: executed=false TRXUSDT BUY 100 reason=dry_run" in done.stdout
    assert "results since the rollback began: 1, executed=true: 0" in done.stdout
    assert done.stdout.rstrip().endswith("ROLLBACK OK: dry run in force, nothing executed since the rollback began")
    assert not any(o["clientOrderId"].startswith("qt-rollback-check") for o in sim.orders())


def test_a_test_plan_refused_before_the_dry_run_check_does_not_verify(order_path, script_env) -> None:
    order_path.client.set("quantum:kill", "1")

    done = run_script(SCRIPT, env=script_env)

    assert done.returncode == 1
    assert "refused with kill_switch before reaching the dry-run check: the fleet is halted" in done.stdout
    assert "try --symbol" not in done.stdout  # found in a review: it advised another symbol, which cannot help
    assert "ROLLBACK NOT VERIFIED" in done.stdout


@pytest.mark.parametrize(("before", "after"), [
    ("# fleet\nEXCHANGE_TARGET=simulator\nAPPLY_MODE=testnet\nX=1\n",
     "# fleet\nEXCHANGE_TARGET=simulator\nAPPLY_MODE=dry_run\nX=1\n"),
    ("#APPLY_MODE=testnet\nEXCHANGE_TARGET=simulator", "#APPLY_MODE=testnet\nEXCHANGE_TARGET=simulator\nAPPLY_MODE=dry_run\n"),
    (None, "APPLY_MODE=dry_run\n"),
])
def test_persist_replaces_or_appends_apply_mode_and_keeps_mode_0600(order_path, script_env, tmp_path, before, after) -> None:
    common = tmp_path / "common.env"
    if before is not None:
        common.write_text(before)
        common.chmod(0o640)
    (tmp_path / "apply-layer.env").write_text("APPLY_MODE=testnet\n")
    (tmp_path / "intent-executor.env").write_text("EXECUTOR_PERMIT_WAIT_MS=3000\n")

    done = run_script(SCRIPT, "--persist", "--no-restart", "--env-dir", str(tmp_path), env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert common.read_text() == after
    assert stat.S_IMODE(common.stat().st_mode) == 0o600
    assert (tmp_path / "apply-layer.env").read_text() == "APPLY_MODE=dry_run\n"
    assert (tmp_path / "intent-executor.env").read_text() == "EXECUTOR_PERMIT_WAIT_MS=3000\n"
    assert sorted(p.name for p in tmp_path.glob("*.env*")) == ["apply-layer.env", "common.env", "intent-executor.env"]


def test_undo_lifts_the_switch_and_leaves_the_env_file(script_env, r, tmp_path) -> None:
    r.set("quantum:apply:dry_run", "1")
    (tmp_path / "common.env").write_text("APPLY_MODE=dry_run\n")

    done = run_script(SCRIPT, "--undo", "--env-dir", str(tmp_path), env=script_env)

    assert done.returncode == 0, done.stdout + done.stderr
    assert r.get("quantum:apply:dry_run") is None
    assert "dry run lifted" in done.stdout and "APPLY_MODE=dry_run (not changed)" in done.stdout
    assert "systemctl restart quantum-intent-executor quantum-apply-layer" in done.stdout
    assert (tmp_path / "common.env").read_text() == "APPLY_MODE=dry_run\n"


def test_over_ssh_the_output_is_the_local_output(order_path, script_env, sshd) -> None:
    local = run_script(SCRIPT, env=script_env)
    remote = run_script(SCRIPT, *sshd.args(), env=script_env)

    assert local.returncode == 0, local.stdout + local.stderr
    assert remote.returncode == 0, remote.stdout + remote.stderr
    # Each run counts results from its own start, so both list exactly their own test plan.
    assert same_shape(remote.stdout) == same_shape(local.stdout)


@pytest.mark.parametrize("form", ["unix-userinfo", "tcp-query"])
def test_the_ops_scripts_take_every_redis_url_form_the_fleet_takes_and_never_show_its_password(
        script_env, tmp_path, form) -> None:
    """Seen by review: the README's unix-socket REDIS_URL made redis-cli fail ("Invalid URI scheme") before the
    rollback's first step; a ?password= URL was not understood either."""
    from shared.redis_conn import connect
    from shared.redis_server import EmbeddedRedis

    password = "s3cretPW-ops-test"
    with EmbeddedRedis(password=password) as server:
        if form == "unix-userinfo":
            if server.socket_path is None:
                pytest.skip("the data dir's path is too long for a unix socket here")
            url = f"unix://:{password}@{server.socket_path}?db=2"
        else:
            url = f"redis://127.0.0.1:{server.port}/0?password={password}&db=2"
        client = connect(url)
        client.set("quantum:apply:dry_run", "1")
        (tmp_path / "common.env").write_text("APPLY_MODE=dry_run\n")

        done = run_script(SCRIPT, "--undo", "--env-dir", str(tmp_path), env={**script_env, "REDIS_URL": url})

        assert done.returncode == 0, done.stdout + done.stderr
        assert client.get("quantum:apply:dry_run") is None  # in database 2, where the URL points
        assert password not in done.stdout + done.stderr


def test_a_persist_that_could_not_write_says_so_and_fails_the_rollback(order_path, script_env, tmp_path) -> None:
    """Seen by review: set -e does not hold inside a function called with ||, so a failed write went on to print
    'APPLY_MODE=dry_run (was: ...)' and the rollback could end OK with the file unchanged."""
    (tmp_path / "common.env").mkdir()  # unreadable as a file, whoever runs the script (root reads anything else)

    done = run_script(SCRIPT, "--persist", "--no-restart", "--env-dir", str(tmp_path), env=script_env)

    assert done.returncode == 1
    assert "common.env: cannot read it" in done.stdout
    assert "APPLY_MODE=dry_run (was:" not in done.stdout
    assert "ROLLBACK NOT VERIFIED" in done.stdout


def test_a_test_plan_that_executes_is_closed_again_and_fails_the_rollback(order_path, script_env, sim,
                                                                         tmp_path) -> None:
    """Found in review: when dry run did not hold (an executor that does not honour the switch, a switch that did not
    reach it), the verification open executed and the script left that real position open. Here the switch never
    reaches Redis: the fleet's python, as the script finds it, only says it set it."""
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nif [ "$3" = dry-run ]; then echo "dry run FORCED (not really)"; exit 0; fi\n'
                    f'exec {script_env["QUANTUM_PYTHON"]} "$@"\n')
    fake.chmod(0o755)

    done = run_script(SCRIPT, env={**script_env, "QUANTUM_PYTHON": str(fake)})

    assert done.returncode == 1 and "THE TEST PLAN EXECUTED: dry run is NOT in force" in done.stdout
    assert "the test position is closed again" in done.stdout, done.stdout
    held = sim.binance_client().futures_position_information(symbol="TRXUSDT")
    assert all(float(position["positionAmt"]) == 0 for position in held)


def test_on_a_mainnet_fleet_no_test_plan_is_sent_without_mainnet(order_path, script_env, sim) -> None:
    order_path.client.set("quantum:mode", "MAINNET")

    done = run_script(SCRIPT, env=script_env)

    assert "no test plan on a mainnet fleet" in done.stdout and "test plan rollback-check" not in done.stdout
    assert not any(o["clientOrderId"].startswith("qt-rollback-check") for o in sim.orders())


def test_a_fleet_whose_target_is_mainnet_gets_no_test_plan_whatever_quantum_mode_says(order_path, script_env,
                                                                                       sim) -> None:
    """Found in review: after a first rollback quantum:mode says DRY_RUN (and on a fresh Redis nothing), so a second
    run sent the test open on a mainnet fleet. EXCHANGE_TARGET, as the fleet has it, counts too."""
    order_path.client.set("quantum:mode", "DRY_RUN")

    done = run_script(SCRIPT, env={**script_env, "EXCHANGE_TARGET": "mainnet"})

    assert "no test plan on a mainnet fleet" in done.stdout
    assert not any(o["clientOrderId"].startswith("qt-rollback-check") for o in sim.orders())


def test_the_executors_own_env_file_saying_mainnet_is_enough_for_the_guard(order_path, script_env, sim,
                                                                            tmp_path) -> None:
    """Found in review: the guard read the environment before the files, and never the executor's own env file."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "common.env").write_text("EXCHANGE_TARGET=testnet\n")
    (tmp_path / "etc" / "intent-executor.env").write_text("EXCHANGE_TARGET = mainnet\r\n")

    done = run_script(SCRIPT, env={**script_env, "QUANTUM_ENV_FILE": str(tmp_path / "etc" / "common.env")})

    assert "no test plan on a mainnet fleet" in done.stdout
    assert not any(o["clientOrderId"].startswith("qt-rollback-check") for o in sim.orders())
