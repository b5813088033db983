"""The measurements. Every latency is time.monotonic_ns() (one clock for all processes on the host).

floor       PING round trip; one stream hop between two processes; the keyspace-notification hop
            that the decision measurement itself rides on (its own overhead).
sequential  one plan at a time, the next after the previous result: decision latency (XADD → the
            later of the two permit SETs, seen by the watcher process) and end-to-end latency
            (XADD → the plan's result read by XREAD BLOCK on apply.result, pipelined after the XADD
            so the driver does not wake in between).
burst       every plan XADDed at once (pipelined); time until every plan has its one result.
paced       the floor and the sequential plans again with a pause before each sample: every process
            has gone to sleep when the next one starts, as between a live fleet's sporadic plans.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import redis

from bench import peer
from bench.plans import plan_fields
from bench.stats import summary
from microservices.governor.settings import Limits
from microservices.governor.store import GovernorStore
from shared import keys
from shared.orders import client_order_id_for

ROOT = Path(__file__).resolve().parents[1]
PLAN = keys.Stream.APPLY_PLAN
RESULT = keys.Stream.APPLY_RESULT
RESULT_TIMEOUT_S = 30.0
NS = 1_000_000  # ns per ms
KEYSPACE_EVENTS = "K$"  # what the watcher hears: the keyspace channel, string commands only


def now() -> int:
    return time.monotonic_ns()


# ---------------------------------------------------------------------------------------------
class Peer:
    """A helper process (bench.peer) started and stopped by the driver."""

    def __init__(self, role: str, redis_url: str, r: redis.Redis, log_dir: Path):
        self.role, self.r = role, r
        log = open(log_dir / f"peer-{role}.log", "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "bench.peer", role, redis_url],
                                        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            ready = r.blpop([peer.READY], timeout=20)
            if ready is None or ready[1] != role:
                raise RuntimeError(f"bench peer {role} did not start")
        except BaseException:
            self.stop()  # the caller never gets the peer to stop it
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Watcher(Peer):
    def __init__(self, redis_url: str, r: redis.Redis, log_dir: Path):
        r.config_set("notify-keyspace-events", KEYSPACE_EVENTS)
        super().__init__("watch", redis_url, r, log_dir)
        self.dump_dir = Path(tempfile.mkdtemp(prefix="bench-watch-", dir=log_dir))
        self._dumps = 0

    def collect(self) -> dict[str, list[int | None]]:
        """Every permit SET seen since the last collect: plan_id -> [p32 ns, p33 ns]."""
        self._dumps += 1
        path = self.dump_dir / f"{self._dumps}.json"
        self.r.publish(peer.CTL, f"dump {path}")
        if self.r.blpop([peer.CTL_ACK], timeout=30) is None:
            raise RuntimeError("watcher did not answer")
        seen = json.loads(path.read_text())
        path.unlink()
        return seen

    def stop(self) -> None:
        try:
            self.r.publish(peer.CTL, "quit")
            self.process.wait(timeout=5)
        except (redis.RedisError, subprocess.TimeoutExpired):
            pass  # Redis gone, or the watcher deaf: terminated below
        finally:
            super().stop()


# ---------------------------------------------------------------------------------------------
def pause(seconds: float) -> None:
    """Paced measurements: idle before a sample, so that it starts from sleeping processes and CPUs."""
    if seconds > 0:
        time.sleep(seconds)


def floor_ping(r: redis.Redis, n: int, pause_s: float = 0.0) -> dict:
    samples = []
    for _ in range(n):
        pause(pause_s)
        t0 = now()
        r.ping()
        samples.append(now() - t0)
    return summary(samples)


def floor_hop(r: redis.Redis, redis_url: str, log_dir: Path, n: int, pause_s: float = 0.0) -> dict:
    """Process A (here) XADDs; process B, blocked in XREADGROUP BLOCK, stamps its wake-up."""
    r.delete(peer.HOP_STREAM, peer.HOP_ACK)
    b = Peer("hop", redis_url, r, log_dir)
    hops, round_trips = [], []
    try:
        for _ in range(n):
            pause(pause_s)
            t0 = now()
            r.xadd(peer.HOP_STREAM, {"t": str(t0)})
            woke = int(r.blpop([peer.HOP_ACK], timeout=10)[1])
            t1 = now()
            hops.append(woke - t0)
            round_trips.append(t1 - t0)
        r.xadd(peer.HOP_STREAM, {"quit": "1"})
        b.process.wait(timeout=10)
    finally:
        b.stop()
        r.delete(peer.HOP_STREAM, peer.HOP_ACK)
    return {"hop": summary(hops), "hop_and_reply": summary(round_trips)}


def floor_notify(r: redis.Redis, n: int) -> dict:
    """The decision method's own overhead: SET here → the watcher process wakes on its notification."""
    samples = []
    for i in range(n):
        t0 = now()
        r.set(f"{peer.CALIB_PREFIX}{i % 16}", "1")
        woke = int(r.blpop([peer.CALIB_ACK], timeout=10)[1])
        samples.append(woke - t0)
    r.delete(*[f"{peer.CALIB_PREFIX}{i}" for i in range(16)])
    return summary(samples)


def floor_exchange(sim_url: str, qty: str, n: int) -> dict:
    """The exchange hop the executor pays: a MARKET order through the fleet's own ExchangeClient
    (python-binance, signed, requests) to the simulator; and P3.3's positionRisk read."""
    from shared.exchange.client import ExchangeClient
    from shared.exchange.sim_defaults import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
    from shared.exchange.target import load_exchange_settings

    os.environ.update({"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": sim_url,
                       "EXCHANGE_SIM_API_KEY": SIM_DEV_API_KEY, "EXCHANGE_SIM_API_SECRET": SIM_DEV_API_SECRET})
    client = ExchangeClient(load_exchange_settings())
    client.sync_clock()
    orders, positions = [], []
    tag = str(now() % 10**9)
    for i in range(n):
        t0 = now()
        client.create_market_order("BTCUSDT", "BUY", Decimal(qty), False, f"qt-floor-{tag}-{i}")
        orders.append(now() - t0)
        t0 = now()
        client.positions()
        positions.append(now() - t0)
    return {"order": summary(orders), "position_risk": summary(positions)}


def decision_only(r: redis.Redis, tag: str, plans: list[tuple[str, str]], warmup: int = 10) -> dict:
    """Decision latency with the intent-executor stopped: no CPU taken by it while P3.2/P3.3 decide.

    With no executor the driver may itself BLPOP the permits' wake-up list (nobody else pops it).
    Each allowed open's governor in-flight record is dropped once both permits are in, as the
    executor's result would settle it; else the governor would carry a growing in-flight set.
    """
    decision, p32, p33, timeouts = [], [], [], 0
    for i, (symbol, qty) in enumerate(plans):
        plan_id = f"{tag}-{i:06d}"
        ready = keys.permit_ready(plan_id)
        t0 = now()
        r.xadd(PLAN, plan_fields(plan_id, symbol, qty))
        got: dict[str, int] = {}
        while len(got) < 2:
            popped = r.blpop([ready], timeout=5)
            if popped is None:
                break
            got.setdefault(popped[1], now())
        GovernorStore(r, Limits()).drop([plan_id])
        if len(got) < 2:
            timeouts += 1
            continue
        if i >= warmup:
            decision.append(max(got.values()) - t0)
            p32.append(got["p32"] - t0)
            p33.append(got["p33"] - t0)
    return {"plans": len(decision), "decision": summary(decision), "p32_permit": summary(p32),
            "p33_permit": summary(p33), "timeouts": timeouts}


# ---------------------------------------------------------------------------------------------
@dataclass
class Outcomes:
    executed: int = 0
    not_filled: int = 0  # executed, yet the order's status is not FILLED (a partial fill)
    refused: Counter = field(default_factory=Counter)

    def add(self, fields: dict[str, str]) -> None:
        if fields.get("executed") == "true":
            self.executed += 1
            self.not_filled += not filled(fields)
        else:
            self.refused[fields.get("reason", "?")] += 1

    def as_dict(self) -> dict:
        return {"executed": self.executed, "not_filled": self.not_filled, "refused": sum(self.refused.values()),
                "refused_by_reason": dict(self.refused)}


def filled(result: dict[str, str]) -> bool:
    """A result with the order FILLED: what the end-to-end figure is measured to."""
    return result.get("executed") == "true" and result.get("order_status") == "FILLED"


def last_result_id(r: redis.Redis) -> str:
    newest = r.xrevrange(RESULT, count=1)
    return newest[0][0] if newest else "0-0"


def sequential(r: redis.Redis, watcher: Watcher, tag: str, plans: list[tuple[str, str]], warmup: int = 20,
               max_s: float = float("inf"), pids: dict[str, int] | None = None, watched: bool = True,
               pause_s: float = 0.0) -> dict:
    """plans: (symbol, qty) per plan. Sends one, waits for its result, sends the next (after `pause_s`).

    Stops early (capped) once `max_s` seconds of measured plans have passed, so a slow build cannot
    blow the run's time budget. With `pids`, also the CPU each process spent per measured plan.
    Unwatched, Redis announces no permit (keyspace notifications off): the watcher process sleeps,
    no decision is measured, and the end-to-end figure is the fleet's alone.
    """
    if not watched:
        r.config_set("notify-keyspace-events", "")
        try:
            return sequential_plans(r, None, tag, plans, warmup, max_s, pids, pause_s)
        finally:
            r.config_set("notify-keyspace-events", KEYSPACE_EVENTS)
    return sequential_plans(r, watcher, tag, plans, warmup, max_s, pids, pause_s)


def sequential_plans(r: redis.Redis, watcher: Watcher | None, tag: str, plans: list[tuple[str, str]], warmup: int,
                     max_s: float, pids: dict[str, int] | None, pause_s: float = 0.0) -> dict:
    cursor = last_result_id(r)
    sent: dict[str, int] = {}
    e2e: list[int] = []
    outcomes, missing, foreign = Outcomes(), [], 0
    ticks: dict[str, int] = {}
    calls_before: dict[str, int] = {}
    started = measured_from = time.monotonic()
    capped = False
    for i, (symbol, qty) in enumerate(plans):
        if i == warmup:
            measured_from = time.monotonic()
            ticks = {name: _cpu_ticks(pid) for name, pid in (pids or {}).items()}
            calls_before = _command_calls(r)
        elif i > warmup and time.monotonic() - measured_from > max_s:
            capped = True
            break
        plan_id = f"{tag}-{i:06d}"
        fields = plan_fields(plan_id, symbol, qty)
        # The XADD and the blocking read of the results go in one round trip: the driver then wakes once
        # per plan, when the result is there, and takes no CPU from the fleet while it decides.
        pipe = r.pipeline(transaction=False)
        pipe.xadd(PLAN, fields).xread({RESULT: cursor}, count=16, block=int(RESULT_TIMEOUT_S * 1000))
        found = None
        pause(pause_s)
        deadline = time.monotonic() + RESULT_TIMEOUT_S
        t0 = now()
        response = pipe.execute()[1]
        while True:
            t1 = now()
            for _stream, entries in response or []:
                for entry_id, result in entries:
                    cursor = entry_id
                    if result.get("plan_id") == plan_id and found is None:
                        found = result
                    else:
                        foreign += 1
            if found is not None or time.monotonic() >= deadline:
                break
            response = r.xread({RESULT: cursor}, count=16, block=int(RESULT_TIMEOUT_S * 1000))
        if found is None:
            missing.append(plan_id)
            continue
        if i >= warmup:
            sent[plan_id] = t0
            if filled(found):  # end-to-end is to a FILLED result; the others are counted in the outcomes
                e2e.append(t1 - t0)
            outcomes.add(found)
    measured_s = time.monotonic() - measured_from
    calls = _calls_per_plan(calls_before, _command_calls(r), len(sent)) if calls_before else {}
    cpu = {name: round((_cpu_ticks(pid) - ticks[name]) / CLK_TCK * 1000 / max(len(sent), 1), 3)
           for name, pid in (pids or {}).items() if name in ticks}
    seen = watcher.collect() if watcher is not None else None
    decision, p32, p33, incomplete = [], [], [], 0
    for plan_id, t0 in sent.items() if seen is not None else ():
        t32, t33 = seen.get(plan_id, [None, None])
        if t32 is None or t33 is None:
            incomplete += 1
            continue
        decision.append(max(t32, t33) - t0)
        p32.append(t32 - t0)
        p33.append(t33 - t0)
    return {
        "plans": len(sent), "warmup": warmup, "capped_after_s": round(measured_s, 1) if capped else None,
        "elapsed_s": round(time.monotonic() - started, 2),
        "decision": summary(decision), "e2e": summary(e2e),
        "p32_permit": summary(p32), "p33_permit": summary(p33),
        "cpu_ms_per_plan": cpu, "redis_calls_per_plan": calls,
        "outcomes": outcomes.as_dict(), "missing_results": len(missing), "unexpected_results": foreign,
        "permits_missing": incomplete,
        "_samples": {"decision": decision, "e2e": e2e, "p32_permit": p32, "p33_permit": p33},
    }


def _command_calls(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(stats["calls"]) for name, stats in r.info("commandstats").items()}


def _calls_per_plan(before: dict[str, int], after: dict[str, int], plans: int) -> dict[str, float]:
    """Redis commands per plan, everything the server ran (daemons, driver XADD/XREAD, the watcher)."""
    if not plans:
        return {}
    per = {name: round((count - before.get(name, 0)) / plans, 2) for name, count in after.items()}
    per = {name: v for name, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return {"total": round(sum(per.values()), 1), **per}


def merge(rounds: list[dict]) -> dict:
    """One phase measured in several rounds (interleaved with other phases): pooled percentiles."""
    samples = {key: [v for one in rounds for v in one["_samples"][key]] for key in rounds[0]["_samples"]}
    executed = sum(one["outcomes"]["executed"] for one in rounds)
    refused: Counter = Counter()
    for one in rounds:
        refused.update(one["outcomes"]["refused_by_reason"])
    cpu_names = rounds[0]["cpu_ms_per_plan"].keys()
    plans = sum(one["plans"] for one in rounds)
    return {
        "plans": plans, "rounds": len(rounds), "warmup": rounds[0]["warmup"],
        "capped_after_s": max((one["capped_after_s"] or 0 for one in rounds), default=0) or None,
        "elapsed_s": round(sum(one["elapsed_s"] for one in rounds), 2),
        **{key: summary(values) for key, values in samples.items()},
        "cpu_ms_per_plan": {name: round(sum(one["cpu_ms_per_plan"][name] * one["plans"] for one in rounds)
                                        / max(plans, 1), 3) for name in cpu_names},
        "redis_calls_per_plan": rounds[-1]["redis_calls_per_plan"],
        "outcomes": {"executed": executed, "not_filled": sum(one["outcomes"].get("not_filled", 0) for one in rounds),
                     "refused": sum(refused.values()), "refused_by_reason": dict(refused)},
        "missing_results": sum(one["missing_results"] for one in rounds),
        "unexpected_results": sum(one["unexpected_results"] for one in rounds),
        "permits_missing": sum(one["permits_missing"] for one in rounds),
        "per_round_decision_p50_ms": [one["decision"].get("p50_ms") for one in rounds],
        "_samples": samples,
    }


def burst(r: redis.Redis, watcher: Watcher, tag: str, plans: list[tuple[str, str]], timeout_s: float,
          overtime_s: float = 0.0, pids: dict[str, int] | None = None, sim_url: str | None = None) -> dict:
    """XADD every plan at once, then read apply.result until each plan has a result.

    Past `timeout_s` the burst has failed; it is still followed for `overtime_s` more seconds to
    see when (and whether) it drains, so the report can say how far off it is. With `sim_url`, the
    simulator's orders are counted too: a result is written once per plan whatever happens (its
    marker), so only the exchange shows an order sent twice.
    """
    cursor = last_result_id(r)
    ids = [f"{tag}-{i:06d}" for i in range(len(plans))]
    wanted = set(ids)
    results: dict[str, list[dict]] = {}
    arrivals: list[int] = []
    foreign = 0
    ticks = {name: _cpu_ticks(pid) for name, pid in (pids or {}).items()}
    t0 = now()
    pipe = r.pipeline(transaction=False)
    for plan_id, (symbol, qty) in zip(ids, plans):
        pipe.xadd(PLAN, plan_fields(plan_id, symbol, qty))
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    injected = now()
    last = injected
    deadline = time.monotonic() + timeout_s

    def read(block_ms: int) -> int:
        nonlocal cursor, foreign, last
        response = r.xread({RESULT: cursor}, count=2000, block=block_ms)
        got = 0
        for _stream, entries in response or []:
            for entry_id, result in entries:
                cursor = entry_id
                plan_id = result.get("plan_id")
                if plan_id in wanted:
                    if plan_id not in results:
                        last = now()
                        arrivals.append(last)
                    results.setdefault(plan_id, []).append(result)
                    got += 1
                else:
                    foreign += 1
        return got

    while len(results) < len(ids) and time.monotonic() < deadline:
        read(1000)
    drained = len(results) == len(ids)
    at_timeout = len(results)
    overtime_until = time.monotonic() + overtime_s
    while len(results) < len(ids) and time.monotonic() < overtime_until:
        read(1000)
    eventually = len(results) == len(ids)
    # Each process's CPU from the first XADD until the last result (or the end of the overtime).
    cpu = {name: round((_cpu_ticks(pid) - ticks[name]) / CLK_TCK * 1000 / len(ids), 3) for name, pid in (pids or {}).items()}
    # A grace period: a late duplicate result would show up here.
    grace_until = time.monotonic() + 1.0
    while time.monotonic() < grace_until:
        read(200)
    seen = watcher.collect()
    permit_times = [t for plan_id in ids for t in seen.get(plan_id, [None, None]) if t is not None]
    both = sum(1 for plan_id in ids if None not in seen.get(plan_id, [None, None]))
    outcomes = Outcomes()
    for plan_id in ids:
        if plan_id in results:
            outcomes.add(results[plan_id][0])
    duplicates = sum(len(v) - 1 for v in results.values())
    drain_s = (last - t0) / 1e9
    half = len(arrivals) // 2
    rates = [round(half / ((b - a) / 1e9), 1) if b > a else None
             for a, b in ((t0, arrivals[half - 1]), (arrivals[half - 1], arrivals[-1]))] if half > 1 else [None, None]
    orders = exchange_orders(sim_url, ids, outcomes.executed) if sim_url else {}
    return {
        **orders,
        "plans": len(ids),
        "symbols": len({symbol for symbol, _ in plans}),
        "inject_s": round((injected - t0) / 1e9, 3),
        "drain_s": round(drain_s, 3) if drained else None,
        "plans_per_s": round(len(ids) / drain_s, 1) if drained and drain_s > 0 else None,
        "decisions_done_s": round((max(permit_times) - t0) / 1e9, 3) if permit_times else None,
        "plans_with_both_permits": both,
        "results_per_s_first_half": rates[0], "results_per_s_second_half": rates[1],
        "results": len(results), "results_at_timeout": at_timeout,
        "lost": len(ids) - len(results) if eventually else None,
        "without_result": len(ids) - len(results), "duplicates": duplicates,
        "unexpected_results": foreign, "outcomes": outcomes.as_dict(),
        "timed_out": not drained, "timeout_s": timeout_s,
        "eventually_drained_s": round((last - t0) / 1e9, 3) if eventually else None,
        "cpu_ms_per_plan": cpu,
    }


def exchange_orders(sim_url: str, plan_ids: list[str], executed: int) -> dict:
    """The simulator's orders for these plans (by the client order id each plan's order carries): how many,
    how many plans have more than one, and how many orders more than executed results there are."""
    with urllib.request.urlopen(f"{sim_url}/_sim/orders", timeout=60) as response:
        return count_orders(json.loads(response.read()), plan_ids, executed)


def count_orders(listed: list[dict], plan_ids: list[str], executed: int) -> dict:
    plan_of = {client_order_id_for(plan_id): plan_id for plan_id in plan_ids}
    per_plan = Counter(plan_of[o["clientOrderId"]] for o in listed if o.get("clientOrderId") in plan_of)
    total = sum(per_plan.values())
    return {"exchange_orders": total, "plans_with_several_orders": sum(1 for n in per_plan.values() if n > 1),
            "orders_beyond_executed": total - executed}


# ---------------------------------------------------------------------------------------------
FILL_SCRIPT = """
for i = 1, tonumber(ARGV[1]) do
  redis.call('XADD', KEYS[1], '*', 'plan_id', ARGV[2] .. i, 'decision', 'EXECUTE', 'symbol', 'BTCUSDT',
             'side', 'BUY', 'type', 'MARKET', 'qty', '0.002', 'reduceOnly', 'false', 'source', 'bench_history')
end
return 1
"""


def fill_history(r: redis.Redis, entries: int, groups: list[str]) -> dict:
    """Append `entries` old plans to apply.plan and mark them read by every group (history, not backlog).

    The daemons must be stopped. The entries are written server-side (Lua, 10,000 per call), every
    group is then moved to the end with XGROUP SETID $, and an AOF rewrite is run to completion so
    its fork does not land in the measurement.
    """
    t0 = time.monotonic()
    chunk = 10_000
    for start in range(0, entries, chunk):
        r.eval(FILL_SCRIPT, 1, PLAN, min(chunk, entries - start), f"history-{start}-")
    for group in groups:
        r.xgroup_setid(PLAN, group, "$")
    filled = time.monotonic() - t0
    _wait_for_aof_rewrite(r)  # an automatic one may have started during the fill
    try:
        r.bgrewriteaof()
    except redis.ResponseError as exc:  # "already in progress": that one will do
        if "progress" not in str(exc):
            raise
    _wait_for_aof_rewrite(r)
    return {"entries": entries, "stream_length": r.xlen(PLAN), "fill_s": round(filled, 1),
            "with_aof_rewrite_s": round(time.monotonic() - t0, 1),
            "redis_used_memory_mb": round(r.info("memory")["used_memory"] / 2**20, 1)}


def _wait_for_aof_rewrite(r: redis.Redis) -> None:
    while True:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.1)  # waiting on a background job of the server, outside any measurement


# ---------------------------------------------------------------------------------------------
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15 of stat)


def _status_kb(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(pids: dict[str, int]) -> dict[str, dict]:
    return {name: {"rss_mb": round(_status_kb(pid, "VmRSS") / 1024, 1),
                   "hwm_mb": round(_status_kb(pid, "VmHWM") / 1024, 1)} for name, pid in pids.items()}


def idle_cost(pids: dict[str, int], window_s: float) -> dict[str, dict]:
    """VmRSS / VmHWM now, and CPU % (utime+stime) over an idle window of `window_s` seconds."""
    before = {name: _cpu_ticks(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(window_s)  # the idle window itself: nothing is sent while it runs
    elapsed = time.monotonic() - t0
    cost = rss_mb(pids)
    for name, pid in pids.items():
        cost[name]["cpu_pct"] = round(100 * (_cpu_ticks(pid) - before[name]) / CLK_TCK / elapsed, 2)
    return cost
