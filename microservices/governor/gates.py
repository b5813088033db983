"""The governor's gates: pure functions of (plan, state, limits, now_ms) returning a Denial or None.

Trading state is checked first for every plan; closes then pass (they reduce risk), and
opens go through OPEN_GATES in order. The first denial decides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from microservices.governor.settings import Limits
from microservices.governor.state import GovernorState
from shared.trading_state import TradingState
from shared.schema import Plan, Reason
from shared.schema.fields import format_decimal

ZERO = Decimal(0)
HOUR_MS = 3_600_000
FIVE_MIN_MS = 300_000


@dataclass(frozen=True)
class Denial:
    reason: Reason
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    allow: bool
    reason: Reason
    context: dict[str, Any] = field(default_factory=dict)
    notional: Decimal = ZERO
    mark: Decimal | None = None

    @classmethod
    def deny(cls, denial: Denial) -> "Verdict":
        return cls(False, denial.reason, denial.context)


Gate = Callable[[Plan, GovernorState, Limits, int], Denial | None]


def trading_state(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    trading = state.switches.trading
    if trading is TradingState.HALTED:
        return Denial(Reason.KILL_SWITCH, {"trading_state": trading.value})
    if trading is TradingState.REDUCING and not plan.is_close:
        return Denial(Reason.EXECUTION_DISABLED, {"trading_state": trading.value, "auto_disarmed": state.auto_disarmed})
    return None


def symbol_cooldown(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    if limits.symbol_cooldown_ms <= 0:
        return None
    if plan.symbol in state.pending(plan.plan_id, now_ms, limits.inflight_expiry_ms).symbols:
        # An open allowed and not settled yet starts the cooldown when it fills: two must not both pass.
        return Denial(Reason.SYMBOL_COOLDOWN, {"open_in_flight": plan.symbol, "cooldown_s": limits.symbol_cooldown_ms / 1000})
    if state.last_exec_ms is None:
        return None
    elapsed_ms = max(now_ms - state.last_exec_ms, 0)  # a clock a hair behind the executor's is not a cooldown
    remaining_ms = limits.symbol_cooldown_ms - elapsed_ms
    if remaining_ms <= 0:
        return None
    context = {"remaining_s": round(remaining_ms / 1000, 1), "cooldown_s": limits.symbol_cooldown_ms / 1000}
    return Denial(Reason.SYMBOL_COOLDOWN, context)


def snapshot_fresh(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    if state.snapshot is None:
        return Denial(Reason.STALE_SNAPSHOT, {"snapshot": "missing"})
    age_s = state.snapshot.age_s(now_ms)
    if age_s > limits.snapshot_max_age_s:
        return Denial(Reason.STALE_SNAPSHOT, {"age_s": round(age_s, 3), "max_age_s": limits.snapshot_max_age_s})
    return None


def open_positions_after(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> tuple[int, int]:
    """(positions now, positions if this open fills): snapshot plus in-flight opens on new symbols."""
    held = set(state.snapshot.positions) if state.snapshot else set()
    pending = state.pending(plan.plan_id, now_ms, limits.inflight_expiry_ms).symbols
    now_count = len(held | pending)
    return now_count, len(held | pending | {plan.symbol})


def max_open_positions(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    current, after = open_positions_after(plan, state, limits, now_ms)
    if after <= limits.max_open_positions or after == current:
        return None
    return Denial(Reason.MAX_OPEN_POSITIONS, {"open_positions": current, "max_open_positions": limits.max_open_positions})


def trade_notional(plan: Plan, state: GovernorState) -> tuple[Decimal, Decimal] | None:
    """(notional, mark) of this open at the snapshot's mark, or None without a mark."""
    mark = state.snapshot.mark(plan.symbol) if state.snapshot else None
    if not mark:
        return None
    return plan.qty * mark, mark


def max_notional_per_trade(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    priced = trade_notional(plan, state)
    if priced is None:
        return Denial(Reason.NO_MARK_PRICE, {"symbol": plan.symbol})
    notional, mark = priced
    if notional <= limits.max_notional_per_trade:
        return None
    context = {"computed_notional": format_decimal(notional), "mark": format_decimal(mark),
               "max_notional_per_trade": format_decimal(limits.max_notional_per_trade)}
    return Denial(Reason.MAX_NOTIONAL_PER_TRADE, context)


def total_notional_after(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> tuple[Decimal, Decimal]:
    """(exposure now, exposure with this open): snapshot total plus in-flight opens plus this trade."""
    held = state.snapshot.total_notional() if state.snapshot else ZERO
    pending = state.pending(plan.plan_id, now_ms, limits.inflight_expiry_ms).notional
    priced = trade_notional(plan, state)
    return held + pending, held + pending + (priced[0] if priced else ZERO)


def total_notional(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    if trade_notional(plan, state) is None:
        return Denial(Reason.NO_MARK_PRICE, {"symbol": plan.symbol})
    current, after = total_notional_after(plan, state, limits, now_ms)
    if after <= limits.max_total_notional:
        return None
    context = {"total_notional": format_decimal(current), "total_notional_after": format_decimal(after),
               "max_total_notional": format_decimal(limits.max_total_notional)}
    return Denial(Reason.TOTAL_NOTIONAL_EXCEEDED, context)


def rate_limit_hour(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    if state.opens_last_hour < limits.max_exec_per_hour:
        return None
    context = {"opens_in_window": state.opens_last_hour, "limit": limits.max_exec_per_hour, "window_s": HOUR_MS // 1000}
    return Denial(Reason.RATE_LIMIT_HOUR, context)


def rate_limit_5min(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Denial | None:
    if state.opens_last_5min < limits.max_exec_per_5min:
        return None
    context = {"opens_in_window": state.opens_last_5min, "limit": limits.max_exec_per_5min, "window_s": FIVE_MIN_MS // 1000}
    return Denial(Reason.RATE_LIMIT_5MIN, context)


OPEN_GATES: tuple[Gate, ...] = (
    symbol_cooldown,
    snapshot_fresh,
    max_open_positions,
    max_notional_per_trade,
    total_notional,
    rate_limit_hour,
    rate_limit_5min,
)
RATE_LIMIT_REASONS = frozenset({Reason.RATE_LIMIT_HOUR, Reason.RATE_LIMIT_5MIN})
# Denials that counting in-flight opens can cause, so an exact look at their results may lift them.
INFLIGHT_REASONS = frozenset({Reason.MAX_OPEN_POSITIONS, Reason.TOTAL_NOTIONAL_EXCEEDED, Reason.SYMBOL_COOLDOWN})


def evaluate(plan: Plan, state: GovernorState, limits: Limits, now_ms: int, gates: tuple[Gate, ...] = OPEN_GATES) -> Verdict:
    halted = trading_state(plan, state, limits, now_ms)
    if halted is not None:
        return Verdict.deny(halted)
    if plan.is_close:
        return Verdict(True, Reason.CLOSE_ALLOWED, {"action": plan.action.value, "bypassed": "fund_caps,cooldown,rate_limits"})
    for gate in gates:
        denial = gate(plan, state, limits, now_ms)
        if denial is not None:
            return Verdict.deny(denial)
    return allowed_open(plan, state, limits, now_ms)


def allowed_open(plan: Plan, state: GovernorState, limits: Limits, now_ms: int) -> Verdict:
    notional, mark = trade_notional(plan, state) or (ZERO, None)
    _, positions = open_positions_after(plan, state, limits, now_ms)
    _, exposure = total_notional_after(plan, state, limits, now_ms)
    context = {
        "computed_notional": format_decimal(notional),
        "mark": format_decimal(mark) if mark is not None else None,
        "max_notional_per_trade": format_decimal(limits.max_notional_per_trade),
        "open_positions_after": positions,
        "total_notional_after": format_decimal(exposure),
        "max_total_notional": format_decimal(limits.max_total_notional),
    }
    return Verdict(True, Reason.OPEN_ALLOWED, context, notional, mark)
