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
    assert "refused with kill_switch before reaching the dry-run check" in done.stdout
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
