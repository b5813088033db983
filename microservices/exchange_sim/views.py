"""JSON shapes of the real Binance USD-M futures responses (numbers as strings)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from .margin import Snapshot, symbol_order_margin
from .models import Account, Order, Position, Trade
from .num import ZERO, exact, fixed, to_step
from .symbols import SYMBOLS

Q8 = Decimal("1E-8")
MarkOf = Callable[[str], Decimal]
ZERO_ASSETS = ("USDC", "BTC", "BNB", "ETH", "FDUSD")
ACCOUNT_ALIAS = "SgsRmYFzAuXq"


def money(value: Decimal) -> str:
    return fixed(value.quantize(Q8), 8)


def _px(symbol: str, value: Decimal) -> str:
    return fixed(value.quantize(Q8).normalize() if value else ZERO, SYMBOLS[symbol].price_precision)


def _qty(symbol: str, value: Decimal) -> str:
    return fixed(value, SYMBOLS[symbol].quantity_precision)


def _common(order: Order) -> dict:
    return {
        "orderId": order.order_id, "symbol": order.symbol, "status": order.status,
        "clientOrderId": order.client_order_id, "price": _px(order.symbol, order.price),
        "avgPrice": _px(order.symbol, order.avg_price), "origQty": _qty(order.symbol, order.orig_qty),
        "executedQty": _qty(order.symbol, order.executed_qty), "cumQuote": fixed(order.cum_quote, 5),
        "timeInForce": order.time_in_force, "type": order.type, "reduceOnly": order.reduce_only,
        "closePosition": order.close_position, "side": order.side, "positionSide": order.position_side,
        "stopPrice": _px(order.symbol, ZERO), "workingType": "CONTRACT_PRICE", "priceProtect": False,
        "origType": order.type, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0,
    }


def order_ack(order: Order) -> dict:
    """newOrderRespType=ACK: the order as just accepted, before any execution is reported."""
    body = _common(order)
    body.update(status="NEW", avgPrice=_px(order.symbol, ZERO), executedQty=_qty(order.symbol, ZERO),
                cumQuote=fixed(ZERO, 5), cumQty=_qty(order.symbol, ZERO), updateTime=order.time)
    return body


def order_result(order: Order) -> dict:
    body = _common(order)
    body.update(cumQty=_qty(order.symbol, order.executed_qty), updateTime=order.update_time)
    return body


def order_query(order: Order) -> dict:
    body = _common(order)
    body.update(time=order.time, updateTime=order.update_time)
    return body


def trade_view(trade: Trade) -> dict:
    return {
        "buyer": trade.side == "BUY", "commission": money(trade.commission), "commissionAsset": "USDT",
        "id": trade.trade_id, "maker": trade.maker, "orderId": trade.order_id,
        "price": _px(trade.symbol, trade.price), "qty": _qty(trade.symbol, trade.qty),
        "quoteQty": fixed(trade.quote_qty, 5), "realizedPnl": money(trade.realized_pnl), "side": trade.side,
        "positionSide": trade.position_side, "symbol": trade.symbol, "time": trade.time,
    }


def _entry(value: Decimal) -> str:
    return fixed(value.quantize(Q8).normalize(), 1) if value else "0.0"


def _break_even(position: Position, taker_fee: Decimal) -> str:
    if not position.amount:
        return "0.0"
    direction = 1 if position.amount > ZERO else -1
    return _entry(position.entry * (1 + direction * 2 * taker_fee))


def max_notional(leverage: int) -> str:
    return str(int(Decimal(500_000_000) / Decimal(leverage)))


def _sides(account: Account) -> tuple[str, ...]:
    return ("LONG", "SHORT") if account.dual_side else ("BOTH",)


def _position_numbers(account: Account, position: Position, mark: Decimal) -> dict:
    notional = position.amount * mark
    initial = abs(notional) / account.leverage_of(position.symbol)
    return {"notional": notional, "initial": initial,
            "maint": abs(notional) * SYMBOLS[position.symbol].maint_margin_rate,
            "unrealized": position.unrealized(mark)}


def position_v2(account: Account, position: Position, mark: Decimal, taker_fee: Decimal) -> dict:
    numbers = _position_numbers(account, position, mark)
    leverage = account.leverage_of(position.symbol)
    return {
        "symbol": position.symbol, "positionAmt": _qty(position.symbol, position.amount),
        "entryPrice": _entry(position.entry), "breakEvenPrice": _break_even(position, taker_fee),
        "markPrice": money(mark), "unRealizedProfit": money(numbers["unrealized"]), "liquidationPrice": "0",
        "leverage": str(leverage), "maxNotionalValue": max_notional(leverage),
        "marginType": "isolated" if account.margin_type_of(position.symbol) == "ISOLATED" else "cross",
        "isolatedMargin": money(ZERO), "isAutoAddMargin": "false", "positionSide": position.side,
        "notional": exact(numbers["notional"].quantize(Q8)), "isolatedWallet": "0",
        "updateTime": position.update_time,
    }


def position_v3(account: Account, position: Position, mark: Decimal, taker_fee: Decimal) -> dict:
    numbers = _position_numbers(account, position, mark)
    order_margin = symbol_order_margin(account, position.symbol, mark)
    return {
        "symbol": position.symbol, "positionSide": position.side,
        "positionAmt": _qty(position.symbol, position.amount), "entryPrice": _entry(position.entry),
        "breakEvenPrice": _break_even(position, taker_fee), "markPrice": money(mark),
        "unRealizedProfit": money(numbers["unrealized"]), "liquidationPrice": "0", "isolatedMargin": "0",
        "notional": money(numbers["notional"]), "marginAsset": "USDT", "isolatedWallet": "0",
        "initialMargin": money(numbers["initial"] + order_margin), "maintMargin": money(numbers["maint"]),
        "positionInitialMargin": money(numbers["initial"]), "openOrderInitialMargin": money(order_margin),
        "adl": 0, "bidNotional": "0", "askNotional": "0", "updateTime": position.update_time,
    }


def positions_v2(account: Account, symbols: list[str], mark_of: MarkOf, taker_fee: Decimal) -> list[dict]:
    return [position_v2(account, account.position(s, side), mark_of(s), taker_fee)
            for s in symbols for side in _sides(account)]


def active_positions(account: Account, symbols: list[str]) -> list[Position]:
    """Positions with size or open orders, which is all the v3 endpoints report."""
    active = []
    for symbol in symbols:
        ordered = {o.position_side for o in account.open_orders(symbol)}
        active += [account.position(symbol, side) for side in _sides(account)
                   if account.position(symbol, side).amount != ZERO or side in ordered]
    return active


def positions_v3(account: Account, symbols: list[str], mark_of: MarkOf, taker_fee: Decimal) -> list[dict]:
    return [position_v3(account, p, mark_of(p.symbol), taker_fee) for p in active_positions(account, symbols)]


def _totals(snap: Snapshot) -> dict:
    return {
        "totalInitialMargin": money(snap.initial_margin), "totalMaintMargin": money(snap.maint_margin),
        "totalWalletBalance": money(snap.wallet), "totalUnrealizedProfit": money(snap.unrealized),
        "totalMarginBalance": money(snap.margin_balance),
        "totalPositionInitialMargin": money(snap.position_margin),
        "totalOpenOrderInitialMargin": money(snap.order_margin),
        "totalCrossWalletBalance": money(snap.wallet), "totalCrossUnPnl": money(snap.unrealized),
        "availableBalance": money(snap.available), "maxWithdrawAmount": money(_withdrawable(snap)),
    }


def _withdrawable(snap: Snapshot) -> Decimal:
    return max(ZERO, min(snap.wallet, snap.available))


def _asset(name: str, snap: Snapshot | None, update_time: int, v2: bool) -> dict:
    zero = Snapshot(ZERO, ZERO, ZERO, ZERO, ZERO)
    s = snap or zero
    body = {
        "asset": name, "walletBalance": money(s.wallet), "unrealizedProfit": money(s.unrealized),
        "marginBalance": money(s.margin_balance), "maintMargin": money(s.maint_margin),
        "initialMargin": money(s.initial_margin), "positionInitialMargin": money(s.position_margin),
        "openOrderInitialMargin": money(s.order_margin), "crossWalletBalance": money(s.wallet),
        "crossUnPnl": money(s.unrealized), "availableBalance": money(s.available),
        "maxWithdrawAmount": money(_withdrawable(s)), "updateTime": update_time if snap else 0,
    }
    if v2:
        body["marginAvailable"] = True
    return body


def account_view(account: Account, snap: Snapshot, mark_of: MarkOf, v2: bool) -> dict:
    assets = [_asset("USDT", snap, account.update_time, v2)] + [_asset(a, None, 0, v2) for a in ZERO_ASSETS]
    body: dict = {}
    if v2:
        body.update(feeTier=0, feeBurn=False, canTrade=True, canDeposit=True, canWithdraw=True, updateTime=0,
                    multiAssetsMargin=False, tradeGroupId=-1)
    body.update(_totals(snap))
    body["assets"] = assets
    body["positions"] = _account_positions(account, mark_of, v2)
    return body


def _account_positions(account: Account, mark_of: MarkOf, v2: bool) -> list[dict]:
    positions = ([account.position(s, side) for s in SYMBOLS for side in _sides(account)] if v2
                 else active_positions(account, list(SYMBOLS)))
    return [_account_position(account, p, mark_of(p.symbol), v2) for p in positions]


def _account_position(account: Account, position: Position, mark: Decimal, v2: bool) -> dict:
    numbers = _position_numbers(account, position, mark)
    order_margin = symbol_order_margin(account, position.symbol, mark)
    body = {
        "symbol": position.symbol, "positionSide": position.side,
        "positionAmt": _qty(position.symbol, position.amount), "unrealizedProfit": money(numbers["unrealized"]),
        "isolatedMargin": money(ZERO), "notional": money(numbers["notional"]), "isolatedWallet": "0",
        "initialMargin": money(numbers["initial"] + order_margin), "maintMargin": money(numbers["maint"]),
        "updateTime": position.update_time,
    }
    if v2:
        leverage = account.leverage_of(position.symbol)
        body.update(positionInitialMargin=money(numbers["initial"]), openOrderInitialMargin=money(order_margin),
                    leverage=str(leverage), isolated=account.margin_type_of(position.symbol) == "ISOLATED",
                    entryPrice=_entry(position.entry), breakEvenPrice=_break_even(position, ZERO),
                    maxNotional=max_notional(leverage), bidNotional="0", askNotional="0")
    return body


def balances(account: Account, snap: Snapshot) -> list[dict]:
    usdt = {
        "accountAlias": ACCOUNT_ALIAS, "asset": "USDT", "balance": money(snap.wallet),
        "crossWalletBalance": money(snap.wallet), "crossUnPnl": money(snap.unrealized),
        "availableBalance": money(snap.available), "maxWithdrawAmount": money(_withdrawable(snap)),
        "marginAvailable": True, "updateTime": account.update_time,
    }
    zeros = [{**usdt, "asset": a, "balance": money(ZERO), "crossWalletBalance": money(ZERO),
              "crossUnPnl": money(ZERO), "availableBalance": money(ZERO), "maxWithdrawAmount": money(ZERO),
              "updateTime": 0} for a in ZERO_ASSETS]
    return [usdt] + zeros


def last_price(symbol: str, mark: Decimal) -> str:
    spec = SYMBOLS[symbol]
    return fixed(to_step(mark, spec.tick_size), spec.price_precision)
