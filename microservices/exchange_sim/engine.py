"""The matching engine for one simulated account: orders, fills, positions and settings."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from decimal import Decimal

import structlog

from . import errors
from .fills import apply_fill, closable_qty
from .margin import Snapshot, margin_needed, snapshot
from .models import Account, Order
from .num import ZERO, ceil_step, floor_step, parse_decimal, to_step
from .orders import OrderRequest, parse_bool, parse_new_order, require_symbol
from .prices import PriceBook
from .settings import SimSettings
from .symbols import SYMBOLS, SymbolSpec

log = structlog.get_logger("exchange_sim.engine")
FIRST_ORDER_ID = 4_000_000_000
FIRST_TRADE_ID = 500_000_000


class Engine:
    def __init__(self, settings: SimSettings, clock: Callable[[], int], replay: dict | None = None):
        self.settings = settings
        self.clock = clock
        self.replay = replay
        self.reset()

    def reset(self) -> None:
        s = self.settings
        self.prices = PriceBook(s.seed, s.price_tick_ms, s.walk_bps_per_tick, self.clock, self.replay)
        self.account = Account(wallet=s.balance_usdt, default_leverage=s.default_leverage)
        self._order_ids = itertools.count(FIRST_ORDER_ID)
        self._trade_ids = itertools.count(FIRST_TRADE_ID)
        self._checked_tick: dict[str, int] = {}

    def mark(self, symbol: str) -> Decimal:
        """Current mark price; observing it also fills resting LIMIT orders the walk crossed."""
        self._fill_resting(symbol)
        return self.prices.mark(symbol)

    def sync(self) -> None:
        for symbol in {order.symbol for order in self.account.open_orders()}:
            self._fill_resting(symbol)

    def snapshot(self) -> Snapshot:
        self.sync()
        return snapshot(self.account, self.prices.marks_now())

    def place(self, params: dict[str, str]) -> tuple[Order, str]:
        request = parse_new_order(params)
        symbol = request.spec.symbol
        mark = self.mark(symbol)
        position_side = self._position_side(request, params)
        self._check_percent_price(request, mark)
        order = self._new_order(request, position_side)
        self._check_duplicate(order)
        if request.reduce_only or self._hedge_closing(order):
            self._check_reduces(order)
        else:
            self._check_notional(request, mark)
            if margin_needed(self.account, order, mark) > self.snapshot().available:
                raise errors.margin_insufficient()
        self.account.add_order(order)
        self._execute_new(order, request, mark)
        log.info("order_placed", symbol=symbol, order_id=order.order_id, client_order_id=order.client_order_id,
                 side=order.side, type=order.type, qty=str(order.orig_qty), status=order.status)
        return order, request.resp_type

    def find(self, params: dict[str, str]) -> Order:
        spec = require_symbol(params)
        order = self._lookup(spec.symbol, params)
        if order is None:
            raise errors.order_does_not_exist()
        return order

    def cancel(self, params: dict[str, str]) -> Order:
        spec = require_symbol(params)
        self._fill_resting(spec.symbol)
        order = self._lookup(spec.symbol, params)
        if order is None or not order.is_open:
            raise errors.unknown_order_sent()
        self.account.set_status(order, "CANCELED")
        order.update_time = self.clock()
        log.info("order_canceled", symbol=spec.symbol, order_id=order.order_id)
        return order

    def cancel_all(self, params: dict[str, str]) -> None:
        spec = require_symbol(params)
        self._fill_resting(spec.symbol)
        for order in self.account.open_orders(spec.symbol):
            self.account.set_status(order, "CANCELED")
            order.update_time = self.clock()

    def change_leverage(self, params: dict[str, str]) -> tuple[SymbolSpec, int]:
        spec = require_symbol(params)
        raw = params.get("leverage")
        if not raw:
            raise errors.mandatory_missing("leverage")
        if not raw.isdigit() or not 1 <= int(raw) <= spec.max_leverage:
            raise errors.invalid_leverage(raw)
        set_before, before = self.account.leverage.get(spec.symbol), self.account.leverage_of(spec.symbol)
        self.account.leverage[spec.symbol] = int(raw)
        # As Binance: a lower leverage whose larger initial margin the account cannot hold is refused (found in review:
        # the simulator took any, and an account reached a negative available balance no exchange shows).
        if int(raw) < before and self.snapshot().available < ZERO:
            if set_before is None:
                del self.account.leverage[spec.symbol]
            else:
                self.account.leverage[spec.symbol] = set_before
            raise errors.leverage_below_margin()
        return spec, int(raw)

    def change_margin_type(self, params: dict[str, str]) -> None:
        spec = require_symbol(params)
        wanted = params.get("marginType", "").upper()
        if wanted not in ("ISOLATED", "CROSSED"):
            raise errors.mandatory_missing("marginType")
        if wanted == self.account.margin_type_of(spec.symbol):
            raise errors.no_need_margin_type()
        if self.account.open_orders(spec.symbol):
            raise errors.margin_type_open_orders()
        if any(p.symbol == spec.symbol for p in self.account.live_positions()):
            raise errors.margin_type_position()
        self.account.margin_type[spec.symbol] = wanted

    def change_position_mode(self, params: dict[str, str]) -> None:
        if params.get("dualSidePosition") is None:
            raise errors.mandatory_missing("dualSidePosition")
        dual = parse_bool(params, "dualSidePosition")
        if dual == self.account.dual_side:
            raise errors.no_need_position_side()
        if self.account.open_orders():
            raise errors.position_side_open_orders()
        if self.account.live_positions():
            raise errors.position_side_position()
        self.account.dual_side = dual

    def set_price(self, symbol: str, price: Decimal) -> None:
        self._fill_resting(symbol)
        self.prices.set_price(symbol, price)
        self._fill_resting(symbol)

    def set_frozen(self, symbol: str, frozen: bool) -> None:
        self._fill_resting(symbol)
        self.prices.set_frozen(symbol, frozen)

    def _lookup(self, symbol: str, params: dict[str, str]) -> Order | None:
        raw_id, client_id = params.get("orderId"), params.get("origClientOrderId")
        if not raw_id and not client_id:
            raise errors.one_of_missing("orderId", "origClientOrderId")
        if raw_id:
            if not raw_id.isdigit():
                raise errors.mandatory_missing("orderId")
            order = self.account.orders.get(int(raw_id))
            return order if order and order.symbol == symbol else None
        return self.account.find_by_client_id(symbol, client_id)

    def _position_side(self, request: OrderRequest, params: dict[str, str]) -> str:
        if self.account.dual_side:
            if request.position_side not in ("LONG", "SHORT"):
                raise errors.position_side_mismatch()
            if "reduceOnly" in params:
                raise errors.param_not_required("reduceOnly")
            return request.position_side
        if request.position_side not in (None, "BOTH"):
            raise errors.position_side_mismatch()
        return "BOTH"

    def _hedge_closing(self, order: Order) -> bool:
        return (order.position_side, order.side) in (("LONG", "SELL"), ("SHORT", "BUY"))

    def _check_percent_price(self, request: OrderRequest, mark: Decimal) -> None:
        if request.type != "LIMIT":
            return
        spec = request.spec
        cap = floor_step(mark * spec.percent_up, spec.tick_size)
        floor = ceil_step(mark * spec.percent_down, spec.tick_size)
        if request.side == "BUY" and request.price > cap:
            raise errors.limit_price_too_high(format(cap, "f"))
        if request.side == "SELL" and request.price < floor:
            raise errors.limit_price_too_low(format(floor, "f"))

    def _check_notional(self, request: OrderRequest, mark: Decimal) -> None:
        price = request.price if request.type == "LIMIT" else mark
        if request.quantity * price < request.spec.notional_floor:
            raise errors.min_notional(request.spec.min_notional)

    def _check_reduces(self, order: Order) -> None:
        closable = closable_qty(self.account, order)
        # one-way reduce-only may exceed the position (the rest expires); hedge closes may not
        if closable == ZERO or (self.account.dual_side and closable < order.orig_qty):
            raise errors.reduce_only_rejected()

    def _check_duplicate(self, order: Order) -> None:
        # a reuse is refused while an earlier order with the id is open; as every placement passes this
        # check, such an order is always the latest one with that id
        earlier = self.account.find_by_client_id(order.symbol, order.client_order_id)
        if earlier is not None and earlier.is_open:
            raise errors.duplicate_client_order_id()

    def _new_order(self, request: OrderRequest, position_side: str) -> Order:
        now = self.clock()
        return Order(
            order_id=next(self._order_ids), client_order_id=request.client_order_id, symbol=request.spec.symbol,
            side=request.side, position_side=position_side, type=request.type,
            time_in_force=request.time_in_force, price=request.price, orig_qty=request.quantity,
            reduce_only=request.reduce_only, time=now, update_time=now,
        )

    def _taker_price(self, spec: SymbolSpec, side: str, mark: Decimal) -> Decimal:
        slip = self.settings.slippage_bps / Decimal(10_000)
        if side == "BUY":
            return ceil_step(mark * (1 + slip), spec.tick_size) if slip else to_step(mark, spec.tick_size)
        return floor_step(mark * (1 - slip), spec.tick_size) if slip else to_step(mark, spec.tick_size)

    def _execute_new(self, order: Order, request: OrderRequest, mark: Decimal) -> None:
        taker = self._taker_price(request.spec, order.side, mark)
        if order.type == "MARKET":
            self._take(order, taker)
            return
        marketable = order.price >= taker if order.side == "BUY" else order.price <= taker
        if marketable and order.time_in_force != "GTX":
            self._take(order, min(order.price, taker) if order.side == "BUY" else max(order.price, taker))
        elif marketable or order.time_in_force in ("IOC", "FOK"):
            self.account.set_status(order, "EXPIRED")

    def _take(self, order: Order, price: Decimal) -> None:
        qty = self._fillable(order)
        if qty > ZERO:
            apply_fill(self.account, order, qty, price, self.settings.taker_fee, False, self.clock(),
                       next(self._trade_ids))
        if order.remaining > ZERO:
            # reduce-only remainder beyond the position, or an IOC/FOK/MARKET leftover, expires
            self.account.set_status(order, "EXPIRED")
            order.update_time = self.clock()

    def _fillable(self, order: Order) -> Decimal:
        if order.reduce_only or self._hedge_closing(order):
            return closable_qty(self.account, order)
        return order.remaining

    def _fill_resting(self, symbol: str) -> None:
        now_tick = self.prices.tick()
        last = self._checked_tick.get(symbol)
        self._checked_tick[symbol] = now_tick
        resting = sorted((o for o in self.account.open_orders(symbol) if o.type == "LIMIT"),
                         key=lambda o: o.order_id)
        if not resting:
            return
        if last is None or now_tick <= last:
            low = high = self.prices.mark(symbol)
        else:
            low, high = self.prices.extremes(symbol, last + 1, now_tick)
        for order in resting:
            crossed = low <= order.price if order.side == "BUY" else high >= order.price
            if crossed:
                self._make(order)

    def _make(self, order: Order) -> None:
        qty = self._fillable(order)
        if qty > ZERO:
            apply_fill(self.account, order, qty, order.price, self.settings.maker_fee, True, self.clock(),
                       next(self._trade_ids))
            log.info("order_filled", symbol=order.symbol, order_id=order.order_id, price=str(order.price))
        if order.remaining > ZERO:
            self.account.set_status(order, "EXPIRED")
            order.update_time = self.clock()


def parse_admin_price(raw: object) -> Decimal | None:
    price = parse_decimal(str(raw)) if raw is not None else None
    return price if price is not None and price > ZERO else None


def known_symbol(symbol: object) -> bool:
    return isinstance(symbol, str) and symbol in SYMBOLS
