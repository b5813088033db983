"""A trade intent from a signal producer (quantum:stream:trade.intent)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, model_validator

from shared.schema.entry import EntryModel
from shared.schema.fields import (IntentLeverage, PositiveDec, ShortText, Side, SideField, Symbol, UnitDec,
                                  format_decimal, parse_decimal)

def _as_text(value: object) -> object:
    """A JSON number reads as the same text a flat field gives: found in review, a fraction was refused in JSON form
    while the flat form was accepted, and 1767295800000 in JSON and "1767295800000" flat gave two plan ids for one
    intent. parse_decimal first: 1e999999999 (or 1e-999999999) written out is a billion characters."""
    if isinstance(value, Decimal):
        return format_decimal(parse_decimal(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


ProducerTime = Annotated[ShortText | None, BeforeValidator(_as_text)]


class TradeIntent(EntryModel):
    symbol: Symbol
    side: SideField
    position_size_usd: PositiveDec
    leverage: IntentLeverage | None = None  # None: the account's leverage for the symbol stays as it is
    entry_price: PositiveDec
    stop_loss: PositiveDec | None = None
    take_profit: PositiveDec | None = None
    confidence: UnitDec
    timestamp: ProducerTime = None  # the producer's (ISO text or epoch ms); age is taken from the entry id
    intent_id: ShortText | None = None
    source: ShortText = "intent"

    @model_validator(mode="after")
    def _exits_on_their_sides(self) -> "TradeIntent":
        # A stop on the winning side of the entry (or a target on the losing side) would close the position as
        # soon as it opens (found in a review): refused, naming both.
        losing = -1 if self.side is Side.BUY else 1  # the direction of a loss from the entry
        if self.stop_loss is not None and (self.stop_loss - self.entry_price) * losing <= 0:
            raise ValueError(f"stop_loss {self.stop_loss} is not on the losing side of entry_price "
                             f"{self.entry_price} for a {self.side.value}")
        if self.take_profit is not None and (self.take_profit - self.entry_price) * losing >= 0:
            raise ValueError(f"take_profit {self.take_profit} is not on the winning side of entry_price "
                             f"{self.entry_price} for a {self.side.value}")
        return self
