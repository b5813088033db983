"""The daemons of the fleet: module, systemd unit and metrics port (DESIGN.md's table).

`quantum up` starts every daemon registered here, each as `python -m <module>`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DaemonSpec:
    name: str
    module: str
    metrics_port: int
    demo: bool = False

    @property
    def unit(self) -> str:
        return f"quantum-{self.name}.service"


SIMULATOR = DaemonSpec("exchange-sim", "microservices.exchange_sim", 8090)

# Every daemon `quantum up` starts, in start order (position-state-brain first: it publishes the snapshot).
FLEET: tuple[DaemonSpec, ...] = (
    DaemonSpec("position-state-brain", "microservices.position_state_brain", 8045),
    DaemonSpec("governor", "microservices.governor", 8044),
    DaemonSpec("intent-executor", "microservices.intent_executor", 8046),
    DaemonSpec("intent-bridge", "microservices.intent_bridge", 8041),
    DaemonSpec("apply-layer", "microservices.apply_layer", 8043),
    DaemonSpec("reconcile", "microservices.reconcile", 8049),
    DaemonSpec("demo-signals", "microservices.demo_signals", 0, demo=True),
)


def by_name(name: str) -> DaemonSpec:
    for spec in (SIMULATOR, *FLEET):
        if spec.name == name:
            return spec
    raise KeyError(f"unknown daemon {name!r}; known: {', '.join(s.name for s in (SIMULATOR, *FLEET))}")
