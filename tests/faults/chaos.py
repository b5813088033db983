"""The chaos run: plans injected while daemons are SIGKILLed, the exchange fails and Redis restarts.

`make chaos` runs it at full size and prints the figures; tests/faults runs it bounded and
asserts the same figures. Prices are frozen so a sampled notional is exactly what the
governor priced, and every check reads the exchange itself (the simulator's order list and
positions), never the fleet's own account of what it did.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal
from pathlib import Path

import httpx

from shared import keys, ledger
from shared.exchange.filters import parse_exchange_info, round_to_step
from shared.orders import client_order_id_for
from shared.redis_server import EmbeddedRedis
from tests.e2e.fleet import Fleet

DAEMONS = ("position-state-brain", "governor", "intent-executor", "reconcile")
TARGET_NOTIONAL = Decimal("150")


@dataclass
class Scenario:
    plans: int = 1000
    rate_per_s: float = 60.0
    kill_every_s: float | None = 3.0
    faults: dict = field(default_factory=dict)
    redis_restart: bool = False
    max_open_positions: int = 8
    max_total_notional: Decimal = Decimal("1500")
    seed: int = 7
    settle_timeout_s: float = 180.0


@dataclass
class Figures:
    plans_injected: int = 0
    plans_with_one_result: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    executed: int = 0
    max_orders_per_plan: int = 0
    orders_without_plan: int = 0
    max_open_positions_seen: int = 0
    max_total_notional_seen: Decimal = Decimal(0)
    ledger_mismatches: dict[str, tuple[str, str]] = field(default_factory=dict)
    kills: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    redis_restarts: int = 0
    seconds: float = 0.0

    def failures(self, scenario: Scenario) -> list[str]:
        checks = {
            "plans lost or duplicated": self.plans_with_one_result == self.plans_injected,
            "more than one order for a plan": self.max_orders_per_plan <= 1,
            "open positions above the cap": self.max_open_positions_seen <= scenario.max_open_positions,
            "total notional above the cap": self.max_total_notional_seen <= scenario.max_total_notional,
            "ledger differs from the exchange": not self.ledger_mismatches,
            "a daemon crashed": not self.unexpected_exits,
        }
        return [name for name, passed in checks.items() if not passed]

    def table(self, scenario: Scenario) -> str:
        rows = [
            ("plans injected", self.plans_injected),
            ("plans with exactly one result", self.plans_with_one_result),
            ("lost / duplicated results", f"{len(self.lost)} / {len(self.duplicated)}"),
            ("executed", self.executed),
            ("max orders per plan (exchange)", self.max_orders_per_plan),
            ("orders with no plan", self.orders_without_plan),
            ("max open positions seen / cap", f"{self.max_open_positions_seen} / {scenario.max_open_positions}"),
            ("max total notional seen / cap", f"{self.max_total_notional_seen} / {scenario.max_total_notional}"),
            ("ledger = exchange at the end", "yes" if not self.ledger_mismatches else f"NO {self.ledger_mismatches}"),
            ("daemons SIGKILLed / unexpected exits", f"{self.kills} / {len(self.unexpected_exits)}"),
            ("redis restarts", self.redis_restarts),
            ("seconds", f"{self.seconds:.1f}"),
        ]
        return "\n".join(f"  {name:<38} {value}" for name, value in rows)


class Chaos:
    def __init__(self, scenario: Scenario, redis_server: EmbeddedRedis, sim, log_dir: Path, **env: str):
        self.scenario = scenario
        self.redis_server = redis_server
        self.sim = sim
        self.rng = random.Random(scenario.seed)
        self.figures = Figures()
        self.done = threading.Event()
        self.prices: dict[str, Decimal] = {}
        self.rules = parse_exchange_info(httpx.get(f"{sim.base_url}/fapi/v1/exchangeInfo", timeout=10).json())
        self.fleet = Fleet(redis_server.url, _exchange_env(sim), log_dir, **_fleet_env(scenario), **env)
        self._killed: set[str] = set()

    def run(self) -> Figures:
        started = time.monotonic()
        self._freeze_prices()
        self.fleet.start(*DAEMONS)
        self.sim.set_faults(**self.scenario.faults)
        watchers = [threading.Thread(target=self._sample, daemon=True)]
        if self.scenario.kill_every_s:
            watchers.append(threading.Thread(target=self._kill_now_and_then, daemon=True))
        for watcher in watchers:
            watcher.start()
        try:
            plan_ids = self._inject()
            self._settle(plan_ids)
        finally:
            self.done.set()
            for watcher in watchers:
                watcher.join(timeout=30)
            self.sim.set_faults()
        self._count(plan_ids)
        self._converge()
        self.figures.seconds = time.monotonic() - started
        return self.figures

    def stop(self) -> dict[str, int]:
        return self.fleet.stop()

    def _freeze_prices(self) -> None:
        for symbol in self.rules:
            self.prices[symbol] = self.sim.mark_price(symbol)
            self.sim.set_price(symbol, self.prices[symbol])

    def _inject(self) -> list[str]:
        plan_ids = []
        restart_at = self.scenario.plans // 2 if self.scenario.redis_restart else -1
        for i in range(self.scenario.plans):
            if i == restart_at:
                self.redis_server.restart()
                self.figures.redis_restarts += 1
            plan_ids.append(f"chaos-{self.scenario.seed}-{i}")
            self._xadd(self._plan_fields(plan_ids[-1]))
            time.sleep(1 / self.scenario.rate_per_s)
        self.figures.plans_injected = len(plan_ids)
        return plan_ids

    def _xadd(self, fields: dict[str, str]) -> None:
        for _attempt in range(100):
            try:
                self.fleet.client.xadd(keys.Stream.APPLY_PLAN, fields)
                return
            except Exception:  # Redis is restarting: the producer retries, as any producer would
                time.sleep(0.1)
        raise RuntimeError("could not XADD for 10 s")

    def _plan_fields(self, plan_id: str) -> dict[str, str]:
        """Like a trader: opens anywhere, closes of a position that exists, on the side that reduces it."""
        held = {p["symbol"]: Decimal(p["positionAmt"]) for p in _sim_state(self.sim)["positions"]
                if Decimal(p["positionAmt"]) != 0}
        close = bool(held) and self.rng.random() < 0.45
        symbol = self.rng.choice(sorted(held if close else self.prices))
        if close:
            side = "SELL" if held[symbol] > 0 else "BUY"
        else:
            side = ("BUY" if held[symbol] > 0 else "SELL") if symbol in held else self.rng.choice(("BUY", "SELL"))
        return {"plan_id": plan_id, "decision": "EXECUTE", "symbol": symbol, "side": side, "type": "MARKET",
                "qty": str(self._qty(symbol)), "reduceOnly": "true" if close else "false", "source": "chaos"}

    def _qty(self, symbol: str) -> Decimal:
        step = self.rules[symbol].market_step_size
        return round_to_step(TARGET_NOTIONAL / self.prices[symbol], step, ROUND_UP)

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            positions = [p for p in _sim_state(self.sim)["positions"] if Decimal(p["positionAmt"]) != 0]
            notional = sum((abs(Decimal(p["positionAmt"])) * self.prices[p["symbol"]] for p in positions), Decimal(0))
            self.figures.max_open_positions_seen = max(self.figures.max_open_positions_seen, len(positions))
            self.figures.max_total_notional_seen = max(self.figures.max_total_notional_seen, notional)

    def _kill_now_and_then(self) -> None:
        while not self.done.wait(self.scenario.kill_every_s):
            self._note_unexpected_exits()
            name = self.rng.choice(DAEMONS)
            self.fleet.kill(name)
            self.figures.kills += 1
            self.fleet.start(name)

    def _note_unexpected_exits(self) -> None:
        for name, process in list(self.fleet.processes.items()):
            if process.poll() is not None:
                tail = self.fleet.log(name).strip().splitlines()[-3:]
                self.figures.unexpected_exits.append(f"{name} exited {process.returncode}: {' | '.join(tail)[-600:]}")
                self.fleet.processes.pop(name)
                self.fleet.start(name)

    def _settle(self, plan_ids: list[str]) -> None:
        deadline = time.monotonic() + self.scenario.settle_timeout_s
        while time.monotonic() < deadline:
            if set(plan_ids) <= {f["plan_id"] for f in self._results()}:
                return
            time.sleep(0.2)

    def _results(self) -> list[dict[str, str]]:
        return [fields for _, fields in self.fleet.client.xrange(keys.Stream.APPLY_RESULT)]

    def _count(self, plan_ids: list[str]) -> None:
        self._note_unexpected_exits()
        results = Counter(f["plan_id"] for f in self._results())
        self.figures.lost = [p for p in plan_ids if results[p] == 0]
        self.figures.duplicated = [p for p in plan_ids if results[p] > 1]
        self.figures.plans_with_one_result = sum(results[p] == 1 for p in plan_ids)
        self.figures.executed = sum(f["executed"] == "true" for f in self._results())
        orders = Counter(o["clientOrderId"] for o in self.sim.orders())
        by_plan = [orders[client_order_id_for(p)] for p in plan_ids]
        self.figures.max_orders_per_plan = max(by_plan, default=0)
        self.figures.orders_without_plan = sum(orders.values()) - sum(by_plan)

    def _converge(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.figures.ledger_mismatches = self._mismatches()
            if not self.figures.ledger_mismatches or time.monotonic() > deadline:
                return
            time.sleep(0.3)

    def _mismatches(self) -> dict[str, tuple[str, str]]:
        exchange = {p["symbol"]: Decimal(p["positionAmt"]) for p in _sim_state(self.sim)["positions"]}
        mismatched = {}
        for symbol in self.prices:
            booked = ledger.amount(ledger.read(self.fleet.client, symbol))
            if booked != exchange.get(symbol, Decimal(0)):
                mismatched[symbol] = (str(exchange.get(symbol, 0)), str(booked))
        return mismatched


def _sim_state(sim) -> dict:
    return httpx.get(f"{sim.base_url}/_sim/state", timeout=10).json()


def _exchange_env(sim) -> dict[str, str]:
    return {"EXCHANGE_TARGET": "simulator", "EXCHANGE_SIM_URL": sim.base_url, "EXCHANGE_SIM_API_KEY": sim.api_key,
            "EXCHANGE_SIM_API_SECRET": sim.api_secret}


def _fleet_env(scenario: Scenario) -> dict[str, str]:
    return {
        "GOV_MAX_OPEN_POSITIONS": str(scenario.max_open_positions),
        "GOV_MAX_TOTAL_NOTIONAL_USDT": str(scenario.max_total_notional),
        "GOV_MAX_NOTIONAL_PER_TRADE_USDT": "200", "GOV_MAX_EXEC_PER_HOUR": "100000", "GOV_MAX_EXEC_PER_5MIN": "100000",
        "GOV_AUTO_DISARM": "false", "P33_OPEN_ON_POSITION": "scale_in", "STREAM_CLAIM_IDLE_MS": "2000",
        "RECONCILE_INTERVAL_SEC": "0.5", "RECONCILE_GRACE_SEC": "2", "EXECUTOR_PERMIT_WAIT_MS": "2000",
        # Redelivered every 2 s, 5 deliveries: an unclear send must be resolvable within 8 s of the delivery (the
        # executor refuses to start otherwise): a 2 s permit wait + 2 x 1 + 1 + 1 + 1 = 7 s. The simulator answers in
        # ~20 ms.
        "EXCHANGE_REQUEST_TIMEOUT_S": "1", "EXCHANGE_RECV_WINDOW_MS": "1000",
        "LOG_LEVEL": "INFO",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chaos run: crashes, exchange faults and a Redis restart")
    parser.add_argument("--plans", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=60.0)
    args = parser.parse_args(argv)
    from microservices.exchange_sim.testing import running_simulator

    failed = False
    for title, scenario in full_scenarios(args.plans, args.rate):
        with EmbeddedRedis() as server, running_simulator() as sim, tempfile.TemporaryDirectory() as logs:
            chaos = Chaos(scenario, server, sim, Path(logs))
            figures = chaos.run()
            chaos.stop()
        failures = figures.failures(scenario)
        failed |= bool(failures)
        print(f"\n{title}\n{figures.table(scenario)}\n  verdict: {'FAIL ' + ', '.join(failures) if failures else 'pass'}",
              flush=True)
    return 1 if failed else 0


def full_scenarios(plans: int, rate: float) -> list[tuple[str, Scenario]]:
    faults = {"unknown_after_execute": 0.2, "unavailable_no_execute": 0.1, "drop_connection": 0.05,
              "rate_limited": 0.05, "latency_ms": 20}
    return [
        ("crash: a random daemon SIGKILLed and restarted every 3 s", Scenario(plans=plans, rate_per_s=rate)),
        ("exchange faults: 20% 503 after executing, 10% 503 without, drops, 429, +20 ms",
         Scenario(plans=plans, rate_per_s=rate, kill_every_s=None, faults=faults)),
        ("redis restart (AOF) half way through", Scenario(plans=plans, rate_per_s=rate, kill_every_s=None,
                                                           redis_restart=True)),
    ]


if __name__ == "__main__":
    sys.exit(main())
