"""Typed models of every stream entry and permit the fleet exchanges."""

from shared.schema.entry import EntryError, EntryModel, to_json
from shared.schema.fields import Action, Decision, OrderType, Side, format_decimal
from shared.schema.harvest import CalibratedProposal, HarvestProposal, HeatBucket
from shared.schema.intent import TradeIntent
from shared.schema.permit import P32Permit, P33Permit
from shared.schema.plan import Plan
from shared.schema.reasons import Reason
from shared.schema.result import PlanResult

__all__ = [
    "Action",
    "CalibratedProposal",
    "Decision",
    "EntryError",
    "EntryModel",
    "HarvestProposal",
    "HeatBucket",
    "OrderType",
    "P32Permit",
    "P33Permit",
    "Plan",
    "PlanResult",
    "Reason",
    "Side",
    "TradeIntent",
    "format_decimal",
    "to_json",
]
