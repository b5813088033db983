"""Kline bars built from the simulated mark-price path."""

from __future__ import annotations

from decimal import Decimal

from . import errors
from .num import fixed, to_step
from .prices import PriceBook, unit
from .symbols import SYMBOLS, SymbolSpec

MINUTE = 60_000
INTERVALS = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE, "6h": 360 * MINUTE, "8h": 480 * MINUTE,
    "12h": 720 * MINUTE, "1d": 1440 * MINUTE, "3d": 3 * 1440 * MINUTE, "1w": 7 * 1440 * MINUTE,
}
SAMPLES = 8
EXACT_SCAN_TICKS = 5_000


def kline_weight(limit: int) -> int:
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def parse_query(params: dict[str, str]) -> tuple[str, int, int, int | None, int | None]:
    symbol = params.get("symbol")
    if not symbol:
        raise errors.mandatory_missing("symbol")
    if symbol not in SYMBOLS:
        raise errors.invalid_symbol()
    interval = params.get("interval")
    if not interval:
        raise errors.mandatory_missing("interval")
    if interval not in INTERVALS:
        raise errors.invalid_interval()
    limit = _int(params, "limit") or 500
    return symbol, INTERVALS[interval], min(max(limit, 1), 1500), _int(params, "startTime"), _int(params, "endTime")


def _int(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise errors.invalid_param(name)
    return int(raw)


def open_times(step: int, limit: int, start: int | None, end: int | None, now: int) -> list[int]:
    last = min(end if end is not None else now, now) // step * step
    if start is None:
        return [t for t in range(last - (limit - 1) * step, last + 1, step)]
    first = start // step * step
    return [t for t in range(first, last + 1, step)][:limit]


def _extremes(book: PriceBook, symbol: str, opened: int, closed: int) -> tuple[Decimal, Decimal]:
    first, last = book.tick(opened), book.tick(closed)
    if opened >= book.t0 and last - first <= EXACT_SCAN_TICKS:
        return book.extremes(symbol, first, last)
    points = [book.price_at(symbol, opened + (closed - opened) * i // SAMPLES) for i in range(SAMPLES + 1)]
    return min(points), max(points)


def _base_volume(spec: SymbolSpec, step: int) -> Decimal:
    # roughly 2M USDT traded per minute, whatever the price level
    return Decimal(2_000_000) / spec.start_price * step / MINUTE


def bar(book: PriceBook, symbol: str, opened: int, step: int, now: int) -> list:
    spec = SYMBOLS[symbol]
    close_time = opened + step - 1
    closed = min(close_time, now)
    prices = [book.price_at(symbol, opened), book.price_at(symbol, closed)]
    low, high = _extremes(book, symbol, opened, closed)
    low, high = min(low, *prices), max(high, *prices)
    shown = [fixed(to_step(p, spec.tick_size), spec.price_precision) for p in (prices[0], high, low, prices[1])]
    volume = to_step(_base_volume(spec, step) * (1 + unit(book.seed, symbol, opened, "vol")), spec.step_size)
    quote = (volume * prices[1]).quantize(Decimal("1E-5"))
    trades = int(volume / spec.step_size) // 7 + 1
    taker = to_step(volume / 2, spec.step_size)
    return [opened, *shown, fixed(volume, spec.quantity_precision), close_time, fixed(quote, 5), trades,
            fixed(taker, spec.quantity_precision), fixed((quote / 2).quantize(Decimal("1E-5")), 5), "0"]


def klines(book: PriceBook, params: dict[str, str], now: int) -> list[list]:
    symbol, step, limit, start, end = parse_query(params)
    return [bar(book, symbol, opened, step, now) for opened in open_times(step, limit, start, end, now)]
