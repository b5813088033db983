"""Exit proposals (harvest.proposal) and their heat-calibrated form (harvest.calibrated)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

from pydantic import BeforeValidator

from shared.schema.entry import EntryModel
from shared.schema.fields import (
    ActionField,
    Dec,
    PlanId,
    PositiveDec,
    ShortText,
    StrictBool,
    Symbol,
    UnitDec,
    upper_enum_input,
)


class HeatBucket(str, Enum):
    COLD = "COLD"
    WARM = "WARM"
    HOT = "HOT"


HeatBucketField = Annotated[HeatBucket, BeforeValidator(upper_enum_input)]


class HarvestProposal(EntryModel):
    # Like a plan id (found in review: an empty or blank one made every such proposal the same plan, and the second,
    # on any symbol, was acked as a duplicate).
    proposal_id: PlanId
    symbol: Symbol
    action: ActionField
    kill_score: UnitDec
    r_multiple: Dec
    reason: ShortText
    position_amt: Dec
    entry_price: PositiveDec
    mark_price: PositiveDec
    state: ShortText = ""
    ts_ms: int | None = None


class CalibratedProposal(HarvestProposal):
    original_action: ActionField
    heat: UnitDec
    heat_bucket: HeatBucketField
    downgraded: StrictBool
    calibration_reason: ShortText
