"""The system under test: an embedded redis-server, the exchange simulator in its own process,
and the plan-path daemons (position-state-brain, governor, intent-executor), each its own process.

Nothing here is shared with the tests: the bench owns its launcher so it can restart one daemon
with other settings (allowlist size, log level) and read each daemon's pid for /proc figures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared import fleet, keys
from shared.exchange.sim_defaults import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from shared.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("position-state-brain", "governor", "intent-executor")
READY_TIMEOUT_S = 30.0
HUGE = str(10**12)

# Settings that let every BUY plan of the bench pass the caps; everything else is the daemons' default.
BENCH_ENV = {
    "APPLY_MODE": "testnet",
    "EXCHANGE_TARGET": "simulator",
    "METRICS_PORT": "0",
    "LOG_LEVEL": "WARNING",
    "GOV_SYMBOL_COOLDOWN_SECONDS": "0",
    "P33_COOLDOWN_SEC": "0",
    "GOV_MAX_EXEC_PER_HOUR": HUGE,
    "GOV_MAX_EXEC_PER_5MIN": HUGE,
    "GOV_MAX_OPEN_POSITIONS": "1000000",
    "GOV_MAX_NOTIONAL_PER_TRADE_USDT": HUGE,
    "GOV_MAX_TOTAL_NOTIONAL_USDT": HUGE,
    "GOV_AUTO_DISARM": "false",
    "P33_OPEN_ON_POSITION": "scale_in",
    "PYTHONUNBUFFERED": "1",
}
SIM_ENV = {
    "EXCHANGE_SIM_BALANCE_USDT": "1000000000000",
    "EXCHANGE_SIM_WEIGHT_LIMIT_PER_MINUTE": "1000000000",
    "EXCHANGE_SIM_ORDER_LIMIT_PER_MINUTE": "1000000000",
    "EXCHANGE_SIM_ORDER_LIMIT_PER_10S": "1000000000",
    "EXCHANGE_SIM_LOG_LEVEL": "WARNING",  # as the daemons: the bench measures the path, not log writing
}


@dataclass
class Daemon:
    name: str
    process: subprocess.Popen
    env: dict[str, str]

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Stack:
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="quantum-bench-")))
    redis_server: EmbeddedRedis | None = None
    sim: subprocess.Popen | None = None
    sim_url: str = ""
    daemons: dict[str, Daemon] = field(default_factory=dict)
    base_env: dict[str, str] = field(default_factory=dict)

    # -- redis and simulator -------------------------------------------------------------------
    def start_infra(self) -> None:
        (self.work_dir / "redis").mkdir(parents=True, exist_ok=True)
        self.redis_server = EmbeddedRedis(data_dir=str(self.work_dir / "redis")).start()
        port = free_port()
        self.sim_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_SIM_")}
        env.update(SIM_ENV, EXCHANGE_SIM_HOST="127.0.0.1", EXCHANGE_SIM_PORT=str(port), PYTHONPATH=str(ROOT))
        log = open(self.work_dir / "exchange-sim.log", "ab")
        self.sim = subprocess.Popen([sys.executable, "-m", "microservices.exchange_sim"], env=env,
                                    stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self._wait_for_sim()
        self.base_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("EXCHANGE_", "GOV_", "P33_", "STREAM_"))},
            **BENCH_ENV,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url,
            "EXCHANGE_SIM_URL": self.sim_url,
            "EXCHANGE_SIM_API_KEY": SIM_DEV_API_KEY,
            "EXCHANGE_SIM_API_SECRET": SIM_DEV_API_SECRET,
        }

    def _wait_for_sim(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.sim.poll() is not None:
                raise RuntimeError(f"simulator exited: {self._tail('exchange-sim')}")
            try:
                with urllib.request.urlopen(f"{self.sim_url}/fapi/v1/ping", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("simulator did not answer") from None
                time.sleep(0.05)  # process start-up; nothing to block on yet

    @property
    def redis_url(self) -> str:
        """Every bench process talks to Redis over its unix socket, as a fleet on Redis' host should."""
        return self.redis_server.unix_url or self.redis_server.url

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)

    # -- daemons -------------------------------------------------------------------------------
    def start(self, *names: str, **overrides: str) -> None:
        for name in names:
            env = {**self.base_env, **overrides}
            log = open(self.work_dir / f"{name}.log", "ab")
            spec = fleet.by_name(name)
            process = subprocess.Popen([sys.executable, "-m", spec.module], env=env, stdout=log,
                                       stderr=subprocess.STDOUT, cwd=ROOT)
            spec.apply_nice(process.pid)
            self.daemons[name] = Daemon(name, process, env)
        for name in names:
            self._wait_ready(self.daemons[name])

    def _wait_ready(self, daemon: Daemon) -> None:
        """Ready: its heartbeat carries the new pid (written just before the loop starts reading)."""
        client = self.client()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = daemon.process.poll()
            if code is not None:
                raise RuntimeError(f"{daemon.name} exited with {code}:\n{self._tail(daemon.name)}")
            pids = {client.hget(key, "pid") for key in client.scan_iter(keys.heartbeat_pattern())}
            if str(daemon.pid) in pids:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{daemon.name} not ready:\n{self._tail(daemon.name)}")
            time.sleep(0.05)  # start-up of another process; polled only here, never while measuring

    def stop(self, *names: str) -> None:
        names = names or tuple(self.daemons)
        for name in names:
            if name in self.daemons:
                self.daemons[name].process.send_signal(signal.SIGTERM)
        for name in names:
            daemon = self.daemons.pop(name, None)
            if daemon is None:
                continue
            try:
                daemon.process.wait(timeout=20)
            finally:  # not stopped in time, or interrupted while waiting: killed, never left running
                if daemon.process.poll() is None:
                    daemon.process.kill()
                    daemon.process.wait()

    def restart(self, *names: str, **overrides: str) -> None:
        self.stop(*names)
        self.start(*names, **overrides)

    def pids(self) -> dict[str, int]:
        found = {name: d.pid for name, d in self.daemons.items()}
        if self.sim is not None:
            found["exchange-sim"] = self.sim.pid
        if self.redis_server is not None and self.redis_server._process is not None:
            found["redis-server"] = self.redis_server._process.pid
        return found

    def _tail(self, name: str) -> str:
        path = self.work_dir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def log_problems(self) -> dict[str, int]:
        """Lines at ERROR or with a traceback in each daemon's log (should be none)."""
        counts = {}
        for name in DAEMONS:
            path = self.work_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else ""
            counts[name] = text.count('"level": "error"') + text.count("Traceback")
        return counts

    def close(self) -> None:
        """Everything stopped, each part even when stopping an earlier one failed (no process left behind)."""
        try:
            self.stop()
        finally:
            try:
                self._stop_sim()
            finally:
                if self.redis_server is not None:
                    self.redis_server.stop()

    def _stop_sim(self) -> None:
        if self.sim is not None:
            self.sim.terminate()
            try:
                self.sim.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sim.kill()
                self.sim.wait()
            self.sim = None
