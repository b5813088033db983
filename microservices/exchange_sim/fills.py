"""Applying executions to an account: position averaging, realized PnL and fees."""

from __future__ import annotations

from decimal import Decimal

from .models import Account, Order, Position, Trade
from .num import ZERO


def closable_qty(account: Account, order: Order) -> Decimal:
    """Quantity of `order` that would reduce its position (0 when it would only grow it)."""
    position = account.position(order.symbol, order.position_side)
    if position.amount * order.signed_side >= ZERO:
        return ZERO
    return min(order.remaining, abs(position.amount))


def _realize(position: Position, delta: Decimal, price: Decimal) -> Decimal:
    amount = position.amount
    if amount == ZERO or (amount > ZERO) == (delta > ZERO):
        grown = amount + delta
        position.entry = (abs(amount) * position.entry + abs(delta) * price) / abs(grown)
        position.amount = grown
        return ZERO
    closing = min(abs(delta), abs(amount))
    realized = closing * (price - position.entry) * (1 if amount > ZERO else -1)
    position.amount = amount + delta
    if position.amount == ZERO:
        position.entry = ZERO
    elif (position.amount > ZERO) != (amount > ZERO):
        # the fill flipped the position, so the new side starts at this price
        position.entry = price
    return realized


def apply_fill(
    account: Account, order: Order, qty: Decimal, price: Decimal, fee_rate: Decimal, maker: bool,
    now: int, trade_id: int,
) -> Trade:
    position = account.position(order.symbol, order.position_side)
    realized = _realize(position, qty * order.signed_side, price)
    position.update_time = now
    commission = qty * price * fee_rate
    account.wallet += realized - commission
    account.update_time = now
    order.executed_qty += qty
    order.cum_quote += qty * price
    account.set_status(order, "FILLED" if order.remaining == ZERO else "PARTIALLY_FILLED")
    order.update_time = now
    trade = Trade(trade_id, order.order_id, order.symbol, order.side, order.position_side, price, qty,
                  realized, commission, maker, now)
    account.trades.append(trade)
    return trade
