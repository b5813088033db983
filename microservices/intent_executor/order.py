"""The order path, once both permits are taken: the trading state checked again at send time, the order sized
against the filters (a mark price for an open), dry run said, the open's leverage set, and one MARKET order sent
whose newClientOrderId derives from the plan id. An order whose outcome is unclear is left to the Resolver: looked
up, never sent again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from microservices.intent_executor import outcomes
from microservices.intent_executor.resolve import Resolver
from microservices.intent_executor.settings import ExecutorSettings
from microservices.intent_executor.sizing import Refused, Sized, size_order
from shared import snapshot as exchange_snapshot
from shared.exchange.errors import ExchangeError, ExchangeRejected, ExchangeUnavailable, OutcomeUnknown
from shared.modes import ApplyMode
from shared.runtime.exchange import ExchangeAccess
from shared.schema import P32Permit, P33Permit, Plan, Reason
from shared.trading_state import Switches, TradingState, forced_dry_run


@dataclass(frozen=True)
class Taken:
    """Both permits, and what sending needs, read in the transaction that took them."""

    p32: P32Permit
    p33: P33Permit
    switches: Switches
    forced_dry_run: str | None
    snapshot_raw: str | None
    ledger: dict[str, str] | None
    taken_at: float  # monotonic, before the call that took them: the order goes out within
    # Resolver.send_within_s of this, or not at all (a lookup believes 'no such order' on that basis)


class OrderPath:
    def __init__(self, exchange: ExchangeAccess, settings: ExecutorSettings, resolver: Resolver, log,
                 clock: Callable[[], float], monotonic: Callable[[], float]):
        self.exchange = exchange
        self.settings = settings
        self.resolver = resolver
        self.log = log
        self.clock = clock
        self.monotonic = monotonic

    def execute(self, plan: Plan, client_order_id: str, taken: Taken) -> outcomes.Outcome:
        """The plan's outcome once both permits allowed it: refused at send time, dry, or its order's."""
        p32, p33 = taken.p32, taken.p33
        halted = _trading_state_refusal(plan, taken.switches)
        if halted is not None:
            return outcomes.refused(plan, halted, {"checked": "at send time"}, p32, p33)
        seen, unreadable = exchange_snapshot.checked(taken.snapshot_raw)
        if unreadable is not None:  # the mark is asked of the exchange instead
            self.log.warning("exchange_snapshot_unreadable", plan_id=plan.plan_id, problem=unreadable)
        try:
            sized = self._size(plan, p33, p32, seen)
        except ExchangeError as exc:  # the mark price request: nothing was sent, and the plan ends saying so
            return outcomes.refused(plan, *self._unsent(plan, exc, "mark_price"), p32, p33)
        if isinstance(sized, Refused):
            return outcomes.refused(plan, sized.reason, sized.detail, p32, p33)
        if sized.capped_at is not None:
            self.log.warning("close_capped_at_max_qty", plan_id=plan.plan_id, symbol=plan.symbol,
                             wanted=str(min(plan.qty, p33.safe_qty)),
                             qty=str(sized.qty), max_qty=str(sized.capped_at), detail="the rest stays open")
        dry_run = self.settings.apply_mode is ApplyMode.DRY_RUN or forced_dry_run(taken.forced_dry_run)
        outcomes.DRY_RUN.set(int(dry_run))
        if dry_run:
            leverage = f" leverage={int(plan.leverage)}" if plan.leverage is not None and not plan.is_close else ""
            detail = {"would_send": f"{plan.side.value} {sized.qty} {plan.symbol} reduceOnly={str(plan.is_close).lower()}"
                                    f"{leverage}"}
            return outcomes.refused(plan, Reason.DRY_RUN, detail, p32, p33, qty=sized.qty)
        unset = self._set_leverage(plan)
        if unset is not None:
            return outcomes.refused(plan, Reason.LEVERAGE_NOT_SET, unset, p32, p33, qty=sized.qty)
        late_s = self.monotonic() - taken.taken_at
        if late_s > self.resolver.send_within_s:  # a lookup trusts that orders go out this soon, or never
            return outcomes.refused(plan, Reason.SEND_DEADLINE_PASSED, {"after_taking_s": f"{late_s:.1f}"}, p32, p33,
                                    qty=sized.qty)
        return self._send(plan, client_order_id, sized, taken)

    def _size(self, plan: Plan, p33: P33Permit, p32: P32Permit, seen) -> Sized | Refused:
        rules = self.exchange.filters.find(plan.symbol)
        if rules is None:
            return Refused(Reason.UNKNOWN_SYMBOL, {"symbol": plan.symbol})
        # A close's size does not depend on a price (reduce-only is exempt from the notional filter): it never waits
        # for, or fails on, a mark price request.
        mark = None if plan.is_close else self._mark(plan.symbol, seen)
        max_notional = p32.context.get("max_notional_per_trade")
        return size_order(plan, p33.safe_qty, rules, mark, self.settings.allow_upsize,
                          Decimal(str(max_notional)) if max_notional is not None else None, _room_in_total(p32))

    def _mark(self, symbol: str, seen) -> Decimal:
        if seen is not None and seen.mark(symbol) and seen.age_s(self._now_ms()) <= self.settings.executor_mark_max_age_s:
            return seen.mark(symbol)
        return self.exchange.client.mark_price(symbol).mark_price

    def _set_leverage(self, plan: Plan) -> dict[str, str] | None:
        """An open that names its leverage goes out at it: set on the exchange just before the order, every time
        (one request of weight 1). Remembering the value set would go wrong whenever the exchange side changes
        under the memory (another target or account, a hand-made change, a simulator reset). None when the order
        may go; else why not (nothing is sent). Closes never ask: reducing does not depend on it, and nothing may
        hold up a close."""
        if plan.is_close or plan.leverage is None:
            return None
        wanted = int(plan.leverage)
        try:
            result = self.exchange.client.set_leverage(plan.symbol, wanted)
        except ExchangeError as exc:
            unset = {"leverage": str(wanted), **self._unsent(plan, exc, "set_leverage")[1]}
        else:
            if result.leverage == wanted:
                return None
            unset = {"leverage": str(wanted), "exchange_leverage": str(result.leverage)}
        self.log.warning("leverage_not_set", plan_id=plan.plan_id, symbol=plan.symbol, **unset)
        return unset

    def _unsent(self, plan: Plan, exc: ExchangeError, step: str) -> tuple[Reason, dict[str, str]]:
        """A request before the order failed (nothing was sent): counted with the orders' errors (opens cannot go
        out) unless it is a reply that does not read, and said in the result. Before, a failing mark price left
        the plan pending, to end as order_not_found on a later delivery."""
        if isinstance(exc, (ExchangeRejected, ExchangeUnavailable, OutcomeUnknown)):
            outcomes.order_error(self.log, plan, exc)
        if isinstance(exc, ExchangeRejected):
            return Reason.EXCHANGE_REJECTED, {"before_sending": step, "code": str(exc.code), "msg": exc.msg}
        return Reason.EXCHANGE_UNAVAILABLE, {"before_sending": step, "error": exc.message}

    def _send(self, plan: Plan, client_order_id: str, sized: Sized, taken: Taken) -> outcomes.Outcome:
        p32, p33 = taken.p32, taken.p33  # the order marker was written with the taking (TAKE)
        self.log.info("ORDER_SUBMIT", plan_id=plan.plan_id, symbol=plan.symbol, side=plan.side.value, qty=str(sized.qty),
                      type="MARKET", reduce_only=plan.is_close, client_order_id=client_order_id,
                      leverage=None if plan.is_close or plan.leverage is None else int(plan.leverage),
                      endpoint=self.exchange.settings.root_url, mode=self.settings.apply_mode.value)
        started, sent_at = time.perf_counter(), self.monotonic()
        try:
            order = self.exchange.client.create_market_order(
                plan.symbol, plan.side.value, sized.qty, plan.is_close, client_order_id)
        except ExchangeRejected as exc:
            outcomes.order_error(self.log, plan, exc)
            return outcomes.refused(plan, Reason.EXCHANGE_REJECTED, {"code": str(exc.code), "msg": exc.msg}, p32, p33, qty=sized.qty)
        except (OutcomeUnknown, ExchangeUnavailable) as exc:
            outcomes.order_error(self.log, plan, exc)
            return self.resolver.after_unclear_send(plan, client_order_id, exc, p32, p33, sized.qty, taken.ledger,
                                                    sent_at)
        outcomes.ORDER_SECONDS.observe(time.perf_counter() - started)
        self.log.info("ORDER_RESPONSE", plan_id=plan.plan_id, order_id=order.order_id, status=order.status,
                      filled=str(order.executed_qty), avg_price=str(order.avg_price), symbol=plan.symbol)
        return self.resolver.known(plan, order, p32, p33, taken.ledger)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _room_in_total(p32: P32Permit) -> Decimal | None:
    """What this open may be worth under the total cap: the cap less the exposure the governor counted
    besides it (its context's total after the open, less the open itself)."""
    cap, after = p32.context.get("max_total_notional"), p32.context.get("total_notional_after")
    if cap is None or after is None:
        return None
    return Decimal(str(cap)) - Decimal(str(after)) + p32.computed_notional


def _trading_state_refusal(plan: Plan, switches: Switches) -> Reason | None:
    if switches.trading is TradingState.HALTED:
        return Reason.KILL_SWITCH
    if switches.trading is TradingState.REDUCING and not plan.is_close:
        return Reason.EXECUTION_DISABLED
    return None
