"""python -m bench [--quick] [--keep] [--env NAME=VALUE ...]: see bench/__init__.py."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from bench.report import floor_against, plot, table
from bench.run import Bench, Sizes, save, say

HERE = Path(__file__).resolve().parent


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _previous(path: Path) -> dict | None:
    """Earlier results, read before the run (it may replace them); None when there are none (or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _shown(path: Path) -> str:
    """A path as results.json keeps it: relative to the repository when inside it (no host's directories)."""
    resolved = path.resolve()
    return str(resolved.relative_to(HERE.parent)) if resolved.is_relative_to(HERE.parent) else str(path)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; --out defaults by mode, so a --quick run never replaces the committed full run."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer plans, smaller bursts, no 1M-entry history")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (daemon logs, redis data)")
    parser.add_argument("--env", type=_env_pair, action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for every daemon (e.g. STREAM_BATCH=16), to compare settings")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON (default bench/results.json, bench/results-quick.json with --quick)")
    parser.add_argument("--against", type=Path, default=HERE / "results.json",
                        help="earlier results whose floor this run's is compared with (read before the run)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = HERE / ("results-quick.json" if args.quick else "results.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    previous = _previous(args.against)
    bench = Bench(Sizes.quick() if args.quick else Sizes.full(), dict(args.env))
    bench.results["mode"] = "quick" if args.quick else "full"
    try:
        results = bench.run()
    except BaseException:
        say(f"failed; daemon logs kept in {bench.stack.work_dir}")
        args.keep = True
        raise
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(bench.stack.work_dir, ignore_errors=True)
    results["floor_against"] = floor_against(previous, results, _shown(args.against))
    save(results, args.out)
    print()
    print(table(results))
    print()
    print(f"results: {args.out}")
    if plot(results, bench.samples, args.out.with_name("latency.png")):
        print(f"plot: {args.out.with_name('latency.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
