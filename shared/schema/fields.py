"""Field types shared by every stream schema: strict booleans, exact decimals, trade enums.

The seeds' worst parsing bug was the string "false" read as true. Here a boolean accepts
exactly true/false/1/0/yes/no in any case and rejects everything else by name.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
MAX_DECIMAL = Decimal("1e15")
MAX_LEADING_ZEROS = 40  # zeros after the point beyond a number's own digits, at most (1e-41 is the smallest 1)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, (str, bytes)):
        text = value.decode() if isinstance(value, bytes) else value
        word = text.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise ValueError(f"expected one of true/false/1/0/yes/no, got {value!r:.40}")


def parse_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise ValueError("expected a decimal number, got a boolean")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("expected a finite decimal number")
        value = repr(value)
    if isinstance(value, bytes):
        value = value.decode()
    try:
        number = Decimal(str(value).strip()) if isinstance(value, (str, int, Decimal)) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise ValueError(f"expected a finite decimal number, got {value!r:.40}")
    if number.copy_abs() >= MAX_DECIMAL:  # copy_abs: abs() rounds to the context and overflows on 1e999999999
        raise ValueError(f"decimal out of range (|x| < {MAX_DECIMAL:E})")
    _sign, digits, exponent = number.as_tuple()
    if isinstance(exponent, int) and -exponent > len(digits) + MAX_LEADING_ZEROS:
        # Written out (plain notation, as every stream and Binance take it), 1e-999999999 is a billion characters.
        raise ValueError(f"decimal too small to write out (more than {MAX_LEADING_ZEROS} zeros after the point)")
    return number


def _positive(number: Decimal) -> Decimal:
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def _non_negative(number: Decimal) -> Decimal:
    if number < 0:
        raise ValueError("must not be negative")
    return number


def _unit_interval(number: Decimal) -> Decimal:
    if not Decimal(0) <= number <= Decimal(1):
        raise ValueError("must be between 0 and 1")
    return number


MAX_LEVERAGE = 125  # Binance USD-M's highest; a symbol's own brackets may allow less (the exchange then refuses)


def _leverage(number: Decimal) -> Decimal:
    if not 1 <= number <= MAX_LEVERAGE:
        raise ValueError(f"must be between 1 and {MAX_LEVERAGE}")
    return number


def _whole(number: Decimal) -> Decimal:
    if number != number.to_integral_value():
        raise ValueError("must be a whole number (the exchange sets leverage in whole steps)")
    return number


def upper_enum_input(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    return value.strip().upper() if isinstance(value, str) else value


StrictBool = Annotated[bool, BeforeValidator(parse_bool)]
Dec = Annotated[Decimal, BeforeValidator(parse_decimal)]
PositiveDec = Annotated[Decimal, BeforeValidator(parse_decimal), AfterValidator(_positive)]
NonNegativeDec = Annotated[Decimal, BeforeValidator(parse_decimal), AfterValidator(_non_negative)]
UnitDec = Annotated[Decimal, BeforeValidator(parse_decimal), AfterValidator(_unit_interval)]
IntentLeverage = Annotated[Decimal, BeforeValidator(parse_decimal), AfterValidator(_leverage)]
Leverage = Annotated[Decimal, BeforeValidator(parse_decimal), AfterValidator(_leverage), AfterValidator(_whole)]
Symbol = Annotated[
    str, BeforeValidator(upper_enum_input), Field(pattern=r"^[A-Z0-9]{2,24}$")
]
PlanId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:\-]{1,128}$")]
ShortText = Annotated[str, Field(max_length=256)]


class Side(str, Enum):
    BUY = "BUY"
    SELL = "SELL"

    @property
    def opposite(self) -> "Side":
        return Side.SELL if self is Side.BUY else Side.BUY


class Decision(str, Enum):
    """EXECUTE acts; the others are recorded and never executed."""

    EXECUTE = "EXECUTE"
    SKIP = "SKIP"
    HOLD = "HOLD"
    BLOCKED = "BLOCKED"


class Action(str, Enum):
    OPEN = "OPEN"
    CLOSE = "CLOSE"
    FULL_CLOSE_PROPOSED = "FULL_CLOSE_PROPOSED"
    PARTIAL_75 = "PARTIAL_75"
    PARTIAL_50 = "PARTIAL_50"
    PARTIAL_25 = "PARTIAL_25"

    @property
    def is_close(self) -> bool:
        return self is not Action.OPEN

    @property
    def close_fraction(self) -> Decimal:
        """The share of the position a close action takes."""
        return _CLOSE_FRACTIONS[self]


_CLOSE_FRACTIONS = {
    Action.OPEN: Decimal(0),
    Action.CLOSE: Decimal(1),
    Action.FULL_CLOSE_PROPOSED: Decimal(1),
    Action.PARTIAL_75: Decimal("0.75"),
    Action.PARTIAL_50: Decimal("0.50"),
    Action.PARTIAL_25: Decimal("0.25"),
}


class OrderType(str, Enum):
    MARKET = "MARKET"


SideField = Annotated[Side, BeforeValidator(upper_enum_input)]
DecisionField = Annotated[Decision, BeforeValidator(upper_enum_input)]
ActionField = Annotated[Action, BeforeValidator(upper_enum_input)]
OrderTypeField = Annotated[OrderType, BeforeValidator(upper_enum_input)]


def format_decimal(number: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: what Binance and operators read."""
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
