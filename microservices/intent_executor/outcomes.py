"""How an executor decision becomes a result, its effects, its log lines and its metrics."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from prometheus_client import Counter, Gauge, Histogram

from shared import ledger, metrics, results
from shared.exchange.errors import ExchangeError, ExchangeRejected, ExchangeUnavailable, OutcomeUnknown, RateLimited
from shared.exchange.models import OrderResult
from shared.metrics import LATENCY_BUCKETS
from shared.modes import ApplyMode
from shared.schema import P32Permit, P33Permit, Plan, PlanResult, Reason, to_json

RESULTS = Counter("quantum_executor_results_total", "Plan results written by the executor", ["executed", "reason"])
ORDER_SECONDS = Histogram("quantum_executor_order_seconds", "Order request round trip", buckets=LATENCY_BUCKETS)
EXCHANGE_ERRORS = Counter("quantum_executor_exchange_errors_total", "Order requests that failed", ["kind"])
DRY_RUN = Gauge("quantum_executor_dry_run", "1 while plans are not sent (APPLY_MODE=dry_run or quantum:apply:dry_run)")
APPLY_MODE = Gauge("quantum_executor_apply_mode", "1 for the configured APPLY_MODE, 0 for the others", ["mode"])
SOURCE = "intent_executor"
# What an order request fails with (the errors the executor catches when sending): order_error's `kind`.
ORDER_ERROR_KINDS = tuple(
    error.__name__ for error in (ExchangeRejected, ExchangeUnavailable, RateLimited, OutcomeUnknown)
)


def _series_at_zero() -> None:
    """The series the alerts select, there from the start: increase() cannot count the sample a series is born
    with, so the first exchange error, fill or dry-run result would go unseen."""
    for kind in ORDER_ERROR_KINDS:
        EXCHANGE_ERRORS.labels(kind=kind)
    RESULTS.labels(executed="true", reason="filled")
    RESULTS.labels(executed="false", reason=Reason.DRY_RUN.value)
    for mode in ApplyMode:
        APPLY_MODE.labels(mode=mode.value)


_series_at_zero()


def configured_mode(mode: ApplyMode) -> None:
    """APPLY_MODE as set: beside quantum_executor_dry_run it tells `quantum dry-run on` from a dry-run fleet."""
    metrics.set_mode(APPLY_MODE, ApplyMode, mode)


@dataclass(frozen=True)
class Outcome:
    result: PlanResult
    effects: results.Effects = results.Effects()
    ledger_seen: dict[str, str] | None = None  # the symbol's ledger as read with the permits


def _permit_json(permit: P32Permit | P33Permit | None) -> str | None:
    return None if permit is None else permit.wire_json


def refused(
    plan: Plan,
    reason: Reason,
    detail: dict[str, str],
    p32: P32Permit | None = None,
    p33: P33Permit | None = None,
    qty: Decimal | None = None,
) -> Outcome:
    result = PlanResult(
        plan_id=plan.plan_id, executed=False, symbol=plan.symbol, side=plan.side, qty=qty if qty is not None else plan.qty,
        reduce_only=plan.is_close, source=plan.source, reason=reason, detail=to_json(detail),
        p32_permit=_permit_json(p32), p33_permit=_permit_json(p33),
    )
    return Outcome(result)


def from_order(plan: Plan, order: OrderResult, p32: P32Permit | None, p33: P33Permit | None,
               ledger_seen: dict[str, str] | None = None) -> Outcome:
    filled = order.executed_qty
    result = PlanResult(
        plan_id=plan.plan_id, executed=filled > 0, symbol=plan.symbol, side=plan.side, qty=order.orig_qty,
        reduce_only=plan.is_close, source=plan.source, order_id=str(order.order_id),
        client_order_id=order.client_order_id, filled_qty=filled, avg_price=order.avg_price,
        order_status=order.status, p32_permit=_permit_json(p32), p33_permit=_permit_json(p33),
        exchange_ts_ms=order.update_time_ms or None,
        reason=None if filled > 0 else Reason.EXCHANGE_REJECTED,
        detail=None if filled > 0 else to_json({"order_status": order.status}),
    )
    if filled <= 0:
        return Outcome(result)
    fill = ledger.Fill(plan.symbol, plan.side, filled, order.avg_price, plan.plan_id,
                       plan.stop_loss, plan.take_profit, plan.leverage)
    return Outcome(result, results.Effects(fill=fill, cooldown_symbol=plan.symbol), ledger_seen)


def record(log, outcome: Outcome, written: bool) -> None:
    result = outcome.result
    if not written:
        log.info("duplicate_result_suppressed", plan_id=result.plan_id)
        return
    reason = result.reason.value if result.reason else "filled"
    RESULTS.labels(executed=str(result.executed).lower(), reason=reason).inc()
    log.info("RESULT", plan_id=result.plan_id, executed=result.executed, symbol=result.symbol, side=result.side.value,
             qty=str(result.qty), reason=reason, order_id=result.order_id, detail=result.detail)


def order_error(log, plan: Plan, exc: ExchangeError) -> None:
    kind = type(exc).__name__
    EXCHANGE_ERRORS.labels(kind=kind).inc()
    code = exc.code if isinstance(exc, ExchangeRejected) else None
    log.error("ORDER_ERROR", plan_id=plan.plan_id, symbol=plan.symbol, error_type=kind, binance_code=code,
              message=exc.message[:200])
