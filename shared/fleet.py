"""The daemons of the fleet: module, systemd unit and metrics port (DESIGN.md's table).

`quantum up` starts every daemon registered here, each as `python -m <module>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    module: str
    metrics_port: int
    description: str = ""
    exchange: bool = False  # talks to the exchange (needs its credential and, off the simulator, the internet)
    demo: bool = False  # dev-only: started by `quantum up`, never installed as a unit
    # Scheduling niceness (systemd Nice=, and what `quantum up` and the bench apply). Only raised, never
    # lowered: a daemon off the plan's critical path yields the CPU to the deciders on a small host.
    nice: int = 0
    # systemd TimeoutStopSec: SIGTERM ends the entry in hand first, which for the executor may be a permit wait, a
    # mark price, the order and, when its answer is lost, lookups until recvWindow is over.
    stop_timeout_s: int = 30

    @property
    def unit(self) -> str:
        return f"quantum-{self.name}.service"

    def apply_nice(self, pid: int) -> None:
        """Give a just-started process this daemon's niceness, as systemd's Nice= does for the unit.

        Never lower than what it inherited: a launcher that itself runs niced needs no privilege to apply it.
        """
        if self.nice > os.getpriority(os.PRIO_PROCESS, pid):
            os.setpriority(os.PRIO_PROCESS, pid, self.nice)


SIMULATOR = DaemonSpec("exchange-sim", "microservices.exchange_sim", 8090, "local Binance USD-M futures simulator")

# Every daemon `quantum up` starts, in start order (position-state-brain first: it publishes the snapshot).
FLEET: tuple[DaemonSpec, ...] = (
    DaemonSpec("position-state-brain", "microservices.position_state_brain", 8045, "position-state brain P3.3", exchange=True),
    DaemonSpec("governor", "microservices.governor", 8044, "governor P3.2"),
    # Nice 5: its pre-permit look-ahead (building the order while the deciders decide) competes with them for
    # two cores; the deciders are the critical path, and the order waits for both permits anyway.
    DaemonSpec("intent-executor", "microservices.intent_executor", 8046, "intent executor", exchange=True, nice=5,
               stop_timeout_s=90),
    DaemonSpec("intent-bridge", "microservices.intent_bridge", 8041, "intent bridge", exchange=True),
    DaemonSpec("apply-layer", "microservices.apply_layer", 8043, "apply layer", exchange=True),
    DaemonSpec("reconcile", "microservices.reconcile", 8049, "reconcile", exchange=True),
    DaemonSpec("portfolio-heat-gate", "microservices.portfolio_heat_gate", 8048, "portfolio heat gate P2.6", exchange=True),
    DaemonSpec("harvest-proposal", "microservices.harvest_proposal", 8047, "harvest proposal"),
    DaemonSpec("demo-signals", "microservices.demo_signals", 0, "demo signal source", demo=True),
)


def by_name(name: str) -> DaemonSpec:
    for spec in (SIMULATOR, *FLEET):
        if spec.name == name:
            return spec
    raise KeyError(f"unknown daemon {name!r}; known: {', '.join(s.name for s in (SIMULATOR, *FLEET))}")


def installed() -> tuple[DaemonSpec, ...]:
    """What deploy/systemd has a unit for: every fleet daemon except dev-only ones, plus the simulator."""
    return (*(spec for spec in FLEET if not spec.demo), SIMULATOR)
