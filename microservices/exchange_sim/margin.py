"""Cross-margin arithmetic: unrealized PnL, initial margin and available balance."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from .models import Account, Order
from .num import ZERO
from .symbols import SYMBOLS

MarkOf = Callable[[str], Decimal]


@dataclass(frozen=True)
class Exposure:
    """Open (not yet filled) order quantity and notional that would grow a position."""

    qty: Decimal = ZERO
    notional: Decimal = ZERO

    def plus(self, qty: Decimal, price: Decimal) -> Exposure:
        return Exposure(self.qty + qty, self.notional + qty * price)

    def beyond(self, offset: Decimal) -> Decimal:
        """Notional of the part of this exposure left after `offset` quantity closes a position."""
        if self.qty <= offset or self.qty == ZERO:
            return ZERO
        return (self.qty - offset) * (self.notional / self.qty)


NO_EXPOSURE = Exposure()  # immutable, so one shared instance serves every lookup default


@dataclass(frozen=True)
class Snapshot:
    wallet: Decimal
    unrealized: Decimal
    position_margin: Decimal
    order_margin: Decimal
    maint_margin: Decimal

    @property
    def margin_balance(self) -> Decimal:
        return self.wallet + self.unrealized

    @property
    def initial_margin(self) -> Decimal:
        return self.position_margin + self.order_margin

    @property
    def available(self) -> Decimal:
        return self.margin_balance - self.initial_margin


def order_price(order: Order, mark: Decimal) -> Decimal:
    return order.price if order.type == "LIMIT" and order.price else mark


def _exposures(orders: Iterable[Order], mark: Decimal) -> dict[tuple[str, str], Exposure]:
    sides: dict[tuple[str, str], Exposure] = {}
    for order in orders:
        if order.reduce_only:
            continue
        key = (order.position_side, order.side)
        sides[key] = sides.get(key, NO_EXPOSURE).plus(order.remaining, order_price(order, mark))
    return sides


def symbol_order_margin(account: Account, symbol: str, mark: Decimal, extra: Order | None = None) -> Decimal:
    """Initial margin held by open orders of one symbol (plus an optional prospective order)."""
    orders = account.open_orders(symbol) + ([extra] if extra else [])
    sides = _exposures(orders, mark)
    leverage = Decimal(account.leverage_of(symbol))
    if account.dual_side:
        grow = sides.get(("LONG", "BUY"), NO_EXPOSURE).notional + sides.get(("SHORT", "SELL"), NO_EXPOSURE).notional
        return grow / leverage
    amount = account.position(symbol, "BOTH").amount
    buys = sides.get(("BOTH", "BUY"), NO_EXPOSURE).beyond(max(ZERO, -amount))
    sells = sides.get(("BOTH", "SELL"), NO_EXPOSURE).beyond(max(ZERO, amount))
    return max(buys, sells) / leverage


def position_margin(account: Account, mark_of: MarkOf) -> tuple[Decimal, Decimal, Decimal]:
    """(unrealized PnL, position initial margin, maintenance margin) over live positions."""
    unrealized = initial = maint = ZERO
    for position in account.live_positions():
        mark = mark_of(position.symbol)
        notional = abs(position.amount) * mark
        unrealized += position.unrealized(mark)
        initial += notional / account.leverage_of(position.symbol)
        maint += notional * SYMBOLS[position.symbol].maint_margin_rate
    return unrealized, initial, maint


def snapshot(account: Account, mark_of: MarkOf) -> Snapshot:
    unrealized, initial, maint = position_margin(account, mark_of)
    symbols = {order.symbol for order in account.open_orders()}
    orders = sum((symbol_order_margin(account, s, mark_of(s)) for s in symbols), ZERO)
    return Snapshot(account.wallet, unrealized, initial, orders, maint)


def margin_needed(account: Account, prospective: Order, mark: Decimal) -> Decimal:
    """Extra initial margin a new order would lock, net of the position it would close."""
    before = symbol_order_margin(account, prospective.symbol, mark)
    after = symbol_order_margin(account, prospective.symbol, mark, prospective)
    return max(ZERO, after - before)
