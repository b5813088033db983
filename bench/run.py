"""The bench's phases, in order, against one stack started for the run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import timeit
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from bench import measure, plans
from bench.stack import DAEMONS, Stack
from microservices.governor.settings import Limits
from microservices.governor.store import GovernorStore
from shared import keys, results
from shared.snapshot import ExchangeSnapshot

P33 = "position-state-brain"
PACE_S = 0.010  # the paced phase's pause before each sample: past it, a PING here costs no more (tried 0-30 ms)
GROUPS = [keys.Group.GOVERNOR, keys.Group.POSITION_STATE_BRAIN, keys.Group.INTENT_EXECUTOR]


@dataclass(frozen=True)
class Sizes:
    floor: int  # samples per floor figure
    main: int  # plans of the main run
    main_max_s: float  # ... or fewer, when they take longer than this
    scale: int  # plans per figure of the other sequential phases (split over `rounds` rounds)
    scale_max_s: float  # per round
    rounds: int
    burst: int
    burst_symbols: int
    burst_timeout_s: float  # the target; past it the burst is followed for burst_overtime_s more
    burst_overtime_s: float
    history: int
    idle_s: float
    paced: int  # samples per figure of the paced phase (floor and plans)

    @classmethod
    def full(cls) -> "Sizes":
        return cls(floor=2000, main=2000, main_max_s=90, scale=1000, scale_max_s=15, rounds=4, burst=10_000,
                   burst_symbols=200, burst_timeout_s=10, burst_overtime_s=50, history=1_000_000, idle_s=10,
                   paced=400)

    @classmethod
    def quick(cls) -> "Sizes":
        return cls(floor=500, main=300, main_max_s=30, scale=150, scale_max_s=8, rounds=2, burst=1000,
                   burst_symbols=200, burst_timeout_s=10, burst_overtime_s=20, history=0, idle_s=3,
                   paced=100)


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    def __init__(self, sizes: Sizes, daemon_env: dict[str, str] | None = None):
        self.sizes = sizes
        self.stack = Stack()
        self.daemon_env = daemon_env or {}
        self.results: dict = {"sizes": sizes.__dict__, "daemon_env_overrides": self.daemon_env}
        self.samples: dict[str, dict] = {}

    # -- helpers -------------------------------------------------------------------------------
    def reset_exchange(self) -> None:
        """Fresh simulator account and an empty ledger, so each phase starts from the same state.

        The simulator scans every order it ever took on each mark/position lookup (see the report),
        so without this a phase would be slower only because an earlier one placed orders. Waits
        until P3.3 has published a snapshot taken after the reset (it polls every P33_POLL_SEC).
        """
        r = self.r
        reset_ms = int(time.time() * 1000)
        request = urllib.request.Request(f"{self.stack.sim_url}/_sim/reset", data=b"{}", method="POST",
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        ledgers = list(r.scan_iter(keys.position_ledger_pattern()))
        if ledgers:
            r.delete(*ledgers)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            raw = r.get(keys.EXCHANGE_POSITIONS)
            if raw and int(json.loads(raw)["fetched_at_ms"]) > reset_ms + 50:
                return
            time.sleep(0.05)  # between phases: waiting for P3.3's next scheduled refresh
        raise RuntimeError("position-state-brain did not refresh its snapshot after the reset")

    def start(self, *names: str, **env: str) -> None:
        self.stack.start(*names, **{**env, **self.daemon_env})

    def restart(self, *names: str, **env: str) -> None:
        self.stack.restart(*names, **{**env, **self.daemon_env})

    def allowlist_env(self, size: int) -> dict[str, str]:
        return {"P33_ALLOWLIST": ",".join(plans.allowlist(size, list(self.quantities)))}

    def btc(self, n: int) -> list[tuple[str, str]]:
        return [("BTCUSDT", str(self.quantities["BTCUSDT"]))] * n

    def one_round(self, tag: str, n: int, max_s: float, warmup: int = 10, watched: bool = True,
                  pause_s: float = 0.0) -> dict:
        """A fresh exchange, `warmup` unmeasured plans (after a restart: connections, caches), then n plans."""
        self.reset_exchange()
        pids = self.stack.pids()
        return measure.sequential(self.r, self.watcher, tag, self.btc(n + warmup), warmup=warmup, max_s=max_s,
                                  pids=pids, watched=watched, pause_s=pause_s)

    def record(self, name: str, result: dict) -> dict:
        self.samples[name] = result.pop("_samples")
        result["drift"] = _drift(self.samples[name]["e2e"])
        self.results[name] = result
        d, e = result["decision"], result["e2e"]
        capped = f" (capped after {result['capped_after_s']} s)" if result.get("capped_after_s") else ""
        say(f"{name}: {result['plans']} plans{capped}: decision p50 {d.get('p50_ms')} ms p99 {d.get('p99_ms')} ms | "
            f"e2e p50 {e.get('p50_ms')} ms p99 {e.get('p99_ms')} ms | {result['outcomes']}")
        return result

    def sequential(self, name: str, n: int, max_s: float, warmup: int = 10) -> dict:
        return self.record(name, self.one_round(name, n, max_s, warmup))

    def skip_backlog(self) -> dict:
        """After a burst that did not drain: skip what is left, so later phases start clean.

        Every group jumps to the end of apply.plan (XGROUP SETID $) while the daemons run; what they
        hold in hand is finished. The governor's in-flight records of skipped opens that will never
        get a result are dropped too: it would otherwise count (and parse, on every open decision)
        them until they expire, permit TTL + 60 s later.
        """
        for group in GROUPS:
            self.r.xgroup_setid(keys.Stream.APPLY_PLAN, group, "$")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                self.r.xpending(keys.Stream.APPLY_PLAN, group)["pending"] for group in GROUPS):
            time.sleep(0.1)  # the daemons finish the batch in hand; nothing is measured meanwhile
        inflight = self.r.hkeys(keys.GOVERNOR_INFLIGHT)
        ended = results.with_results(self.r, inflight)
        abandoned = [plan_id for plan_id in inflight if plan_id not in ended]
        if abandoned:
            GovernorStore(self.r, Limits()).drop(abandoned)  # with their share of the running totals
        return {"governor_inflight_records": len(inflight), "dropped_without_result": len(abandoned)}

    # -- phases --------------------------------------------------------------------------------
    def run(self) -> dict:
        s = self.sizes
        started = time.monotonic()
        self.results["environment"] = environment()
        say(f"work dir {self.stack.work_dir}")
        self.stack.start_infra()
        self.quantities = plans.sim_quantities(self.stack.sim_url)
        self.r = self.stack.client()
        self.results["environment"]["simulator_symbols"] = len(self.quantities)
        self.results["environment"]["redis_version"] = self.r.info("server")["redis_version"]
        self.start(*DAEMONS, **self.allowlist_env(3))
        self.results["rss_at_start"] = measure.rss_mb({n: d.pid for n, d in self.stack.daemons.items()})
        self.watcher = measure.Watcher(self.stack.redis_url, self.r, self.stack.work_dir)

        say("floor: PING, stream hop, notification hop")
        self.results["floor"] = {
            "ping": measure.floor_ping(self.r, s.floor),
            **measure.floor_hop(self.r, self.stack.redis_url, self.stack.work_dir, s.floor),
            "notify_hop": measure.floor_notify(self.r, s.floor),
            "exchange": measure.floor_exchange(self.stack.sim_url, str(self.quantities["BTCUSDT"]),
                                               max(50, s.floor // 10)),
        }

        self.main()
        self.paced()

        per_round = max(1, s.scale // s.rounds)
        say(f"scaling: 3 / 50 / 500 allowlisted symbols, {s.rounds} interleaved rounds of {per_round} plans")
        rounds: dict[int, list[dict]] = {3: [], 50: [], 500: []}
        for round_no in range(s.rounds):
            for size in rounds:
                self.restart(P33, **self.allowlist_env(size))
                rounds[size].append(self.one_round(f"allowlist_{size}_r{round_no}", per_round, s.scale_max_s))
        for size, done in rounds.items():
            self.record(f"allowlist_{size}", measure.merge(done))
        if s.history:  # right after the 3-symbol figure it is compared with, before the bursts change the host's state
            self.history(per_round)

        self.stack.stop("intent-executor")
        self.restart(P33, **self.allowlist_env(3))
        say(f"diagnostic: decision path with the intent-executor stopped, {s.scale} plans")
        self.reset_exchange()
        self.results["decision_without_executor"] = measure.decision_only(self.r, "solo", self.btc(s.scale + 10))
        say(f"decision_without_executor: {self.results['decision_without_executor']['decision']}")
        self.watcher.collect()  # drop what the watcher saw of these
        # The executor must not act on these plans when it is back: they were only for the deciders.
        self.r.xgroup_setid(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR, "$")

        self.restart(*DAEMONS, LOG_LEVEL="INFO", **self.allowlist_env(3))
        say(f"logging: {s.scale} plans with LOG_LEVEL=INFO (the default), against the 3-symbol figure above")
        self.sequential("log_info", s.scale, s.scale_max_s * s.rounds)
        self.results["log_info"]["log_bytes_per_plan"] = self._log_bytes_per_plan("log_info")

        # Back to WARNING; P3.3 gets the 500-symbol allowlist: it holds the burst's 200 names.
        self.restart(*DAEMONS, **self.allowlist_env(500))
        names = plans.allowlist(s.burst_symbols, list(self.quantities))
        mixed = [(sym, str(self.quantities.get(sym, Decimal("1")))) for sym in names]
        tradeable = [(sym, str(q)) for sym, q in self.quantities.items()]
        self.results["bursts"] = []
        for label, pool in ((f"burst_{len(mixed)}_symbols", mixed), (f"burst_{len(tradeable)}_tradeable", tradeable)):
            self.reset_exchange()
            say(f"{label}: {s.burst} plans at once over {len(pool)} symbols")
            burst_plans = [pool[i % len(pool)] for i in range(s.burst)]
            result = measure.burst(self.r, self.watcher, label, burst_plans, s.burst_timeout_s, s.burst_overtime_s,
                                   pids=self.stack.pids(), sim_url=self.stack.sim_url)
            result["tradeable_symbols"] = sum(1 for sym, _ in pool if sym in self.quantities)
            self.results[label] = result
            self.results["bursts"].append(label)
            say(f"{label}: drained {result['drain_s']} s ({result['plans_per_s']} plans/s); eventually "
                f"{result['eventually_drained_s']} s; results {result['results']}/{result['plans']}, duplicates "
                f"{result['duplicates']}, {result['outcomes']}")
            result["governor_inflight_after"] = self.r.hlen(keys.GOVERNOR_INFLIGHT)
            if result["without_result"]:
                say(f"{label}: {result['without_result']} plans still without a result: skipping the backlog")
                result["skipped"] = self.skip_backlog()

        say(f"cost: RSS and CPU over a {s.idle_s:.0f} s idle window (after the load)")
        time.sleep(2)  # let the last batch's housekeeping pass before the window opens
        self.results["idle_cost"] = measure.idle_cost(self.stack.pids(), s.idle_s)

        self.results["snapshot_decode_us"] = snapshot_decode_cost(self.r.get(keys.EXCHANGE_POSITIONS))
        self.results["daemon_log_problems"] = self.stack.log_problems()
        self.results["elapsed_s"] = round(time.monotonic() - started, 1)
        self.results["environment"]["loadavg_end"] = os.getloadavg()
        self.results["environment"]["machine_ms_end"] = machine_ms()
        return self.results

    def main(self) -> None:
        """The headline figures, one plan at a time: the decision in watched rounds (the watcher process stamps
        each permit as Redis announces it), end-to-end in unwatched rounds in between (nothing announced, the
        watcher asleep), so that the fleet's end-to-end latency is not also the cost of the instrument."""
        s = self.sizes
        per_round, max_s = max(1, s.main // s.rounds), s.main_max_s / s.rounds
        say(f"main: {s.main} plans watched (decision) and {s.main} unwatched (end-to-end) one at a time, "
            f"{s.rounds} interleaved pairs of rounds (BTCUSDT BUY, 3 allowlisted symbols)")
        watched, unwatched = [], []
        for round_no in range(s.rounds):
            watched.append(self.one_round(f"main_r{round_no}", per_round, max_s, warmup=20))
            unwatched.append(self.one_round(f"main_unwatched_r{round_no}", per_round, max_s, warmup=20, watched=False))
        self.record("main", measure.merge(watched))
        self.record("main_unwatched", measure.merge(unwatched))

    def paced(self) -> None:
        """The floor and the decision again with a pause before each sample. Back to back, the processes and
        CPUs of one sample are still awake for the next; a live fleet's plans come seconds apart, each to
        sleeping processes. The ratios to the paced hop say whether the fleet loses more than the floor does."""
        s = self.sizes
        say(f"paced: PING, stream hop and {s.paced} plans, each after a {PACE_S * 1000:.0f} ms pause")
        self.results["paced_floor"] = {
            "pause_ms": PACE_S * 1000,
            "ping": measure.floor_ping(self.r, s.paced, PACE_S),
            "hop": measure.floor_hop(self.r, self.stack.redis_url, self.stack.work_dir, s.paced, PACE_S)["hop"],
        }
        self.record("paced", self.one_round("paced", s.paced, s.main_max_s, pause_s=PACE_S))

    def history(self, per_round: int) -> None:
        """Decision with 1,000,000 old entries in apply.plan against without them, measured as
        without / with / with / without (the history trimmed away again), so that the machine
        drifting during the phase does not land on one side of the ratio."""
        s = self.sizes
        baseline, loaded = [], []
        self.restart(*DAEMONS, **self.allowlist_env(3))
        say(f"history: baseline round, {per_round} plans before the fill")
        baseline.append(self.one_round("history_baseline_r0", per_round, s.scale_max_s))
        self.stack.stop()
        say(f"history: filling apply.plan with {s.history:,} read-and-acked entries")
        self.results["history_fill"] = measure.fill_history(self.r, s.history, GROUPS)
        filled_up_to = self.r.xinfo_stream(keys.Stream.APPLY_PLAN)["last-generated-id"]
        self.start(*DAEMONS, **self.allowlist_env(3))
        say(f"history: 2 rounds of {per_round} plans with {s.history:,} old entries in apply.plan")
        for round_no in range(2):
            loaded.append(self.one_round(f"history_1m_r{round_no}", per_round, s.scale_max_s))
        self.results["idle_cost_1m"] = measure.idle_cost(self.stack.pids(), s.idle_s)
        self.stack.stop()
        trimmed = self.r.xtrim(keys.Stream.APPLY_PLAN, minid=self._oldest_needed(filled_up_to), approximate=False)
        self.restart(*DAEMONS, **self.allowlist_env(3))
        say(f"history: trimmed {trimmed:,} entries; baseline round, {per_round} plans")
        baseline.append(self.one_round("history_baseline_r1", per_round, s.scale_max_s))
        self.record("history_baseline", measure.merge(baseline))
        self.record("history_1m", measure.merge(loaded))

    def _oldest_needed(self, up_to: str) -> str:
        """`up_to`, or the oldest entry some group still has pending if that is older: never trim those."""
        pending = [self.r.xpending(keys.Stream.APPLY_PLAN, group)["min"] for group in GROUPS]
        return min([up_to, *[entry_id for entry_id in pending if entry_id]], key=_stream_id)

    def _log_bytes_per_plan(self, tag: str) -> dict[str, float]:
        plans_sent = self.results[tag]["plans"] + self.results[tag]["warmup"]
        sizes = {}
        for name in DAEMONS:
            path = self.stack.work_dir / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            mine = [line for line in lines if f'"{tag}-' in line]
            sizes[name] = {"lines": round(len(mine) / plans_sent, 2), "bytes": round(sum(map(len, mine)) / plans_sent)}
        return sizes

    def close(self) -> None:
        try:
            if getattr(self, "watcher", None) is not None:
                self.watcher.stop()
        finally:
            self.stack.close()


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _drift(e2e_ns: list[int]) -> dict:
    """e2e p50 of the first and last tenth of a phase: growth inside a phase shows up here."""
    tenth = max(1, len(e2e_ns) // 10)
    first, last = sorted(e2e_ns[:tenth]), sorted(e2e_ns[-tenth:])
    return {"e2e_p50_first_tenth_ms": round(first[len(first) // 2] / 1e6, 3),
            "e2e_p50_last_tenth_ms": round(last[len(last) // 2] / 1e6, 3)} if e2e_ns else {}


def snapshot_decode_cost(published: str | None) -> dict[str, float]:
    """µs to decode quantum:exchange:positions, which the governor does on every open decision and
    the executor on every order: it grows with the symbols held and priced, not with the plan.

    The 14- and 500-symbol documents are made from the one P3.3 published, so they have its format.
    """
    if not published:
        return {}
    data = json.loads(published)
    position = next(iter(data["positions"].values()), ["0.002", "88000.1"])
    mark = next(iter(data["marks"].values()), "88000.12")
    out = {}
    for symbols in (14, 500):
        names = [f"S{i:04d}USDT" for i in range(symbols)]
        raw = json.dumps({**data, "positions": {n: position for n in names}, "marks": {n: mark for n in names}})
        runs = 200 if symbols > 100 else 2000
        out[f"{symbols}_symbols"] = round(timeit.timeit(lambda: ExchangeSnapshot.from_json(raw), number=runs) / runs * 1e6, 1)
    return out


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parents[1], timeout=5).stdout.strip()
    except OSError:
        commit = ""
    try:
        status = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", "shared", "microservices"], capture_output=True,
                                text=True, cwd=Path(__file__).resolve().parents[1], timeout=5).stdout.split("\n")
    except OSError:
        status = []
    # Uncommitted changes under shared/ and microservices/ are measured too: name them.
    dirty = [line[3:] for line in status if line.strip()]
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
            "machine_ms_start": machine_ms(), "commit": commit, "uncommitted_files": dirty,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def machine_ms() -> float:
    """How fast this machine runs Python right now: a fixed workload (Decimal arithmetic, JSON), the median
    of five timings, ms. On a shared VM the same code runs a third slower at times; runs whose figures
    differ should be compared with this first."""
    def work() -> None:
        total = Decimal(0)
        for i in range(5000):
            total += Decimal(i) * Decimal("1.0001")
        json.loads(json.dumps([str(total)] * 2000))

    timings = []
    for _ in range(5):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return round(sorted(timings)[2] * 1000, 2)


def save(results: dict, path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
