"""A trade intent from a signal producer (quantum:stream:trade.intent)."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.schema.entry import EntryModel
from shared.schema.fields import PositiveDec, ShortText, SideField, Symbol, UnitDec


class TradeIntent(EntryModel):
    symbol: Symbol
    side: SideField
    position_size_usd: PositiveDec
    leverage: PositiveDec = Field(default=1)
    entry_price: PositiveDec
    stop_loss: PositiveDec | None = None
    take_profit: PositiveDec | None = None
    confidence: UnitDec
    timestamp: ShortText | None = None
    intent_id: ShortText | None = None
    source: ShortText = "intent"

    @model_validator(mode="after")
    def _leverage_in_range(self) -> "TradeIntent":
        if not 1 <= self.leverage <= 125:
            raise ValueError("leverage must be between 1 and 125")
        return self
