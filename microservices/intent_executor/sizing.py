"""Order sizing before anything is sent: pure, so every rule is unit-tested without Redis.

Opens use the plan quantity; closes use min(plan qty, P3.3's safe_qty, the MARKET order's maximum
quantity): a position larger than one order may hold is closed in parts, each plan one order, rather
than refused every time. Both round down to the step and must pass the exchange's filters (reduce-only
exempt from min notional, so a close needs no mark price). Fail closed: a quantity too small is
refused, and raised only when ALLOW_UPSIZE is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_UP, Decimal

from shared.exchange.filters import FilterReason, FilterVerdict, SymbolRules, round_qty_down, round_to_step, validate_order
from shared.schema import Plan, Reason

_FILTER_REASONS = {
    FilterReason.BELOW_MIN_QTY: Reason.BELOW_MIN_QTY,
    FilterReason.BELOW_MIN_NOTIONAL: Reason.BELOW_MIN_NOTIONAL,
    FilterReason.ABOVE_MAX_QTY: Reason.ABOVE_MAX_QTY,
    FilterReason.SYMBOL_NOT_TRADING: Reason.SYMBOL_NOT_TRADING,
}
_UPSIZABLE = frozenset({FilterReason.BELOW_MIN_QTY, FilterReason.BELOW_MIN_NOTIONAL})


@dataclass(frozen=True)
class Sized:
    qty: Decimal
    notional: Decimal | None  # None for a close, sized without a mark
    upsized: bool = False
    capped_at: Decimal | None = None  # a close cut to one MARKET order's maxQty (the rest stays open)


@dataclass(frozen=True)
class Refused:
    reason: Reason
    detail: dict[str, str] = field(default_factory=dict)


def size_order(
    plan: Plan,
    safe_qty: Decimal,
    rules: SymbolRules,
    mark: Decimal | None,
    allow_upsize: bool,
    max_notional: Decimal | None,
    room_in_total: Decimal | None = None,
) -> Sized | Refused:
    """`room_in_total`: the most this open may be worth under the total notional cap, as the governor counted
    the other exposure when it allowed it; an upsized order must fit it as it must fit the per-trade cap.
    `mark`: needed for an open (its notional); a close is sized without one (None)."""
    if plan.is_close:
        _, max_qty, _ = rules.lot(True)
        wanted = min(plan.qty, safe_qty)
        capped = max_qty > 0 and wanted > max_qty
        qty = round_qty_down(rules, max_qty if capped else wanted, market=True)
        verdict = validate_order(rules, qty, Decimal(0), reduce_only=True, market=True)  # no notional filter
        if verdict is None:
            return Sized(qty, None, capped_at=max_qty if capped else None)
        return _refused(verdict)
    if mark is None:
        raise ValueError("an open is sized against a mark price")
    qty = round_qty_down(rules, plan.qty, market=True)
    verdict = validate_order(rules, qty, mark, reduce_only=False, market=True)
    if verdict is None:
        return Sized(qty, qty * mark)
    if allow_upsize and verdict.reason in _UPSIZABLE:
        return _upsize(rules, mark, max_notional, room_in_total)
    return _refused(verdict)


def _refused(verdict: FilterVerdict) -> Refused:
    return Refused(_FILTER_REASONS[verdict.reason], {k: str(v) for k, v in verdict.detail.items()})


def _upsize(rules: SymbolRules, mark: Decimal, max_notional: Decimal | None,
            room_in_total: Decimal | None) -> Sized | Refused:
    min_qty, _, step = rules.lot(True)
    by_notional = round_to_step(rules.min_notional / mark, step, ROUND_UP)
    qty = max(min_qty, by_notional)
    notional = qty * mark
    if max_notional is not None and notional > max_notional:
        detail = {"upsized_notional": str(notional), "max_notional_per_trade": str(max_notional)}
        return Refused(Reason.MAX_NOTIONAL_PER_TRADE, detail)
    if room_in_total is not None and notional > room_in_total:
        return Refused(Reason.TOTAL_NOTIONAL_EXCEEDED, {"upsized_notional": str(notional), "room": str(room_in_total)})
    verdict = validate_order(rules, qty, mark, reduce_only=False, market=True)
    if verdict is not None:
        return _refused(verdict)
    return Sized(qty, notional, upsized=True)
