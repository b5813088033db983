"""Every ops shell script is shellcheck-clean, with the library it sources."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.ops.conftest import OPS


def test_ops_shell_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; .ci/run installs it as root)")
    scripts = sorted(str(p) for p in [*OPS.glob("*.sh"), *OPS.glob("lib/*.sh")])
    assert len(scripts) >= 3

    # Run from elsewhere: ops/.shellcheckrc must be what lets it follow the sourced library.
    done = subprocess.run([shellcheck, *scripts], capture_output=True, text=True, cwd="/")

    assert done.returncode == 0, done.stdout + done.stderr

