"""ops/remote_run.py, the one mechanism behind every script's --host: argument split, ssh command, payloads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.ops.conftest import OPS, run_script

sys.path.insert(0, str(OPS))
import remote_run  # noqa: E402


def test_remote_options_are_taken_and_the_rest_keeps_its_order() -> None:
    options, rest = remote_run.split_argv(
        ["--close", "--host", "ops@vps", "-p", "2222", "--out", "/tmp/p.json", "-o", "A=1", "-i", "k",
         "--env", "REDIS_URL", "--count", "2", "--remote-python", "/usr/bin/python3"])

    assert rest == ["--close", "--out", "/tmp/p.json", "--count", "2"]
    assert (options.host, options.port, options.identity, options.ssh_option) == ("ops@vps", "2222", "k", ["A=1"])
    assert (options.env, options.remote_python) == (["REDIS_URL"], "/usr/bin/python3")


def test_the_remote_python_defaults_to_the_installed_venv() -> None:
    options, _ = remote_run.split_argv(["--host", "vps"])

    assert options.remote_python == "/opt/quantum/venv/bin/python"


def test_callers_ssh_options_come_first_because_ssh_keeps_the_first_value() -> None:
    options, _ = remote_run.split_argv(["--host", "vps", "-o", "LogLevel=INFO", "-p", "2"])

    command = remote_run.ssh_command(options, ["bash", "-s", "--", "--qty", "0.002 x"])

    assert command.index("LogLevel=INFO") < command.index("LogLevel=ERROR")
    assert command[-2:] == ["vps", "bash -s -- --qty '0.002 x'"]


@pytest.mark.parametrize(("specs", "local", "expected"), [
    (["REDIS_URL"], {"REDIS_URL": "redis://:pw@h/0"}, {"REDIS_URL": "redis://:pw@h/0"}),
    (["A=b=c"], {}, {"A": "b=c"}),
    ([], {"REDIS_URL": "redis://x"}, {}),
])
def test_only_named_variables_cross(specs, local, expected) -> None:
    assert remote_run.forwarded_env(specs, local) == expected


@pytest.mark.parametrize(("specs", "message"), [(["REDIS_URL"], "not set here"), (["1BAD"], "bad name")])
def test_a_bad_env_spec_is_refused(specs, message) -> None:
    with pytest.raises(remote_run.RemoteError, match=message):
        remote_run.forwarded_env(specs, {})


def test_secrets_travel_in_stdin_never_on_the_command_line(tmp_path) -> None:
    options, rest = remote_run.split_argv(["--host", "vps", "--env", "REDIS_URL=redis://:pw-xyz@h/0"])
    env = remote_run.forwarded_env(options.env, {})

    for build in (remote_run.python_payload, remote_run.shell_payload):
        script = OPS / ("check_balance.py" if build is remote_run.python_payload else "p33_proof_e2e.sh")
        interpreter, payload = build(script, env, options.remote_python)
        assert "pw-xyz" in payload
        assert "pw-xyz" not in " ".join(remote_run.ssh_command(options, [*interpreter, *rest]))


def test_the_python_payload_runs_like_the_script(script_env) -> None:
    _, payload = remote_run.python_payload(OPS / "check_balance.py", {}, sys.executable)

    remote = subprocess.run([sys.executable, "-", "--json"], input=payload, env=script_env, capture_output=True,
                            text=True, timeout=60)
    local = run_script("check_balance.py", "--json", env=script_env)

    assert remote.returncode == local.returncode == 0, remote.stderr
    assert remote.stdout.splitlines()[:3] == local.stdout.splitlines()[:3]


def test_the_shell_payload_runs_like_the_script(script_env) -> None:
    _, payload = remote_run.shell_payload(OPS / "p33_proof_e2e.sh", {}, sys.executable)

    remote = subprocess.run(["bash", "-s", "--", "--help"], input=payload, env=script_env, capture_output=True,
                            text=True, timeout=30)
    local = run_script("p33_proof_e2e.sh", "--help", env=script_env)

    assert remote.returncode == local.returncode == 0
    assert remote.stdout == local.stdout and "usage: p33_proof_e2e.sh" in remote.stdout


def test_an_unreachable_host_exits_255_and_says_so(script_env) -> None:
    done = run_script("check_balance.py", "--host", "root@127.0.0.1", "-p", "1", "-o", "ConnectTimeout=5",
                      env=script_env)

    assert done.returncode == 255
    assert "check_balance.py: ssh to root@127.0.0.1 failed" in done.stderr
