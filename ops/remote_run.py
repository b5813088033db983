#!/usr/bin/env python3
"""Run an ops script on another host over ssh, with the same output as a local run.

Every script in ops/ accepts --host HOST. When it is given, the script hands its command line
to this module, which re-runs the very same file on HOST from stdin:

    shell:   ssh HOST bash -s -- ARGS            < script
    python:  ssh HOST REMOTE_PYTHON - ARGS       < script

Nothing is copied to the host and nothing stays behind. The remote run reads the host's own
configuration (/etc/quantum/common.env); a local variable crosses only when named with --env,
and then inside stdin, never on a command line (it may hold a password).

Options taken here (everything else goes to the script unchanged):
  --host HOST              [user@]host to run on
  -p, --port PORT          ssh port
  -i, --identity FILE      ssh private key
  -o, --ssh-option OPTION  passed to ssh as -o OPTION (repeatable)
  --remote-python PATH     python of the fleet's venv on HOST (default /opt/quantum/venv/bin/python)
  --env NAME[=VALUE]       export NAME on HOST, with the local value unless VALUE is given (repeatable)

Shell scripts usage: remote_run.py SCRIPT ARGS...; Python scripts call rerun(__file__, argv).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

DEFAULT_REMOTE_PYTHON = "/opt/quantum/venv/bin/python"
SHELL_LIBRARY = Path(__file__).resolve().parent / "lib" / "ops.sh"
# First value wins in ssh, so these defaults come after the caller's -o options.
SSH_DEFAULTS = ("BatchMode=yes", "LogLevel=ERROR")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SSH_FAILED = 255
REEXEC_MARK = "QUANTUM_OPS_IN_FLEET_PYTHON"  # set before re-running a script under the fleet's python: once only


class RemoteError(ValueError):
    """A bad remote option; the script exits 2 with this line."""


def in_fleet_python(script: str, argv: list[str], prog: str) -> int:
    """A local run by a python without the fleet's package (the `#!/usr/bin/env python3` line on a host, where the
    fleet lives in its venv; found in review, the documented commands failed with ModuleNotFoundError): the same
    script again under QUANTUM_PYTHON, else the venv's python. Returns only when there is none (exit 2)."""
    if not os.environ.get(REEXEC_MARK):
        for candidate in (os.environ.get("QUANTUM_PYTHON"), DEFAULT_REMOTE_PYTHON):
            if candidate and os.access(candidate, os.X_OK):
                os.environ[REEXEC_MARK] = "1"
                os.execv(candidate, [candidate, script, *argv])
    print(f"{prog}: the fleet's package is not importable by {sys.executable}: run this with the fleet's venv python "
          f"({DEFAULT_REMOTE_PYTHON}) or set QUANTUM_PYTHON to it", file=sys.stderr)
    return 2


def wants_remote(argv: list[str]) -> bool:
    return any(arg == "--host" or arg.startswith("--host=") for arg in argv)


def remote_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--host", required=True)
    parser.add_argument("-p", "--port")
    parser.add_argument("-i", "--identity")
    parser.add_argument("-o", "--ssh-option", action="append", default=[])
    parser.add_argument("--remote-python", default=DEFAULT_REMOTE_PYTHON)
    parser.add_argument("--env", action="append", default=[])
    return parser


def split_argv(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the script's own arguments in their original order."""
    options, script_args = remote_parser().parse_known_args(argv)
    return options, script_args


def forwarded_env(specs: list[str], local: dict[str, str]) -> dict[str, str]:
    env = {}
    for spec in specs:
        name, has_value, value = spec.partition("=")
        if not ENV_NAME.match(name):
            raise RemoteError(f"--env wants NAME or NAME=VALUE, got a bad name {name[:40]!r}")
        if not has_value:
            if name not in local:
                raise RemoteError(f"--env {name}: {name} is not set here (give --env {name}=VALUE)")
            value = local[name]
        env[name] = value
    return env


def ssh_command(options: argparse.Namespace, remote_command: list[str]) -> list[str]:
    command = ["ssh", "-T"]
    if options.port:
        command += ["-p", options.port]
    if options.identity:
        command += ["-i", options.identity]
    for option in [*options.ssh_option, *SSH_DEFAULTS]:
        command += ["-o", option]
    # The remote shell parses the command line again, so it travels as one quoted string.
    return [*command, "--", options.host, shlex.join(remote_command)]


def shell_payload(script: Path, env: dict[str, str], remote_python: str) -> tuple[list[str], str]:
    """bash -s reads the script from stdin; braces make bash read all of it before running any
    of it, so a command inside the script that reads stdin cannot swallow the rest."""
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in env.items())
    exports += f"export QUANTUM_PYTHON={shlex.quote(remote_python)}\n"
    body = SHELL_LIBRARY.read_text(encoding="utf-8") + "\n" + script.read_text(encoding="utf-8")
    return ["bash", "-s", "--"], exports + "{\n" + body + "\n}\n"


def python_payload(script: Path, env: dict[str, str], remote_python: str) -> tuple[list[str], str]:
    """A bootstrap that sets the environment, then runs the script's source as __main__ under its
    own name, so usage and error lines read as they do locally."""
    name = script.name
    bootstrap = (
        "import os, sys\n"
        f"os.environ.update({env!r})\n"
        f"sys.argv[0] = {name!r}\n"
        f"exec(compile({script.read_text(encoding='utf-8')!r}, {name!r}, 'exec'),"
        f" {{'__name__': '__main__', '__file__': {name!r}}})\n"
    )
    return [remote_python, "-"], bootstrap


def rerun(script: str | Path, argv: list[str]) -> int:
    """Run `script` with `argv` (which holds --host and friends) on the remote host; its exit code."""
    script = Path(script).resolve()
    try:
        options, script_args = split_argv(argv)
        env = forwarded_env(options.env, dict(os.environ))
    except RemoteError as exc:
        print(f"{script.name}: {exc}", file=sys.stderr)
        return 2
    build = shell_payload if script.suffix == ".sh" else python_payload
    interpreter, payload = build(script, env, options.remote_python)
    command = ssh_command(options, [*interpreter, *script_args])
    try:
        done = subprocess.run(command, input=payload.encode("utf-8"), check=False)
    except FileNotFoundError:
        print(f"{script.name}: ssh is not installed here (apt-get install openssh-client)", file=sys.stderr)
        return SSH_FAILED
    if done.returncode == SSH_FAILED:
        print(f"{script.name}: ssh to {options.host} failed (exit {SSH_FAILED})", file=sys.stderr)
    return done.returncode


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: remote_run.py SCRIPT --host HOST [ssh options] [script arguments]", file=sys.stderr)
        return 2
    return rerun(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
