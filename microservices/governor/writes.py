"""What an open decision writes, planned as a pure function so tests can read it without Redis."""

from __future__ import annotations

import json
from dataclasses import dataclass

from microservices.governor.gates import RATE_LIMIT_REASONS, Verdict
from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState, InFlight
from shared import keys
from shared.schema import P32Permit, Plan


@dataclass(frozen=True)
class Writes:
    permit: P32Permit
    now_ms: int
    inflight: InFlight | None = None  # an allowed open, counted until it settles
    drop_inflight: tuple[str, ...] = ()
    rate_trip: bool = False
    disarm: str | None = None  # the auto-disarm record (JSON) when this denial trips it
    clear_disarm: bool = False  # an operator re-enabled execution after an auto-disarm
    trips: int = 0  # rate-limit trips in the auto-disarm window, this one included


def plan_writes(plan: Plan, verdict: Verdict, permit: P32Permit, state: GovernorState, limits: Limits, now_ms: int) -> Writes:
    inflight = InFlight(plan.plan_id, plan.symbol, verdict.notional, now_ms) if verdict.allow else None
    trip = limits.auto_disarm and verdict.reason in RATE_LIMIT_REASONS
    trips = state.rate_trips + 1
    disarm = disarm_record(plan, verdict, limits, trips, now_ms) if trip and trips >= limits.auto_disarm_trips else None
    return Writes(
        permit=permit,
        now_ms=now_ms,
        inflight=inflight,
        drop_inflight=tuple(state.stale_inflight(now_ms, limits.inflight_expiry_ms)),
        rate_trip=trip,
        disarm=disarm,
        clear_disarm=state.auto_disarmed and state.switches.execution_enabled,
        trips=trips if trip else 0,
    )


def disarm_record(plan: Plan, verdict: Verdict, limits: Limits, trips: int, now_ms: int) -> str:
    """Why the governor put the fleet in reduce-only, for the operator who re-enables it."""
    record = {
        "at_ms": now_ms,
        "trips": trips,
        "threshold": limits.auto_disarm_trips,
        "window_s": limits.auto_disarm_window_ms // 1000,
        "last_reason": verdict.reason.value,
        "last_plan_id": plan.plan_id,
        "last_symbol": plan.symbol,
        "re_enable": f"redis-cli SET {keys.GOVERNOR_EXECUTION} ENABLED",
    }
    return json.dumps(record, separators=(",", ":"))
