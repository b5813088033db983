"""Reason codes: one enum for every permit decision and every result that ends a plan.

Reason names from the seeds are kept as operators grep for them.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # Allows.
    SANITY_CHECKS_PASSED = "sanity_checks_passed"
    CLOSE_ALLOWED = "close_allowed"
    OPEN_ALLOWED = "open_allowed"
    # Trading state.
    KILL_SWITCH = "kill_switch"
    EXECUTION_DISABLED = "execution_disabled"
    AUTO_DISARMED = "auto_disarmed"
    DECISION_NOT_EXECUTE = "decision_not_execute"
    # Governor P3.2 gates.
    SYMBOL_COOLDOWN = "symbol_cooldown"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_NOTIONAL_PER_TRADE = "max_notional_per_trade"
    TOTAL_NOTIONAL_EXCEEDED = "total_notional_exceeded"
    RATE_LIMIT_HOUR = "rate_limit_hour"
    RATE_LIMIT_5MIN = "rate_limit_5min"
    NO_MARK_PRICE = "no_mark_price"
    # Position-state brain P3.3 gates.
    SYMBOL_NOT_ALLOWED = "symbol_not_allowed"
    STALE_SNAPSHOT = "stale_snapshot"
    COOLDOWN = "cooldown"
    NO_POSITION = "no_position"
    SIDE_MISMATCH = "side_mismatch"
    POSITION_EXISTS = "position_exists"
    RECONCILE_REQUIRED_QTY_MISMATCH = "reconcile_required_qty_mismatch"
    # Executor outcomes.
    PERMIT_DENIED = "permit_denied"
    PERMIT_MISMATCH = "permit_mismatch"  # a permit decided for another plan under the same plan_id
    PERMIT_TIMEOUT = "permit_timeout"
    SEND_DEADLINE_PASSED = "send_deadline_passed"  # too long after taking the permits: nothing was sent
    LEVERAGE_NOT_SET = "leverage_not_set"  # the open's leverage could not be set on the exchange: nothing was sent
    BELOW_MIN_QTY = "below_min_qty"
    BELOW_MIN_NOTIONAL = "min_notional_check_failed"
    ABOVE_MAX_QTY = "above_max_qty"
    SYMBOL_NOT_TRADING = "symbol_not_trading"
    UNKNOWN_SYMBOL = "unknown_symbol"
    DRY_RUN = "dry_run"
    EXCHANGE_REJECTED = "exchange_rejected"
    EXCHANGE_UNAVAILABLE = "exchange_unavailable"
    ORDER_NOT_FOUND = "order_not_found"
    DUPLICATE_PLAN = "duplicate_plan"
    GAVE_UP = "gave_up_after_retries"
