"""The P3.3 gates: pure functions of (plan, snapshot, ledger, last execution, rules, policy, clock).

Each gate returns a denial Verdict or None; `decide` runs them in order and ends in the open or
close pathway, which always returns a Verdict. Nothing here touches Redis or the exchange.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from shared.exchange.filters import SymbolRules, round_qty_down
from shared.ledger import LedgerPosition, disagrees, qty_tolerance
from shared.schema import Plan, Reason, Side, format_decimal
from shared.snapshot import ExchangeSnapshot

ZERO = Decimal(0)


class OpenOnPosition(str, Enum):
    """What an open plan may do when the symbol already holds a position."""

    DENY = "deny"
    SCALE_IN = "scale_in"  # add to the position on its own side only


@dataclass(frozen=True)
class GatePolicy:
    allowlist: frozenset[str]
    stale_threshold_s: float
    qty_tolerance_steps: int
    cooldown_s: float
    open_on_position: OpenOnPosition = OpenOnPosition.DENY


@dataclass(frozen=True)
class Verdict:
    allow: bool
    reason: Reason
    safe_qty: Decimal = ZERO
    context: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanState:
    """Everything one decision reads, gathered once."""

    plan: Plan
    snapshot: ExchangeSnapshot | None
    ledger: LedgerPosition | None
    last_exec_ms: int | None
    rules: SymbolRules | None
    policy: GatePolicy
    now_ms: int
    open_on_its_way: Side | None = None  # the side of another open permitted on the symbol, no result yet

    @property
    def exchange_amt(self) -> Decimal:
        return self.snapshot.amount(self.plan.symbol) if self.snapshot else ZERO

    @property
    def ledger_amt(self) -> Decimal:
        return self.ledger.amount if self.ledger else ZERO


Gate = Callable[[PlanState], "Verdict | None"]


def deny(reason: Reason, **context: object) -> Verdict:
    return Verdict(False, reason, ZERO, _strings(context))


def allow(safe_qty: Decimal, **context: object) -> Verdict:
    return Verdict(True, Reason.SANITY_CHECKS_PASSED, safe_qty, _strings(context))


def _strings(context: dict[str, object]) -> dict[str, str]:
    return {k: format_decimal(v) if isinstance(v, Decimal) else str(v) for k, v in context.items()}


def symbol_allowed(state: PlanState) -> Verdict | None:
    # The allowlist limits what the fleet opens; a close of a held position (adopted by reconcile, or
    # on a symbol since removed from the list) reduces risk and still faces the position checks below.
    if state.plan.is_close or state.plan.symbol in state.policy.allowlist:
        return None
    return deny(Reason.SYMBOL_NOT_ALLOWED, symbol=state.plan.symbol)


def snapshot_fresh(state: PlanState) -> Verdict | None:
    if state.snapshot is None:
        return deny(Reason.STALE_SNAPSHOT, snapshot="missing", threshold_s=state.policy.stale_threshold_s)
    age_s = state.snapshot.age_s(state.now_ms)
    if age_s > state.policy.stale_threshold_s:
        return deny(Reason.STALE_SNAPSHOT, age_s=f"{age_s:.3f}", threshold_s=state.policy.stale_threshold_s)
    return None


def symbol_known(state: PlanState) -> Verdict | None:
    return None if state.rules is not None else deny(Reason.UNKNOWN_SYMBOL, symbol=state.plan.symbol)


def ledger_agrees(state: PlanState) -> Verdict | None:
    # The tolerance reconcile heals beyond too (shared.ledger), so a symbol held here is always healed.
    tolerance = qty_tolerance(state.rules, state.policy.qty_tolerance_steps)
    if not disagrees(state.exchange_amt, state.ledger_amt, tolerance):
        return None
    return deny(Reason.RECONCILE_REQUIRED_QTY_MISMATCH, exchange_amt=state.exchange_amt,
                ledger_amt=state.ledger_amt, diff=abs(state.exchange_amt - state.ledger_amt), tolerance=tolerance)


def cooled_down(state: PlanState) -> Verdict | None:
    if state.open_on_its_way is not None and state.policy.cooldown_s > 0:
        # It starts the cooldown when it fills: the next open waits for it as for a fill.
        return deny(Reason.COOLDOWN, open_in_flight=state.plan.symbol, cooldown_s=state.policy.cooldown_s)
    if state.last_exec_ms is None:
        return None
    elapsed_s = max(state.now_ms - state.last_exec_ms, 0) / 1000  # clock skew is not a cooldown
    if elapsed_s >= state.policy.cooldown_s:
        return None
    return deny(Reason.COOLDOWN, remaining_s=f"{state.policy.cooldown_s - elapsed_s:.3f}",
                cooldown_s=state.policy.cooldown_s)


def side_of(amount: Decimal) -> Side:
    """The order side that adds to a position of this sign."""
    return Side.BUY if amount > 0 else Side.SELL


def open_pathway(state: PlanState) -> Verdict:
    position = state.exchange_amt
    if position != ZERO:
        blocked = _open_on_position(state, side_of(position), exchange_amt=position)
        if blocked is not None:
            return blocked
    if state.open_on_its_way is not None:  # a position on its way counts as one
        blocked = _open_on_position(state, state.open_on_its_way, open_in_flight=state.plan.symbol)
        if blocked is not None:
            return blocked
    # safe_qty 0 on an open: the executor sizes the plan's own qty.
    # The side is in the permit's context so that a restarted P3.3 knows which way the open is on its way.
    return cooled_down(state) or allow(ZERO, pathway="open", side=state.plan.side.value, exchange_amt=position)


def _open_on_position(state: PlanState, held_side: Side, **context: object) -> Verdict | None:
    if state.policy.open_on_position is OpenOnPosition.DENY:
        return deny(Reason.POSITION_EXISTS, **context, open_on_position="deny")
    if state.plan.side is not held_side:
        return deny(Reason.SIDE_MISMATCH, **context, plan_side=state.plan.side.value, open_on_position="scale_in")
    return None


def close_pathway(state: PlanState) -> Verdict:
    position = state.exchange_amt
    if position == ZERO:
        return deny(Reason.NO_POSITION, exchange_amt=position)
    if state.plan.side is side_of(position):
        return deny(Reason.SIDE_MISMATCH, exchange_amt=position, plan_side=state.plan.side.value)
    safe_qty = round_qty_down(state.rules, min(state.plan.qty, abs(position)), market=True)
    if safe_qty <= ZERO:
        # A zero safe_qty would tell the executor to use the plan qty: never for a close.
        return deny(Reason.BELOW_MIN_QTY, requested_qty=state.plan.qty, exchange_amt=position)
    return allow(safe_qty, pathway="close", requested_qty=state.plan.qty, exchange_amt=position)


GATES: tuple[Gate, ...] = (symbol_allowed, snapshot_fresh, symbol_known, ledger_agrees)


def decide_state(state: PlanState) -> Verdict:
    for gate in GATES:
        verdict = gate(state)
        if verdict is not None:
            return verdict
    # Closes reduce risk, so the open cooldown never applies to them.
    return close_pathway(state) if state.plan.is_close else open_pathway(state)


def decide(
    plan: Plan,
    snapshot: ExchangeSnapshot | None,
    ledger: LedgerPosition | None,
    last_exec_ms: int | None,
    rules: SymbolRules | None,
    policy: GatePolicy,
    now_ms: int,
    open_on_its_way: Side | None = None,
) -> Verdict:
    return decide_state(PlanState(plan, snapshot, ledger, last_exec_ms, rules, policy, now_ms, open_on_its_way))
