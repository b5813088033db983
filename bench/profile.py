"""Where the daemons spend their time under load: py-spy on each process, summarised per function.

    python -m bench.profile [--burst N] [--plans N] [--seconds S] [--gil] [--env NAME=VALUE ...] [--out DIR]

Starts the same stack as the bench, drives it (one plan at a time, or a burst of N plans over the 14
tradeable symbols), records each daemon and the simulator with `py-spy record --format raw`, and
prints for each process the share of samples under the fleet's own functions (inclusive) and the
leaf functions (self). With --gil only samples holding the GIL count, i.e. Python CPU, not waits.

py-spy comes with the bench extra (`make bench` installs it); it needs ptrace rights.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from bench import measure, plans
from bench.__main__ import _env_pair
from bench.stack import DAEMONS, Stack

FRAME = re.compile(r"(.*) \((.*?):\d+\)$")
OWN = re.compile(r"^(shared|microservices)/")
# py-spy names some of shared/runtime's files by their base name only.
RUNTIME = {f"{name}.py" for name in ("consumer", "daemon", "maintenance", "deadletter", "liveness", "ids")}


def _short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    function, path = match.groups()
    path = re.sub(r".*/site-packages/", "~", path)
    path = re.sub(r".*/lib/python3\.\d+/", "", path)
    path = re.sub(r"^.*?/(shared|microservices)/", r"\1/", path)
    if path in RUNTIME:
        path = f"shared/runtime/{path}"
    return f"{path}:{function}"


def summarise(path: Path, top: int = 25) -> str:
    """Inclusive shares of the fleet's own frames, then self shares of all leaf frames."""
    inclusive: collections.Counter = collections.Counter()
    leaf: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
    if not total:
        return f"{path.stem}: no samples"
    lines = [f"== {path.stem}: {total} samples"]
    own = [(f, n) for f, n in inclusive.most_common() if OWN.match(f)][:top]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own]
    lines.append("  -- self (leaf) --")
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in leaf.most_common(12)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=int, default=3000, help="sequential plans (default mode)")
    parser.add_argument("--burst", type=int, default=0, help="instead: this many plans at once over 14 symbols")
    parser.add_argument("--symbols", type=int, default=0,
                        help="with --burst: over this many allowlisted symbols (the tradeable ones among them), "
                             "like the bench's mixed burst")
    parser.add_argument("--seconds", type=int, default=20, help="py-spy recording length")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python CPU)")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--out", type=Path, default=Path("bench/profiles"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    try:
        stack.start_infra()
        quantities = plans.sim_quantities(stack.sim_url)
        names = plans.allowlist(args.symbols, list(quantities)) if args.symbols else list(quantities)
        stack.start(*DAEMONS, P33_ALLOWLIST=",".join(names), **dict(args.env))
        r = stack.client()
        watcher = measure.Watcher(stack.redis_url, r, stack.work_dir)
        btc = ("BTCUSDT", str(quantities["BTCUSDT"]))
        measure.sequential(r, watcher, "warm", [btc] * 50)
        targets = {name: pid for name, pid in stack.pids().items() if name != "redis-server"}

        def record() -> None:
            time.sleep(1)
            spies = [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--rate",
                                       str(args.rate), "--format", "raw", "--nonblocking", *(["--gil"] if args.gil else []),
                                       "-o", str(args.out / f"{name}.txt")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for name, pid in targets.items()]
            for one in spies:
                one.wait()

        recorder = threading.Thread(target=record)
        recorder.start()
        if args.burst:
            pool = [(s, str(quantities.get(s, Decimal("1")))) for s in names]
            result = measure.burst(r, watcher, "prof", [pool[i % len(pool)] for i in range(args.burst)],
                                   timeout_s=args.seconds + 60, pids=stack.pids())
        else:
            result = measure.sequential(r, watcher, "prof", [btc] * args.plans, max_s=args.seconds + 2)
            result.pop("_samples")
        recorder.join()
        watcher.stop()
        print({k: v for k, v in result.items() if k in ("plans", "decision", "e2e", "drain_s", "outcomes", "cpu_ms_per_plan")})
        for name in targets:
            path = args.out / f"{name}.txt"
            print(summarise(path) if path.exists() else f"{name}: no profile (py-spy failed?)")
    finally:
        stack.close()
        shutil.rmtree(stack.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
