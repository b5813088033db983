"""`quantum up`: the dev stack on one machine.

Starts an embedded redis-server (or uses REDIS_URL / --redis-url), the exchange simulator
when the target is the simulator, then every registered daemon as its own process with the
environment passed through. It prints where everything listens and each plan result as it
lands. Nothing is restarted silently: a daemon that exits stops the stack with its log path.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from shared import fleet, keys
from shared.exchange.sim_defaults import SIM_DEFAULT_HOST, SIM_DEFAULT_PORT
from shared.exchange.target import REAL_CREDENTIAL_VARIABLES
from shared.logging import redact_text
from shared.redis_conn import RedisUnavailable, connect_checked
from shared.redis_server import EmbeddedRedis, port_is_free

DEFAULT_REDIS_PORT = 6379
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 20.0
DEMO_WALK_BPS_PER_TICK = "10"  # the mark walk quantum up gives the simulator unless told otherwise (see _child_env)


@dataclass
class Child:
    spec: fleet.DaemonSpec
    process: subprocess.Popen[bytes]
    log_path: Path


def register(commands: Any) -> None:
    parser = commands.add_parser("up", help="run the whole fleet locally (embedded Redis, exchange simulator)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL"), help="use this Redis instead of an embedded one")
    parser.add_argument("--no-demo", action="store_true", help="do not start the demo signal source")
    parser.add_argument("--log-dir", default="var/log", help="where each daemon's JSON log goes (default var/log)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    stack = Stack(Path(args.log_dir))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        stack.start(args.redis_url, with_demo=not args.no_demo)
        return stack.follow()
    except KeyboardInterrupt:
        print("\nstopping the fleet ...", flush=True)
        return 0
    except StackError as exc:
        print(f"quantum up: {exc}", file=sys.stderr)
        return 1
    finally:
        _hold_signals()
        stack.stop()


def _raise_interrupt(_signum: int, _frame: object) -> None:
    _hold_signals()  # first: a second signal from here on is ignored, even one already on its way
    raise KeyboardInterrupt


def _hold_signals() -> None:
    """Once the fleet is stopping, a second Ctrl-C or SIGTERM must not cut the stopping short: that left
    a traceback and daemons running. stop() ends each daemon within STOP_TIMEOUT_S, killing it if need be."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.children: list[Child] = []
        self.redis_server: EmbeddedRedis | None = None
        self.redis_url = ""
        self.env: dict[str, str] = {}

    def start(self, redis_url: str | None, with_demo: bool) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url or self._start_embedded_redis()
        self.client = self._connect()
        if redis_url:
            self._refuse_a_running_fleet()
        self.env = self._child_env()
        on_simulator = self.env["EXCHANGE_TARGET"] == "simulator"
        if on_simulator:
            self._start_child(fleet.SIMULATOR)
            self._wait_for_simulator()
        elif with_demo:
            print(f"demo signals not started: EXCHANGE_TARGET={self.env['EXCHANGE_TARGET']} (the demo trades on the "
                  "simulator only)")
        for spec in fleet.FLEET:
            if not spec.demo or (with_demo and on_simulator):
                self._start_child(spec)
        self._print_table()

    def _start_embedded_redis(self) -> str:
        # The default port when free, so `quantum plan/status` in another terminal need no flags.
        port = DEFAULT_REDIS_PORT if port_is_free(DEFAULT_REDIS_PORT) else 0
        self.redis_server = EmbeddedRedis(port=port).start()  # its own temporary data dir, removed when it stops
        if not port:
            print(f"port {DEFAULT_REDIS_PORT} is taken: for the quantum CLI, export REDIS_URL={self.redis_server.url}")
        return self.redis_server.url

    def _connect(self) -> redis.Redis:
        try:
            return connect_checked(self.redis_url)
        except RedisUnavailable as exc:
            raise StackError(str(exc)) from None

    def _refuse_a_running_fleet(self) -> None:
        """`up` starts a whole fleet (the simulator and demo signals by default) under the consumer names a host's
        own daemons use: on a Redis another fleet serves it would take that fleet's plans. Refused while any
        daemon there has a live heartbeat."""
        live = sorted(self.client.scan_iter(match=keys.heartbeat_pattern(), count=1000))
        if live:
            names = ", ".join(key.rsplit(":", 1)[-1] for key in live[:4]) + (" ..." if len(live) > 4 else "")
            raise StackError(f"Redis at {redact_text(self.redis_url)} already serves a running fleet ({names}): "
                             "quantum up runs its own fleet; without --redis-url and REDIS_URL it starts its own Redis")

    def _child_env(self) -> dict[str, str]:
        """The daemons' environment: the operator's, with the dev stack's defaults where it says nothing."""
        env = dict(os.environ)
        env.setdefault("EXCHANGE_TARGET", "simulator")
        if env["EXCHANGE_TARGET"].strip().lower() == "mainnet":
            # Found in review: with the fleet's settings in the shell, `up` ran a second fleet (its own Redis, so no
            # heartbeat of the first could refuse it) and the demo's random opens on the real account.
            raise StackError("quantum up is the dev stack and does not run on mainnet: a mainnet fleet runs under "
                             "systemd (deploy/install.sh)")
        env.setdefault("EXCHANGE_SIM_HOST", SIM_DEFAULT_HOST)
        env.setdefault("EXCHANGE_SIM_PORT", str(SIM_DEFAULT_PORT))
        env.setdefault("EXCHANGE_SIM_URL", f"http://{env['EXCHANGE_SIM_HOST']}:{env['EXCHANGE_SIM_PORT']}")
        if env["EXCHANGE_TARGET"] == "simulator":
            env.setdefault("APPLY_MODE", "testnet")  # the dev stack trades on the simulator; common.env says dry_run
            # Marks that move enough for the demo's 1 % stops and 2 % targets to be met in minutes, not hours (the
            # simulator's own 1.5 bps a second takes hours to move 1 %), so harvest is seen closing positions.
            env.setdefault("EXCHANGE_SIM_WALK_BPS_PER_TICK", DEMO_WALK_BPS_PER_TICK)
        if not env.get("APPLY_MODE"):  # said here once, rather than as the first daemon's exit
            raise StackError(f"APPLY_MODE is required with EXCHANGE_TARGET={env['EXCHANGE_TARGET']}:"
                             " set it to dry_run | testnet | live")
        env.update(REDIS_URL=self.redis_url, PYTHONUNBUFFERED="1")
        return env

    def env_for(self, spec: fleet.DaemonSpec) -> dict[str, str]:
        env = dict(self.env)
        if spec is not fleet.SIMULATOR:
            env["METRICS_PORT"] = str(spec.metrics_port)
        if not spec.exchange:  # as the units do (UnsetEnvironment=): no real credentials where they are not used
            for name in REAL_CREDENTIAL_VARIABLES:
                env.pop(name, None)
        return env

    def _start_child(self, spec: fleet.DaemonSpec) -> None:
        env = self.env_for(spec)
        log_path = self.log_dir / f"{spec.name}.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", spec.module], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        spec.apply_nice(process.pid)
        self.children.append(Child(spec, process, log_path))

    def _wait_for_simulator(self) -> None:
        url = f"{self.env['EXCHANGE_SIM_URL']}/fapi/v1/ping"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_children()
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)  # the simulator process is still starting
        raise StackError(f"the exchange simulator did not answer at {url} (see {self.log_dir}/exchange-sim.log)")

    def _print_table(self) -> None:
        print(f"redis       {redact_text(self.redis_url)}" + ("  (embedded, AOF on)" if self.redis_server else ""))
        for child in self.children:
            where = self.env["EXCHANGE_SIM_URL"] if child.spec is fleet.SIMULATOR else _metrics_url(child.spec)
            print(f"{child.spec.name:<22} pid {child.process.pid:<8} {where:<40} log {child.log_path}")
        print("following quantum:stream:apply.result (Ctrl-C stops everything)", flush=True)

    def follow(self) -> int:
        last_id = "$"
        while True:
            self._check_children()
            response = self.client.xread({keys.Stream.APPLY_RESULT: last_id}, block=1000, count=100)
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    print(format_result(fields), flush=True)

    def _check_children(self) -> None:
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise StackError(f"{child.spec.name} exited with code {code}; see {child.log_path}")

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.process.poll() is None:
                child.process.terminate()
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self.children.clear()
        if self.redis_server is not None:
            self.redis_server.close()
            self.redis_server = None


def _metrics_url(spec: fleet.DaemonSpec) -> str:
    return f"http://127.0.0.1:{spec.metrics_port}/metrics" if spec.metrics_port else "-"


def format_result(fields: dict[str, str]) -> str:
    raw_ms = fields.get("ts_ms", "")
    stamp = time.strftime("%H:%M:%S", time.localtime(int(raw_ms) / 1000)) if raw_ms.isdigit() else "??:??:??"
    what = f"{fields.get('symbol', '?')} {fields.get('side', '?')} {fields.get('qty', '?')}"
    if fields.get("executed") == "true":
        return (f"{stamp} FILLED   {what:<28} @ {fields.get('avg_price', '?')} order {fields.get('order_id')}"
                f" plan {fields.get('plan_id')}")
    return f"{stamp} REFUSED  {what:<28} {fields.get('reason')}: {fields.get('detail', '')} plan {fields.get('plan_id')}"
