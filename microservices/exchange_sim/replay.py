"""Loading Binance kline CSVs (data.binance.vision layout) to replay close prices as marks."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

from .num import parse_decimal
from .symbols import SYMBOLS

CLOSE_COLUMN = 4


def _symbol_from_name(path: Path) -> str | None:
    candidate = path.stem.split("-")[0].upper()
    return candidate if candidate in SYMBOLS else None


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return [row for row in csv.reader(handle) if row]


def load_file(path: Path) -> dict[str, list[Decimal]]:
    rows = _rows(path)
    header = [c.strip().lower() for c in rows[0]] if rows and parse_decimal(rows[0][0]) is None else None
    body = rows[1:] if header else rows
    close_at = header.index("close") if header and "close" in header else CLOSE_COLUMN
    symbol_at = header.index("symbol") if header and "symbol" in header else None
    fallback = _symbol_from_name(path)
    series: dict[str, list[Decimal]] = {}
    for row in body:
        symbol = row[symbol_at].strip().upper() if symbol_at is not None else fallback
        price = parse_decimal(row[close_at]) if len(row) > close_at else None
        if symbol in SYMBOLS and price is not None and price > 0:
            series.setdefault(symbol, []).append(price)
    return series


def load_replay(path: Path | None) -> dict[str, list[Decimal]]:
    """Close prices per symbol from one CSV or every CSV in a directory; tick i replays row i."""
    if path is None:
        return {}
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    merged: dict[str, list[Decimal]] = {}
    for file in files:
        for symbol, prices in load_file(file).items():
            merged.setdefault(symbol, []).extend(prices)
    return merged
