"""The governor's Prometheus metrics: decisions by outcome, the trading switches it sees, and the exposure
its open decisions see beside the caps."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from microservices.governor.settings import Limits
from shared.snapshot import ExchangeSnapshot
from shared.trading_state import Switches

DECISIONS = Counter(
    "quantum_governor_decisions_total", "P3.2 permit decisions by outcome and reason code", ["allow", "reason"]
)
SKIPPED = Counter(
    "quantum_governor_plans_skipped_total", "Plans acked without a permit (not EXECUTE, or already ended)", ["why"]
)
KILL_SWITCH = Gauge("quantum_governor_kill_switch", "1 when quantum:kill halts all execution (unreadable counts as on)")
EXECUTION_ENABLED = Gauge(
    "quantum_governor_execution_enabled", "1 when opens may pass; 0 when quantum:governor:execution is DISABLED (reduce-only)"
)
AUTO_DISARMED = Gauge("quantum_governor_auto_disarmed", "1 while the governor's own auto-disarm holds execution DISABLED")
AUTO_DISARMS = Counter("quantum_governor_auto_disarms_total", "Times repeated rate-limit denials disarmed execution")
INFLIGHT_OPENS = Gauge("quantum_governor_inflight_opens", "Allowed opens still counted against the caps")
OPEN_POSITIONS = Gauge("quantum_governor_open_positions", "Open positions in the exchange snapshot (refreshed ~1/s)")
OPEN_NOTIONAL = Gauge(
    "quantum_governor_open_notional_usdt", "Notional of the open positions in the exchange snapshot (refreshed ~1/s)"
)
MAX_OPEN_POSITIONS = Gauge("quantum_governor_max_open_positions", "The cap on open positions (GOV_MAX_OPEN_POSITIONS)")
MAX_TOTAL_NOTIONAL = Gauge(
    "quantum_governor_max_total_notional_usdt", "The cap on total open notional (GOV_MAX_TOTAL_NOTIONAL_USDT)"
)


def record_decision(allow: bool, reason: str) -> None:
    DECISIONS.labels(allow=str(allow).lower(), reason=reason).inc()


def set_switches(switches: Switches, auto_disarmed: bool) -> None:
    KILL_SWITCH.set(1 if switches.kill else 0)
    EXECUTION_ENABLED.set(1 if switches.execution_enabled else 0)
    AUTO_DISARMED.set(1 if auto_disarmed else 0)


def record_exposure(snapshot: ExchangeSnapshot | None, limits: Limits) -> None:
    """The exchange's positions as the fleet's snapshot holds them, and the caps (with the other gauges, about
    once a second, off the decision path). Floats only here, at the metric: the gates compare Decimals."""
    if snapshot is None:
        return
    OPEN_POSITIONS.set(snapshot.open_position_count)
    OPEN_NOTIONAL.set(float(snapshot.total_notional()))
    MAX_OPEN_POSITIONS.set(limits.max_open_positions)
    MAX_TOTAL_NOTIONAL.set(float(limits.max_total_notional))
