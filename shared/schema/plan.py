"""A plan on quantum:stream:apply.plan: what intent-bridge, apply-layer and operators send."""

from __future__ import annotations

import hashlib
from functools import cached_property

from pydantic import Field, model_validator

from shared.schema.entry import EntryModel
from shared.schema.fields import (
    Action,
    ActionField,
    Decision,
    DecisionField,
    Leverage,
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
    leverage: Leverage | None = None  # an open goes out at this leverage (the executor sets it first); None: as is
    stop_loss: PositiveDec | None = None
    take_profit: PositiveDec | None = None
    proposal_id: ShortText | None = None

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
        # Taken now, into the instance's __dict__ where `digest` finds it (a copy keeps it): see there.
        self.__dict__["digest"] = self._digest_of_fields()
        return self

    @cached_property
    def digest(self) -> str:
        """The plan as its producer wrote it, in 32 hex characters: both permits carry the digest of the plan
        they were decided for, and the executor sends only a plan with that digest. Taken once the plan is
        validated, so a copy with other values (the governor's step-rounded quantity) keeps it. Held in the
        instance's __dict__, not as a pydantic private attribute: reading one of those goes through
        BaseModel.__getattr__ (4 us a read on a slow host, several reads a plan in each daemon); pydantic
        leaves keys that are not fields out of dumps, equality and repr."""
        return self._digest_of_fields()  # reached only by an instance built without validation

    def _digest_of_fields(self) -> str:
        # pydantic's JSON of the fields in their declared order, by their wire names, leaving out those at their
        # default: the same text in every daemon, and across releases as long as a field added later has a default
        # (plans that do not use it keep their digest). Daemons are restarted one at a time under systemd: with the
        # whole model's JSON, a field added in a release changed every digest, and a new executor refused every
        # permit of an old governor (permit_mismatch) and dead-lettered redeliveries of plans it had ended.
        return hashlib.sha256(self.model_dump_json(by_alias=True, exclude_defaults=True).encode()).hexdigest()[
            :DIGEST_CHARS]

    @cached_property
    def legacy_digest(self) -> str:
        """The digest as versions before 2026-12-08 took it (the whole model's JSON, defaults included), for the plan
        as parsed. An order marker or a result marker an executor of such a version wrote for this plan carries it:
        found in review, a plan whose order was out when the executor was upgraded read as another plan's
        (duplicate_plan) and no entry would ever end it. Remove once no marker of those versions can remain (the
        markers' TTL, 7 days, after every executor runs this version)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:DIGEST_CHARS]

    @property
    def digests(self) -> frozenset[str]:
        """What a marker of this plan may carry: its digest, or the one earlier versions took (legacy_digest)."""
        return frozenset((self.digest, self.legacy_digest))

    @property
    def is_close(self) -> bool:
        return bool(self.reduce_only)

    @property
    def is_executable(self) -> bool:
        return self.decision is Decision.EXECUTE
