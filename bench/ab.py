"""A/B of two versions of the fleet in one run: each version runs a stack of its own, and rounds of
sequential plans are taken from each in turn (ABBA order), so both see the same host.

    python -m bench.ab REF [OTHER] [--rounds 8] [--plans 250] [--env NAME=VALUE ...]

REF and OTHER are git revisions, checked out into temporary worktrees; OTHER defaults to the working
tree as it is (uncommitted changes included). Prints each round's decision p50, end-to-end p50 and CPU
per plan of all processes, then the medians of the rounds and OTHER's ratio to REF. Half the rounds
run with REF's stack started first, half with OTHER's: a stack started second ran 6-7 % slower in A/A
runs on this host. On a shared machine whose speed moves within minutes this is how a change is
judged, not by a full run against an older one; an A/A run (REF and OTHER the same) shows the noise.
Each side's stack uses that version's own bench launcher (bench.stack), so REF must be a revision
that has one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.__main__ import _env_pair
from bench.stack import ROOT

FIGURES = ("decision", "e2e", "cpu")
# Runs in each version's tree (cwd and PYTHONPATH), with that version's bench package: a stack, then a
# round of sequential plans for each "go" on stdin, one JSON line each.
DRIVER = """
import json, shutil, sys
from bench import measure, plans
from bench.stack import DAEMONS, Stack
size, env = int(sys.argv[1]), json.loads(sys.argv[2])
stack = Stack()
try:
    stack.start_infra()
    quantities = plans.sim_quantities(stack.sim_url)
    stack.start(*DAEMONS, P33_ALLOWLIST=",".join(plans.allowlist(3, list(quantities))), **env)
    r = stack.client()
    watcher = measure.Watcher(stack.redis_url, r, stack.work_dir)
    btc = [("BTCUSDT", str(quantities["BTCUSDT"]))]
    measure.sequential(r, watcher, "warm", btc * 50)
    print("ready", flush=True)
    for k, line in enumerate(sys.stdin):
        if line.strip() != "go":
            break
        res = measure.sequential(r, watcher, f"ab{k}", btc * (size + 10), warmup=10, pids=stack.pids())
        print(json.dumps({"decision": res["decision"]["p50_ms"], "e2e": res["e2e"]["p50_ms"],
                          "cpu": round(sum(res["cpu_ms_per_plan"].values()), 3)}), flush=True)
    watcher.stop()
finally:
    stack.close()
    shutil.rmtree(stack.work_dir, ignore_errors=True)
"""


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


class Side:
    """One version: its tree and its driver process."""

    def __init__(self, label: str, tree: Path, plans: int, env: dict[str, str]):
        self.label = label
        self.process = subprocess.Popen([sys.executable, "-c", DRIVER, str(plans), json.dumps(env)], cwd=tree,
                                        env={**os.environ, "PYTHONPATH": str(tree)}, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def ready(self) -> None:
        line = self.process.stdout.readline()  # type: ignore[union-attr]  # a pipe, set above
        if line.strip() != "ready":
            raise RuntimeError(f"{self.label}: the stack did not start (driver said {line!r})")

    def round(self) -> dict:
        self.process.stdin.write("go\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"{self.label}: the driver ended during a round")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]  # ends the driver's loop: it stops its stack
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the version to compare against (a git revision)")
    parser.add_argument("other", nargs="?", default=None, help="a git revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds per version (default 8)")
    parser.add_argument("--plans", type=int, default=250, help="plans per round (default 250)")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for both versions' daemons")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="quantum-ab-"))
    worktrees: list[Path] = []
    sides: list[Side] = []
    try:
        trees = []
        for name, rev in (("A", args.ref), ("B", args.other)):
            if rev is None:
                trees.append((f"{name} working tree", ROOT))
                continue
            tree = scratch / name
            _git("worktree", "add", "--detach", "--quiet", str(tree), rev)
            worktrees.append(tree)
            trees.append((f"{name} {rev} ({_git('rev-parse', '--short', rev)})", tree))
        rounds: dict[str, list[dict]] = {label: [] for label, _tree in trees}
        # The stack started second ran 6-7 % slower in A/A runs here (same code both sides): half the rounds
        # are taken with the stacks started in one order, half in the other, so that bias cancels.
        for phase, order in enumerate((trees, trees[::-1])):
            sides = [Side(label, tree, args.plans, dict(args.env)) for label, tree in order]
            for side in sides:
                side.ready()
            for i in range((args.rounds + 1 - phase) // 2):
                for side in sides if i % 2 == 0 else sides[::-1]:
                    rounds[side.label].append(side.round())
                    print(f"phase {phase + 1} round {i + 1} {side.label}: {rounds[side.label][-1]}", flush=True)
            for side in sides:
                side.close()
            sides = []
        ref, other = ({name: statistics.median(one[name] for one in rounds[label]) for name in FIGURES}
                      for label, _tree in trees)
        print(f"\nmedians of {args.rounds} rounds of {args.plans} plans, half with each stack started first "
              f"(ms; cpu: all processes per plan)")
        for (label, _tree), figures in zip(trees, (ref, other)):
            print(f"  {label:<40}" + "  ".join(f"{name} {figures[name]:.3f}" for name in FIGURES))
        print(f"  {'ratio B / A':<40}" + "  ".join(f"{name} {other[name] / ref[name]:.3f}x" for name in FIGURES))
    finally:
        for side in sides:
            side.close()
        for tree in worktrees:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
