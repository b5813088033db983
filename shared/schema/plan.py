"""A plan on quantum:stream:apply.plan: what intent-bridge, apply-layer and operators send."""

from __future__ import annotations

import hashlib

from pydantic import Field, PrivateAttr, model_validator

from shared.schema.entry import EntryModel
from shared.schema.fields import (
    Action,
    ActionField,
    Decision,
    DecisionField,
    OrderType,
    OrderTypeField,
    PlanId,
    PositiveDec,
    ShortText,
    SideField,
    StrictBool,
    Symbol,
    UnitDec,
)

DIGEST_CHARS = 32


class Plan(EntryModel):
    plan_id: PlanId
    decision: DecisionField
    symbol: Symbol
    side: SideField
    type: OrderTypeField = OrderType.MARKET
    qty: PositiveDec
    reduce_only: StrictBool | None = Field(default=None, alias="reduceOnly")
    action: ActionField | None = None
    kill_score: UnitDec | None = None
    source: ShortText = "unknown"
    leverage: PositiveDec | None = None
    stop_loss: PositiveDec | None = None
    take_profit: PositiveDec | None = None
    proposal_id: ShortText | None = None
    _digest: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _action_agrees_with_reduce_only(self) -> "Plan":
        # One is inferred from the other; a plan that says both and disagrees is refused.
        if self.action is None:
            inferred = Action.CLOSE if self.reduce_only else Action.OPEN
            object.__setattr__(self, "action", inferred)
        if self.reduce_only is None:
            object.__setattr__(self, "reduce_only", self.action.is_close)
        if self.action.is_close != self.reduce_only:
            raise ValueError(f"action {self.action.value} contradicts reduceOnly={str(self.reduce_only).lower()}")
        # pydantic's JSON of the fields in their declared order: the same text in every daemon of a release
        self._digest = hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:DIGEST_CHARS]
        return self

    @property
    def digest(self) -> str:
        """The plan as its producer wrote it, in 32 hex characters: both permits carry the digest of the plan
        they were decided for, and the executor sends only a plan with that digest. Taken once the plan is
        validated, so a copy with other values (the governor's step-rounded quantity) keeps it."""
        return self._digest

    @property
    def is_close(self) -> bool:
        return bool(self.reduce_only)

    @property
    def is_executable(self) -> bool:
        return self.decision is Decision.EXECUTE
