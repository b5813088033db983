"""Typed, Decimal-valued results of the exchange calls the fleet uses, and their payload parsers."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shared.exchange.filters import ZERO, to_decimal

# Binance: newClientOrderId / origClientOrderId must match ^[\.A-Z\:/a-z0-9_-]{1,36}$.
CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
FINAL_ORDER_STATUSES = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED", "EXPIRED_IN_MATCH"})


class Side(str, enum.Enum):
    BUY = "BUY"
    SELL = "SELL"


class PositionSide(str, enum.Enum):
    BOTH = "BOTH"
    LONG = "LONG"
    SHORT = "SHORT"


@dataclass(frozen=True)
class MarkPrice:
    symbol: str
    mark_price: Decimal
    index_price: Decimal | None
    funding_rate: Decimal | None
    time_ms: int


@dataclass(frozen=True)
class OrderResult:
    symbol: str
    order_id: int
    client_order_id: str
    side: Side
    position_side: str
    type: str
    status: str
    orig_qty: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    cum_quote: Decimal | None
    reduce_only: bool
    update_time_ms: int

    @property
    def filled(self) -> bool:
        return self.status == "FILLED"

    @property
    def final(self) -> bool:
        return self.status in FINAL_ORDER_STATUSES


@dataclass(frozen=True)
class Position:
    symbol: str
    position_side: str
    amount: Decimal  # signed: negative is short in one-way mode
    entry_price: Decimal
    mark_price: Decimal | None
    unrealized_pnl: Decimal
    liquidation_price: Decimal | None
    notional: Decimal | None
    update_time_ms: int


@dataclass(frozen=True)
class AccountSummary:
    total_wallet_balance: Decimal
    total_unrealized_profit: Decimal
    total_margin_balance: Decimal
    available_balance: Decimal
    total_initial_margin: Decimal | None
    total_maint_margin: Decimal | None
    max_withdraw_amount: Decimal | None


@dataclass(frozen=True)
class AssetBalance:
    asset: str
    balance: Decimal
    available_balance: Decimal
    cross_wallet_balance: Decimal | None
    cross_unrealized_pnl: Decimal | None


@dataclass(frozen=True)
class LeverageResult:
    symbol: str
    leverage: int
    max_notional: Decimal | None


def check_client_order_id(client_order_id: str) -> str:
    if not CLIENT_ORDER_ID.match(client_order_id):
        raise ValueError(f"client order id must match {CLIENT_ORDER_ID.pattern}: {client_order_id!r}")
    return client_order_id


def format_decimal(value: Decimal) -> str:
    """Plain notation for the wire; str(Decimal) may give '1E-7', which the exchange rejects."""
    return format(value, "f")


def _opt(payload: Mapping[str, Any], key: str) -> Decimal | None:
    value = payload.get(key)
    return None if value in (None, "") else to_decimal(value)


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def parse_mark_price(p: Mapping[str, Any]) -> MarkPrice:
    return MarkPrice(
        symbol=p["symbol"], mark_price=to_decimal(p["markPrice"]), index_price=_opt(p, "indexPrice"),
        funding_rate=_opt(p, "lastFundingRate"), time_ms=int(p.get("time", 0)),
    )


def parse_order(p: Mapping[str, Any]) -> OrderResult:
    executed = to_decimal(p.get("executedQty", "0"))
    return OrderResult(
        symbol=p["symbol"], order_id=int(p["orderId"]), client_order_id=p["clientOrderId"],
        side=Side(p["side"]), position_side=p.get("positionSide", PositionSide.BOTH.value),
        type=p.get("type", ""), status=p["status"], orig_qty=to_decimal(p["origQty"]),
        executed_qty=executed, avg_price=_avg_price(p, executed),
        cum_quote=_opt(p, "cumQuote"), reduce_only=_flag(p.get("reduceOnly", False)),
        update_time_ms=int(p.get("updateTime", 0)),
    )


def _avg_price(p: Mapping[str, Any], executed: Decimal) -> Decimal:
    """The fill's average price: avgPrice, else cumQuote / executedQty (Binance marks avgPrice and cumQuote of the
    new-order reply "to be removed"). A fill with neither is malformed, not a fill at 0 (found in review: the ledger
    recorded an open's entry price as 0, and reconcile, comparing amounts, never mended it): for an order the
    caller then looks the order up (OutcomeUnknown), whose query reply carries avgPrice."""
    avg = _opt(p, "avgPrice")
    if executed == ZERO or (avg is not None and avg > ZERO):
        return avg if avg is not None else ZERO
    quote = _opt(p, "cumQuote")
    if quote is None or quote <= ZERO:
        raise ValueError(f"executedQty {executed} without avgPrice or cumQuote")
    return quote / executed


def parse_position(p: Mapping[str, Any]) -> Position:
    return Position(
        symbol=p["symbol"], position_side=p.get("positionSide", PositionSide.BOTH.value),
        amount=to_decimal(p["positionAmt"]), entry_price=to_decimal(p.get("entryPrice", "0")),
        mark_price=_opt(p, "markPrice"), unrealized_pnl=to_decimal(p.get("unRealizedProfit", "0")),
        liquidation_price=_opt(p, "liquidationPrice"), notional=_opt(p, "notional"),
        update_time_ms=int(p.get("updateTime", 0)),
    )


def parse_open_positions(payload: list[Mapping[str, Any]]) -> list[Position]:
    positions = (parse_position(p) for p in payload)
    return [p for p in positions if p.amount != ZERO]


def parse_account(p: Mapping[str, Any]) -> AccountSummary:
    return AccountSummary(
        total_wallet_balance=to_decimal(p["totalWalletBalance"]),
        total_unrealized_profit=to_decimal(p["totalUnrealizedProfit"]),
        total_margin_balance=to_decimal(p["totalMarginBalance"]),
        available_balance=to_decimal(p["availableBalance"]),
        total_initial_margin=_opt(p, "totalInitialMargin"),
        total_maint_margin=_opt(p, "totalMaintMargin"),
        max_withdraw_amount=_opt(p, "maxWithdrawAmount"),
    )


def parse_balance(p: Mapping[str, Any]) -> AssetBalance:
    return AssetBalance(
        asset=p["asset"], balance=to_decimal(p["balance"]),
        available_balance=to_decimal(p["availableBalance"]),
        cross_wallet_balance=_opt(p, "crossWalletBalance"), cross_unrealized_pnl=_opt(p, "crossUnPnl"),
    )


def parse_leverage(p: Mapping[str, Any]) -> LeverageResult:
    return LeverageResult(symbol=p["symbol"], leverage=int(p["leverage"]), max_notional=_opt(p, "maxNotionalValue"))
