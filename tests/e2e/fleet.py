"""The fleet as operators run it: each daemon its own process, driven only through Redis.

Tests start the daemons they need against the session's embedded Redis and simulator, then
act as an operator would: XADD plans, SET trading-state keys, read results and keys.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import redis

from shared import fleet, keys
from shared.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0

# Consumer groups whose registration shows a daemon is reading.
GROUPS = {
    "intent-bridge": (keys.Stream.TRADE_INTENT, keys.Group.INTENT_BRIDGE),
    "governor": (keys.Stream.APPLY_PLAN, keys.Group.GOVERNOR),
    "position-state-brain": (keys.Stream.APPLY_PLAN, keys.Group.POSITION_STATE_BRAIN),
    "intent-executor": (keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR),
    "portfolio-heat-gate": (keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE),
    "reconcile": (keys.Stream.APPLY_RESULT, keys.Group.RECONCILE),
}


class Fleet:
    def __init__(self, redis_url: str, exchange_env: dict[str, str], log_dir: Path, **overrides: str):
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen] = {}
        self.metrics_ports: dict[str, int] = {}
        self.env = {
            **os.environ, **exchange_env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url, "APPLY_MODE": "testnet",
            "METRICS_PORT": "0", "STREAM_BLOCK_MS": "200", "STREAM_CLAIM_IDLE_MS": "3000", "P33_POLL_SEC": "0.2",
            # Redelivered every 3 s: an unclear send must be resolvable within 4 x 3 s of the delivery (the executor
            # checks at start): a 3 s permit wait + 2 x 1 + 1 + 2 + 1 = 9 s. The simulator answers in milliseconds.
            "EXCHANGE_REQUEST_TIMEOUT_S": "1", "EXCHANGE_RECV_WINDOW_MS": "2000",
            "GOV_SYMBOL_COOLDOWN_SECONDS": "0", "P33_COOLDOWN_SEC": "0", "EXECUTOR_PERMIT_WAIT_MS": "3000",
            "PYTHONUNBUFFERED": "1", **overrides,
        }

    def start(self, *names: str, metrics: bool = False) -> "Fleet":
        """Start daemons; with metrics=True each serves /metrics on its own free port (self.metrics_ports)."""
        for name in names:
            spec = fleet.by_name(name)
            env = dict(self.env)
            if metrics:
                self.metrics_ports[name] = free_port()
                env["METRICS_PORT"] = str(self.metrics_ports[name])
            log = open(self.log_dir / f"{name}.log", "ab")
            self.processes[name] = subprocess.Popen([sys.executable, "-m", spec.module], env=env, stdout=log,
                                                    stderr=subprocess.STDOUT)
        self.wait_ready(names)
        return self

    def wait_ready(self, names: Iterable[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for name in names:
            while not self._ready(name):
                code = self.processes[name].poll()
                assert code is None, f"{name} exited with {code}:\n{self.log(name)[-3000:]}"
                assert time.monotonic() < deadline, f"{name} not ready:\n{self.log(name)[-3000:]}"
                time.sleep(0.05)

    def _ready(self, name: str) -> bool:
        """This process's heartbeat (its signal handlers are in place: SIGTERM stops it cleanly), and for a
        consumer its group registration. Consumer names outlive a restart, so the registration alone may
        be the killed predecessor's."""
        if name == "position-state-brain" and not self.client.exists(keys.EXCHANGE_POSITIONS):
            return False
        pid = str(self.processes[name].pid)
        if not any(self.client.hget(key, "pid") == pid for key in self.client.scan_iter(keys.heartbeat_pattern())):
            return False
        if name not in GROUPS:
            return True
        stream, group = GROUPS[name]
        try:
            consumers = self.client.xinfo_consumers(stream, group)
        except redis.ResponseError:
            return False
        return any(consumer["name"].startswith(f"{name}@") for consumer in consumers)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(timeout=20)

    def stop(self) -> dict[str, int]:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        codes = {name: process.wait(timeout=20) for name, process in self.processes.items()}
        self.processes.clear()
        return codes

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def plan(self, plan_id: str, symbol: str, side: str, qty: str, reduce_only: str = "false", **extra: str) -> str:
        fields = {"plan_id": plan_id, "decision": "EXECUTE", "symbol": symbol, "side": side, "type": "MARKET",
                  "qty": qty, "reduceOnly": reduce_only, "source": "test_manual", **extra}
        return self.client.xadd(keys.Stream.APPLY_PLAN, fields)

    def results(self, plan_id: str) -> list[dict[str, str]]:
        return [f for _, f in self.client.xrange(keys.Stream.APPLY_RESULT) if f.get("plan_id") == plan_id]

    def wait_result(self, plan_id: str, timeout: float = 15.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.results(plan_id)
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no result for {plan_id}:\n" + self._tails()
            time.sleep(0.02)

    def _tails(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-1500:]}" for name in self.processes)
