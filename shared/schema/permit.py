"""Permits written by the governor (P3.2) and the position-state brain (P3.3), as JSON values."""

from __future__ import annotations

from decimal import Decimal
from functools import cached_property
from typing import Any

from pydantic import Field

from shared.schema.entry import EntryModel, to_json
from shared.schema.fields import Dec, NonNegativeDec, PlanId, StrictBool, Symbol
from shared.schema.reasons import Reason

PERMIT_JSON_MAX = 8192  # characters of a permit's JSON that a result carries


class Permit(EntryModel):
    plan_id: PlanId
    allow: StrictBool
    symbol: Symbol
    reason: Reason
    context: dict[str, Any] = Field(default_factory=dict)
    created_at: float
    plan_digest: str | None = Field(default=None, max_length=64)  # Plan.digest of the plan decided on

    def to_json(self) -> str:
        return to_json(self.model_dump(mode="python"))

    @cached_property
    def wire_json(self) -> str:
        """The permit's JSON as a result carries it: the text it was decoded from (shared.permits.decode puts
        it here; what the gate wrote, byte for byte), else to_json(). Kept in the instance's __dict__, which
        pydantic leaves out of dumps, equality and repr; permits are never copied with changes."""
        return self.to_json()


class P32Permit(Permit):
    """Governor verdict: trading state, fund caps, cooldown and rate limits."""

    computed_notional: NonNegativeDec = Decimal(0)
    mark_price: NonNegativeDec | None = None


class P33Permit(Permit):
    """Position-state verdict; safe_qty is 0 for opens (the executor uses the plan qty)."""

    safe_qty: NonNegativeDec = Decimal(0)
    exchange_position_amt: Dec = Decimal(0)
    ledger_amt: Dec = Decimal(0)
