"""`quantum`: the operator's command line."""

from __future__ import annotations

import argparse
import sys

from shared.cli import control, flatten, proof, status, tail, up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantum", description="Quantum Trader execution fleet")
    commands = parser.add_subparsers(dest="command", required=True)
    up.register(commands)
    flatten.register(commands)
    control.register(commands)
    status.register(commands)
    tail.register(commands)
    proof.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
