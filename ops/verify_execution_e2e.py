#!/usr/bin/env python3
"""End-to-end execution proof: inject test plans, confirm their orders on the exchange, write a proof.

The same command as `quantum proof` (shared/cli/proof.py), so both print the same lines:

    verify_execution_e2e.py [--count N] [--plan SYMBOL:QTY]... [--close] [--out FILE] [--timeout S]

Remote: add --host HOST [-p PORT] [-i KEY] [-o SSH_OPTION]... [--remote-python PY]
[--env NAME[=VALUE]]... to run it on HOST over ssh (ops/remote_run.py); the proof file is
then written on HOST (or use --out - to get it on stdout).
"""

import sys
from pathlib import Path

PROG = "verify_execution_e2e.py"


def main(argv: list[str]) -> int:
    if any(arg == "--host" or arg.startswith("--host=") for arg in argv):
        # Imported only here: a run on the remote host has no ops/ directory beside it.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import remote_run

        return remote_run.rerun(__file__, argv)
    try:
        from shared.cli import proof
    except ImportError:  # a local run by a python without the fleet: its venv's, if there is one
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import remote_run

        return remote_run.in_fleet_python(__file__, argv, PROG)

    return proof.main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
