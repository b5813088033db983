"""Trade intent → OPEN plan. Pure translation plus one idempotent write.

The plan id is a hash of the intent's content (or its intent_id), so the same intent read
twice becomes the same plan, and the plan is written at most once. An intent that waited in
the stream longer than BRIDGE_INTENT_MAX_AGE_SEC is dead-lettered (intent_expired), never planned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import redis
from prometheus_client import Counter
from pydantic import ValidationError

from microservices.intent_bridge.settings import BridgeSettings
from shared import freshness, keys
from shared.exchange.filter_cache import FilterCache
from shared.exchange.filters import SymbolRules, round_qty_down
from shared.freshness import wall_ms
from shared.logging import get_logger
from shared.once import xadd_once
from shared.runtime.consumer import Entry, Rejected
from shared.schema import Action, Decision, Plan, TradeIntent, to_json

INTENTS = Counter("quantum_bridge_intents_total", "Trade intents by outcome", ["outcome"])
SOURCE = "intent_bridge"
# Every outcome (handle's, and to_plan's Skipped reasons) at 0 from the start: increase() cannot count the sample
# a series is born with, and QuantumIntentsWithoutPlans reads the first plan after a start that way.
INTENT_EXPIRED, INTENT_TIME_INVALID = "intent_expired", "intent_time_invalid"
INTENT_OUTCOMES = ("planned", "duplicate", "symbol_not_allowed", "below_confidence_floor", INTENT_EXPIRED,
                   INTENT_TIME_INVALID)
for _outcome in INTENT_OUTCOMES:
    INTENTS.labels(outcome=_outcome)


@dataclass(frozen=True)
class Skipped:
    reason: str
    detail: dict[str, str]


def plan_id_for(intent: TradeIntent) -> str:
    if intent.intent_id:
        return "ib-" + hashlib.sha256(intent.intent_id.encode()).hexdigest()[:20]
    canonical = to_json(intent.model_dump(mode="python", exclude={"source"}))
    return "ib-" + hashlib.sha256(canonical.encode()).hexdigest()[:20]


def to_plan(intent: TradeIntent, rules: SymbolRules | None, settings: BridgeSettings) -> Plan | Skipped:
    if intent.symbol not in settings.allowlist:
        return Skipped("symbol_not_allowed", {"symbol": intent.symbol})
    if intent.confidence < settings.bridge_min_confidence:
        return Skipped("below_confidence_floor", {"confidence": str(intent.confidence), "floor": str(settings.bridge_min_confidence)})
    if rules is None:
        raise Rejected("unknown_symbol", {"symbol": intent.symbol})
    try:
        qty = round_qty_down(rules, intent.position_size_usd / intent.entry_price, market=True)
        if qty <= 0:
            raise Rejected("size_below_one_step", {"position_size_usd": str(intent.position_size_usd),
                                                   "step": str(rules.market_step_size)})
        return Plan(
            plan_id=plan_id_for(intent), decision=Decision.EXECUTE, symbol=intent.symbol, side=intent.side, qty=qty,
            reduce_only=False, action=Action.OPEN, source=SOURCE, leverage=_whole_leverage(intent),
            stop_loss=intent.stop_loss, take_profit=intent.take_profit,
        )
    except ValidationError as exc:  # each field valid, the plan they make not (a size out of range): never will be
        raise Rejected("invalid_plan", {".".join(map(str, error["loc"])) or "plan": error["msg"]
                                        for error in exc.errors(include_url=False, include_input=False)}) from None
    except ArithmeticError as exc:
        raise Rejected("invalid_plan", {"qty": f"not computable ({exc.__class__.__name__})"}) from None


def _whole_leverage(intent: TradeIntent) -> Decimal | None:
    """The exchange sets whole leverage: a fraction goes down (2.5 -> 2), asking for more margin, never less."""
    return None if intent.leverage is None else intent.leverage.to_integral_value(rounding=ROUND_FLOOR)


class IntentBridge:
    def __init__(self, client: redis.Redis, filters: FilterCache, settings: BridgeSettings,
                 clock: Callable[[], int] = wall_ms):
        self.r = client
        self.filters = filters
        self.settings = settings
        self.clock = clock
        self.log = get_logger(component="intent_bridge")

    def handle(self, intent: TradeIntent, entry: Entry) -> None:
        self.log.info("INTENT_RECEIVED", stream_id=entry.entry_id, symbol=intent.symbol, side=intent.side.value,
                      confidence=str(intent.confidence), size_usd=str(intent.position_size_usd))
        self._check_fresh(intent, entry)
        plan = to_plan(intent, self.filters.find(intent.symbol), self.settings)
        if isinstance(plan, Skipped):
            INTENTS.labels(outcome=plan.reason).inc()
            self.log.info("INTENT_SKIPPED", stream_id=entry.entry_id, reason=plan.reason, **plan.detail)
            return
        written = publish_once(self.r, plan)
        INTENTS.labels(outcome="planned" if written else "duplicate").inc()
        self.log.info("PLAN_PUBLISHED" if written else "PLAN_ALREADY_PUBLISHED", plan_id=plan.plan_id,
                      symbol=plan.symbol, side=plan.side.value, qty=str(plan.qty))

    def _check_fresh(self, intent: TradeIntent, entry: Entry) -> None:
        """Its age from when Redis added it (the producer's own timestamp is another host's clock)."""
        try:
            freshness.check_fresh(freshness.entry_id_ms(entry.entry_id), self.clock(), self.settings.intent_max_age_ms,
                                  INTENT_EXPIRED, INTENT_TIME_INVALID,
                                  {"symbol": intent.symbol, "side": intent.side.value, "measured_from": "entry_id"})
        except Rejected as refused:
            INTENTS.labels(outcome=refused.reason).inc()
            raise


def publish_once(client: redis.Redis, plan: Plan) -> bool:
    """XADD the plan unless it was already written; atomic against concurrent bridges."""
    return xadd_once(client, keys.bridge_intent(plan.plan_id), keys.Stream.APPLY_PLAN, plan.to_fields())
