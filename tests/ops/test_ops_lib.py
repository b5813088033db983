"""ops/lib/ops.sh, the library every ops shell script sources."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.ops.conftest import OPS


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to run as another user")
def test_an_unreadable_fleet_env_stops_the_script_instead_of_using_the_default_redis() -> None:
    """Found in review: as a user who cannot read common.env (install.sh makes it root's), the ops scripts used
    redis://127.0.0.1:6379/0 without a word."""
    home = Path(tempfile.mkdtemp(prefix="ops-lib-"))  # not pytest's tmp_path: its parents are root's alone
    try:
        home.chmod(0o755)
        common = home / "common.env"
        common.write_text("REDIS_URL=redis://127.0.0.1:6390/3\n")
        common.chmod(0o600)
        script = f'. {OPS / "lib" / "ops.sh"}; ops_redis_init; echo "reached, db $OPS_REDIS_DB"'

        done = subprocess.run(["runuser", "-u", "nobody", "--", "bash", "-c", script], capture_output=True, text=True,
                              env={"PATH": os.environ["PATH"], "QUANTUM_ENV_FILE": str(common)}, timeout=30)
    finally:
        shutil.rmtree(home)

    assert done.returncode == 1 and "cannot read the fleet's settings" in done.stderr, done.stdout + done.stderr
    assert "reached" not in done.stdout


@pytest.mark.parametrize("script", ["verify_execution_e2e.py", "check_balance.py"])
def test_a_python_without_the_fleet_runs_the_script_under_the_fleets_python(script) -> None:
    """Found in review: on a host the scripts' `#!/usr/bin/env python3` has no fleet package (it lives in the venv),
    and the documented commands failed with ModuleNotFoundError. `python -S` stands for such a python here."""
    import sys

    bare = subprocess.run([sys.executable, "-S", str(OPS / script), "--help"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "QUANTUM_PYTHON": sys.executable})
    nowhere = subprocess.run([sys.executable, "-S", str(OPS / script), "--help"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "QUANTUM_PYTHON": "/nonexistent/python"})

    assert bare.returncode == 0 and "usage:" in bare.stdout, bare.stderr
    assert nowhere.returncode == 2 and "the fleet's package is not importable" in nowhere.stderr


@pytest.mark.parametrize("line", ["EXCHANGE_TARGET=mainnet ", "EXCHANGE_TARGET = mainnet", "EXCHANGE_TARGET=mainnet\r",
                                  'EXCHANGE_TARGET="mainnet"'])
def test_an_env_file_setting_is_read_as_systemd_reads_it(tmp_path, line) -> None:
    """Found in review: spaces around "=", a trailing space or a CRLF line read as no setting, and the mainnet guard
    of the proofs and the rollback failed open."""
    env_file = tmp_path / "common.env"
    env_file.write_text(f"# fleet\n{line}\nREDIS_URL=redis://:p=a b@h:1/0\n")
    script = f'. {OPS / "lib" / "ops.sh"}; printf "[%s][%s]" "$(ops_env_file_setting {env_file} EXCHANGE_TARGET)" ' \
             f'"$(ops_env_file_setting {env_file} REDIS_URL)"'

    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30)

    assert done.stdout == "[mainnet][redis://:p=a b@h:1/0]", done.stderr


def test_the_mainnet_guard_fails_closed_when_the_mode_cannot_be_read(script_env, r) -> None:
    """Found in review: under `if ops_on_mainnet` errexit is off, and a failed read of quantum:mode (redis-cli prints
    WRONGTYPE and exits 0) read as "not mainnet"; the proof went on to send. Now it is taken as mainnet."""
    r.hset("quantum:mode", "by", "hand")  # WRONGTYPE for GET

    done = subprocess.run(["bash", str(OPS / "p33_proof_e2e.sh"), "--timeout", "1"], env=script_env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode != 0 and "cannot read quantum:mode" in done.stderr, done.stdout + done.stderr
    assert "the fleet trades on mainnet" in done.stderr and r.xlen("quantum:stream:apply.plan") == 0


def test_a_rollback_goes_on_to_its_switch_whatever_the_guard_could_not_read(script_env, r) -> None:
    """Found in review: the guard's read failing stopped the rollback before `quantum dry-run on`, the one thing it is
    for. It goes on, and sends no test plan (the fleet is taken as a mainnet one)."""
    r.hset("quantum:mode", "by", "hand")

    done = subprocess.run(["bash", str(OPS / "rollback_to_dry_run.sh"), "--timeout", "1"], env=script_env,
                          capture_output=True, text=True, timeout=60)

    assert r.get("quantum:apply:dry_run") == "1", done.stdout + done.stderr
    assert "no test plan on a mainnet fleet" in done.stdout and r.xlen("quantum:stream:apply.plan") == 0
