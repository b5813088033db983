"""Trade intent → OPEN plan. Pure translation plus one idempotent write.

The plan id is a hash of the intent's content (or its intent_id), so the same intent read
twice becomes the same plan, and the plan is written at most once. The plan's marker holds the
intent's digest: another intent under an intent_id already planned is dead-lettered
(duplicate_intent), not taken for the first. An intent not yet planned that waited in the stream
longer than BRIDGE_INTENT_MAX_AGE_SEC is dead-lettered (intent_expired), never planned.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

import redis
from prometheus_client import Counter
from pydantic import ValidationError

from microservices.intent_bridge.settings import BridgeSettings
from shared import freshness, keys
from shared.exchange.filter_cache import FilterCache
from shared.exchange.filters import SymbolRules, round_qty_down
from shared.freshness import redis_ms
from shared.logging import get_logger
from shared.once import xadd_once
from shared.runtime.consumer import Entry, Rejected
from shared.schema import Action, Decision, Plan, TradeIntent, to_json
from shared.schema.entry import JSON_FIELDS

INTENTS = Counter("quantum_bridge_intents_total", "Trade intents by outcome", ["outcome"])
SOURCE = "intent_bridge"
# Every outcome (handle's, and to_plan's Skipped reasons) at 0 from the start: increase() cannot count the sample
# a series is born with, and QuantumIntentsWithoutPlans reads the first plan after a start that way.
INTENT_EXPIRED, INTENT_TIME_INVALID, DUPLICATE_INTENT = "intent_expired", "intent_time_invalid", "duplicate_intent"
INTENT_OUTCOMES = ("planned", "duplicate", "symbol_not_allowed", "below_confidence_floor", INTENT_EXPIRED,
                   INTENT_TIME_INVALID, DUPLICATE_INTENT)
LEGACY_MARKER = "1"  # written by versions before the marker held the intent's digest
DIGITS = re.compile(r"[0-9]+")
for _outcome in INTENT_OUTCOMES:
    INTENTS.labels(outcome=_outcome)


@dataclass(frozen=True)
class Skipped:
    reason: str
    detail: dict[str, str]


def plan_id_for(intent: TradeIntent) -> str:
    """Its intent_id's hash, else its content's: fields at their default left out, so that a release adding a field
    with a default keeps every plan id (a redelivered intent must find its plan)."""
    if intent.intent_id:
        return "ib-" + hashlib.sha256(intent.intent_id.encode()).hexdigest()[:20]
    return "ib-" + _sha256(_canonical(intent, {"source"}))[:20]


def legacy_plan_ids(intent: TradeIntent, fields: Mapping[str, str], plan_id: str) -> list[str]:
    """The plan ids versions before 2026-12-08 may have given an intent without an intent_id, other than today's: an
    intent planned by such a version and read again by this one is found under them. Those versions hashed the
    defaults too, read an epoch-ms `timestamp` given as a JSON number as a number, and took an event bus's envelope
    `timestamp` when the payload had none (found in review: recomputed from today's model alone, those two were
    missed, and such an intent became a second plan). `plan_id`: today's (plan_id_for). Remove once their markers (7
    days) are gone."""
    if intent.intent_id:
        return []
    dumped = intent.model_dump(mode="python", exclude={"source"})
    stamps: list[object] = [dumped["timestamp"]]
    if isinstance(dumped["timestamp"], str) and DIGITS.fullmatch(dumped["timestamp"]):  # not isdigit: "²" is one
        stamps.append(int(dumped["timestamp"]))
    if dumped["timestamp"] is None and "timestamp" in fields and any(name in fields for name in JSON_FIELDS):
        stamps.append(fields["timestamp"])
    ids = ["ib-" + _sha256(to_json({**dumped, "timestamp": stamp}))[:20] for stamp in stamps]
    return [each for each in dict.fromkeys(ids) if each != plan_id]


def intent_digest(intent: TradeIntent) -> str:
    """What the intent asks for (its producer's source and time left out: a resend of it under its intent_id a moment
    later is the same intent), in 32 hex characters: the plan's marker holds it."""
    return _sha256(_canonical(intent, {"source", "timestamp"}))[:32]


def _canonical(intent: TradeIntent, without: set[str]) -> str:
    return to_json(intent.model_dump(mode="python", exclude=without, exclude_defaults=True))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


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
                 clock: Callable[[], int] | None = None):
        self.r = client
        self.filters = filters
        self.settings = settings
        # Redis's clock by default, the one entry ids carry (found in review: this host's clock against a Redis on
        # another host a minute apart refused every intent, or let old ones through).
        self.clock = clock or (lambda: redis_ms(client))
        self.log = get_logger(component="intent_bridge")

    def handle(self, intent: TradeIntent, entry: Entry) -> None:
        self.log.info("INTENT_RECEIVED", stream_id=entry.entry_id, symbol=intent.symbol, side=intent.side.value,
                      confidence=str(intent.confidence), size_usd=str(intent.position_size_usd))
        plan_id, digest = plan_id_for(intent), intent_digest(intent)
        # Planned before its age: a redelivery after a crash between the XADD and the ack must not read as an intent
        # that expired unplanned (found in review: its dead letter said "never planned" of a plan that may execute).
        candidates = [plan_id, *legacy_plan_ids(intent, entry.fields, plan_id)]
        marker, *legacy = self.r.mget([keys.bridge_intent(each) for each in candidates])
        if marker is None and any(each is not None for each in legacy):
            marker = LEGACY_MARKER  # planned by an earlier version under the id it gave the intent
        if self._planned_before(intent, plan_id, digest, marker):
            return
        self._check_fresh(intent, entry)
        plan = to_plan(intent, self.filters.find(intent.symbol), self.settings)
        if isinstance(plan, Skipped):
            INTENTS.labels(outcome=plan.reason).inc()
            self.log.info("INTENT_SKIPPED", stream_id=entry.entry_id, reason=plan.reason, **plan.detail)
            return
        if not publish_once(self.r, plan, digest):  # another bridge wrote it meanwhile
            self._planned_before(intent, plan_id, digest, self.r.get(keys.bridge_intent(plan_id)))
            return
        INTENTS.labels(outcome="planned").inc()
        self.log.info("PLAN_PUBLISHED", plan_id=plan.plan_id, symbol=plan.symbol, side=plan.side.value,
                      qty=str(plan.qty))

    def _planned_before(self, intent: TradeIntent, plan_id: str, digest: str, marker: str | None) -> bool:
        """True when the plan of this intent was published before; raises duplicate_intent when the plan_id was
        published for another intent (an intent_id used twice). A marker from before markers held the digest (`1`)
        says only that it was published."""
        if marker is None:
            return False
        if marker not in (digest, LEGACY_MARKER):
            INTENTS.labels(outcome=DUPLICATE_INTENT).inc()
            raise Rejected(DUPLICATE_INTENT, {"plan_id": plan_id, "intent_id": str(intent.intent_id),
                                              "detail": "this intent_id was planned for an intent asking for other "
                                                        "things; nothing planned for this one"})
        INTENTS.labels(outcome="duplicate").inc()
        self.log.info("PLAN_ALREADY_PUBLISHED", plan_id=plan_id, symbol=intent.symbol, side=intent.side.value)
        return True

    def _check_fresh(self, intent: TradeIntent, entry: Entry) -> None:
        """Its age from when Redis added it (the producer's own timestamp is another host's clock)."""
        try:
            freshness.check_fresh(freshness.entry_id_ms(entry.entry_id), self.clock(), self.settings.intent_max_age_ms,
                                  INTENT_EXPIRED, INTENT_TIME_INVALID,
                                  {"symbol": intent.symbol, "side": intent.side.value, "measured_from": "entry_id"})
        except Rejected as refused:
            INTENTS.labels(outcome=refused.reason).inc()
            raise


def publish_once(client: redis.Redis, plan: Plan, digest: str) -> bool:
    """XADD the plan unless it was already written (its marker holds the intent's digest); atomic against concurrent
    bridges."""
    return xadd_once(client, keys.bridge_intent(plan.plan_id), keys.Stream.APPLY_PLAN, plan.to_fields(), value=digest)
