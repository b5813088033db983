"""The tradable USD-M perpetuals and their exchange filters."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property

D = Decimal


@dataclass(frozen=True)
class SymbolSpec:
    symbol: str
    base: str
    start_price: Decimal
    tick_size: Decimal
    min_price: Decimal
    max_price: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    market_max_qty: Decimal
    min_notional: str
    max_leverage: int
    percent_up: Decimal = D("1.0500")
    percent_down: Decimal = D("0.9500")
    maint_margin_rate: Decimal = D("0.004")
    price_decimals: int | None = None

    # The cached properties below depend only on frozen fields; every order checks or formats with them.

    @cached_property
    def price_precision(self) -> int:
        # BTCUSDT really advertises pricePrecision 2 with a 0.10 tick, so it may differ from the tick.
        if self.price_decimals is not None:
            return self.price_decimals
        return -self.tick_size.normalize().as_tuple().exponent if self.tick_size < 1 else 0

    @cached_property
    def quantity_precision(self) -> int:
        return -self.step_size.normalize().as_tuple().exponent if self.step_size < 1 else 0

    @cached_property
    def notional_floor(self) -> Decimal:
        return D(self.min_notional)


def _spec(symbol, price, tick, min_price, max_price, step, max_qty, market_max, notional, lev, **kw):
    return SymbolSpec(
        symbol=symbol, base=symbol.removesuffix("USDT"), start_price=D(price), tick_size=D(tick),
        min_price=D(min_price), max_price=D(max_price), step_size=D(step), min_qty=D(step),
        max_qty=D(max_qty), market_max_qty=D(market_max), min_notional=notional, max_leverage=lev, **kw,
    )


ALT = {"percent_up": D("1.1500"), "percent_down": D("0.8500"), "maint_margin_rate": D("0.010")}

SYMBOLS: dict[str, SymbolSpec] = {
    s.symbol: s
    for s in (
        _spec("BTCUSDT", "88000.00", "0.10", "261.10", "809484", "0.001", "1000", "120", "100", 125, price_decimals=2),
        _spec("ETHUSDT", "2920.00", "0.01", "39.86", "306177", "0.001", "10000", "2000", "20", 125),
        _spec("TRXUSDT", "0.29660", "0.00001", "0.00132", "20000", "1", "10000000", "5000000", "5", 75, **ALT),
        _spec("LTCUSDT", "78.50", "0.01", "3.61", "100000", "0.001", "100000", "5000", "5", 75, **ALT),
        _spec("LINKUSDT", "12.500", "0.001", "0.460", "100000", "0.01", "200000", "50000", "5", 75, **ALT),
        _spec("SANDUSDT", "0.11500", "0.00001", "0.00920", "2000", "1", "10000000", "2000000", "5", 75, **ALT),
        _spec("MANAUSDT", "0.1200", "0.0001", "0.0113", "2000", "1", "10000000", "1000000", "5", 75, **ALT),
        _spec("GALAUSDT", "0.006500", "0.000001", "0.000374", "200", "1", "200000000", "50000000", "5", 75, **ALT),
        _spec("XMRUSDT", "420.00", "0.01", "6.53", "100000", "0.001", "10000", "1000", "5", 50, **ALT),
        _spec("SEIUSDT", "0.12000", "0.00001", "0.00680", "2000", "1", "10000000", "2000000", "5", 75, **ALT),
        _spec("STRKUSDT", "0.08500", "0.00001", "0.00640", "2000", "0.1", "10000000", "2000000", "5", 75, **ALT),
        _spec("TONUSDT", "1.5000", "0.0001", "0.0500", "2000", "0.1", "10000000", "2000000", "5", 75, **ALT),
        _spec("NEARUSDT", "1.550", "0.001", "0.085", "2000", "1", "5000000", "500000", "5", 75, **ALT),
        _spec("AVAXUSDT", "12.500", "0.001", "0.350", "100000", "1", "1000000", "100000", "5", 75, **ALT),
    )
}


def price_filters(spec: SymbolSpec) -> list[dict]:
    """The filters[] array of one exchangeInfo symbol, shaped like real Binance."""
    return [
        {"filterType": "PRICE_FILTER", "minPrice": str(spec.min_price), "maxPrice": str(spec.max_price),
         "tickSize": str(spec.tick_size)},
        {"filterType": "LOT_SIZE", "minQty": str(spec.min_qty), "maxQty": str(spec.max_qty),
         "stepSize": str(spec.step_size)},
        {"filterType": "MARKET_LOT_SIZE", "minQty": str(spec.min_qty), "maxQty": str(spec.market_max_qty),
         "stepSize": str(spec.step_size)},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
        {"filterType": "MIN_NOTIONAL", "notional": spec.min_notional},
        {"filterType": "PERCENT_PRICE", "multiplierUp": str(spec.percent_up),
         "multiplierDown": str(spec.percent_down), "multiplierDecimal": "4"},
    ]


def symbol_info(spec: SymbolSpec) -> dict:
    return {
        "symbol": spec.symbol, "pair": spec.symbol, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base, "quoteAsset": "USDT", "marginAsset": "USDT",
        "pricePrecision": spec.price_precision, "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "underlyingSubType": [],
        "settlePlan": 0, "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
        "maxMoveOrderLimit": 10000, "filters": price_filters(spec),
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                       "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        "permissionSets": ["GRID", "COPY"],
    }


def exchange_info(server_time: int, weight_limit: int, order_limit: int, order_limit_10s: int) -> dict:
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": order_limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": order_limit_10s},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [symbol_info(spec) for spec in SYMBOLS.values()],
    }

