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
    # every order ever placed: add with add_order and change statuses with set_status, never directly,
    # so the indexes below stay current
    orders: dict[int, Order] = field(default_factory=dict, init=False)
    trades: list[Trade] = field(default_factory=list)
    update_time: int = 0
    _open: dict[int, Order] = field(default_factory=dict, init=False, repr=False)
    _open_by_symbol: dict[str, dict[int, Order]] = field(default_factory=dict, init=False, repr=False)
    _latest_by_client_id: dict[tuple[str, str], Order] = field(default_factory=dict, init=False, repr=False)

    def leverage_of(self, symbol: str) -> int:
        return self.leverage.get(symbol, self.default_leverage)

    def margin_type_of(self, symbol: str) -> str:
        return self.margin_type.get(symbol, "CROSSED")

    def position(self, symbol: str, side: str) -> Position:
        key = (symbol, side)
        if key not in self.positions:
            self.positions[key] = Position(symbol, side)
        return self.positions[key]

    def add_order(self, order: Order) -> None:
        """Record a newly placed order; ids only grow, so every index stays in order_id order."""
        self.orders[order.order_id] = order
        self._latest_by_client_id[(order.symbol, order.client_order_id)] = order
        self._index_open(order)

    def set_status(self, order: Order, status: str) -> None:
        """The one way to change an order's status, keeping the open-order indexes current."""
        order.status = status
        self._index_open(order)

    def _index_open(self, order: Order) -> None:
        by_symbol = self._open_by_symbol.setdefault(order.symbol, {})
        if order.is_open:
            self._open.setdefault(order.order_id, order)
            by_symbol.setdefault(order.order_id, order)
        else:
            self._open.pop(order.order_id, None)
            by_symbol.pop(order.order_id, None)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, order_id ascending, without scanning closed ones."""
        if symbol is None:
            return list(self._open.values())
        return list(self._open_by_symbol.get(symbol, {}).values())

    def live_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.amount != ZERO]

    def find_by_client_id(self, symbol: str, client_order_id: str) -> Order | None:
        """The latest (highest order_id) order of `symbol` placed with `client_order_id`."""
        return self._latest_by_client_id.get((symbol, client_order_id))
