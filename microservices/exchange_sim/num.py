"""Decimal parsing and Binance-style string formatting."""

from __future__ import annotations

import functools
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation

ZERO = Decimal(0)
_DECIMAL_RE = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)$")


def parse_decimal(raw: str | None) -> Decimal | None:
    """Strictly parse a wire decimal; None when absent or malformed (no exponents, no NaN)."""
    if raw is None:
        return None
    text = raw.strip()
    if not _DECIMAL_RE.match(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -int(exponent))


@functools.lru_cache(maxsize=128)
def _quantum(shown: int) -> Decimal:
    return Decimal(1).scaleb(-shown)


def fixed(value: Decimal, decimals: int) -> str:
    """Fixed-point string with at least `decimals` places and never losing digits."""
    shown = value.quantize(_quantum(decimals))
    if shown != value:
        # it lost digits, so the value has more than `decimals` places: show all of them
        shown = value.quantize(_quantum(places(value)))
    return format(shown, "f")


def exact(value: Decimal) -> str:
    """Shortest plain string of a decimal ("0.001", "88000", never "1E+1")."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def to_step(value: Decimal, step: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
    return (value / step).to_integral_value(rounding=rounding) * step


def floor_step(value: Decimal, step: Decimal) -> Decimal:
    return to_step(value, step, ROUND_FLOOR)


def ceil_step(value: Decimal, step: Decimal) -> Decimal:
    return to_step(value, step, ROUND_CEILING)


def is_multiple(value: Decimal, step: Decimal) -> bool:
    return value % step == ZERO
