"""Account state: orders, positions, trades and per-symbol settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from .num import ZERO

OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


@dataclass
class Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    position_side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    reduce_only: bool
    time: int
    update_time: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    close_position: bool = False

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def signed_side(self) -> int:
        return 1 if self.side == "BUY" else -1


@dataclass
class Position:
    symbol: str
    side: str
    amount: Decimal = ZERO
    entry: Decimal = ZERO
    update_time: int = 0

    def unrealized(self, mark: Decimal) -> Decimal:
        return self.amount * (mark - self.entry)


@dataclass
class Trade:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    position_side: str
    price: Decimal
    qty: Decimal
    realized_pnl: Decimal
    commission: Decimal
    maker: bool
    time: int

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass
class Account:
    wallet: Decimal
    default_leverage: int
    dual_side: bool = False
    leverage: dict[str, int] = field(default_factory=dict)
    margin_type: dict[str, str] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    update_time: int = 0

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, self.default_leverage)

    def margin_type_of(self, symbol: str) -> str:
        return self.margin_type.get(symbol, "CROSSED")

    def position(self, symbol: str, side: str) -> Position:
        key = (symbol, side)
        if key not in self.positions:
            self.positions[key] = Position(symbol, side)
        return self.positions[key]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def live_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.amount != ZERO]

    def find_by_client_id(self, symbol: str, client_order_id: str) -> Order | None:
        matches = [o for o in self.orders.values() if o.symbol == symbol and o.client_order_id == client_order_id]
        return max(matches, key=lambda o: o.order_id) if matches else None
