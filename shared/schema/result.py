"""The one terminal result every plan ends in (quantum:stream:apply.result)."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.schema.entry import EntryModel
from shared.schema.fields import NonNegativeDec, PlanId, ShortText, SideField, StrictBool, Symbol
from shared.schema.permit import PERMIT_JSON_MAX
from shared.schema.reasons import Reason


class PlanResult(EntryModel):
    plan_id: PlanId
    executed: StrictBool
    symbol: Symbol
    side: SideField
    qty: NonNegativeDec
    reduce_only: StrictBool = Field(alias="reduceOnly")
    source: ShortText
    order_id: ShortText | None = None
    client_order_id: ShortText | None = None
    filled_qty: NonNegativeDec | None = None
    avg_price: NonNegativeDec | None = None
    order_status: ShortText | None = None
    reason: Reason | None = None
    detail: str | None = Field(default=None, max_length=4096)
    p32_permit: str | None = Field(default=None, max_length=PERMIT_JSON_MAX)
    p33_permit: str | None = Field(default=None, max_length=PERMIT_JSON_MAX)
    mode: ShortText | None = None
    ts_ms: int | None = None
    exchange_ts_ms: int | None = None  # the exchange's updateTime of the order: when the fill happened there

    @model_validator(mode="after")
    def _executed_has_order_else_reason(self) -> "PlanResult":
        if self.executed and not self.order_id:
            raise ValueError("an executed result needs order_id")
        if not self.executed and self.reason is None:
            raise ValueError("a result that did not execute needs a reason")
        return self
