"""Trade intents become OPEN plans: sized by the filter cache, one plan per intent however often read."""

from __future__ import annotations

import json
import time
from decimal import Decimal as D

import pytest
import redis
from structlog.testing import capture_logs

from microservices.intent_bridge.bridge import IntentBridge, Skipped, plan_id_for, to_plan
from microservices.intent_bridge.settings import BridgeSettings
from shared import keys
from shared.runtime.consumer import ConsumerConfig, Entry, Rejected, StreamConsumer
from shared.schema import Action, Plan, TradeIntent

SEED_INTENT = {
    "symbol": "AVAXUSDT", "side": "BUY", "position_size_usd": 100.0, "leverage": 2.0, "entry_price": 12.77,
    "stop_loss": 12.45075, "take_profit": 13.1531, "confidence": 0.72, "timestamp": "2026-01-01T18:47:38.785347+00:00",
}


def intent(**changes) -> TradeIntent:
    return TradeIntent.from_fields({"payload": json.dumps({**SEED_INTENT, **changes})})


def run_bridge(r: redis.Redis, access, **settings) -> None:
    bridge = IntentBridge(r, access.filters, BridgeSettings(**settings))
    config = ConsumerConfig(stream=keys.Stream.TRADE_INTENT, group=keys.Group.INTENT_BRIDGE, consumer="t", block_ms=50)
    StreamConsumer(r, config, TradeIntent.from_fields, bridge.handle).run(burst=True)


def plans(r: redis.Redis) -> list[Plan]:
    return [Plan.from_fields(fields) for _, fields in r.xrange(keys.Stream.APPLY_PLAN)]


def test_the_seed_intent_becomes_an_open_plan_rounded_to_the_step(access) -> None:
    rules = access.filters.get("AVAXUSDT")

    plan = to_plan(intent(), rules, BridgeSettings())

    assert plan.action is Action.OPEN and plan.reduce_only is False
    assert plan.qty == (D("100.0") / D("12.77")).quantize(rules.market_step_size, rounding="ROUND_DOWN")
    assert (plan.stop_loss, plan.take_profit, plan.leverage) == (D("12.45075"), D("13.1531"), D("2.0"))


@pytest.mark.parametrize(("leverage", "planned"), [(2.5, D("2")), (1.99, D("1")), (125, D("125")), (None, None)])
def test_the_plan_asks_for_whole_leverage_rounded_down_or_none_when_the_intent_names_none(access, leverage,
                                                                                        planned) -> None:
    made = intent(leverage=leverage) if leverage is not None else TradeIntent.from_fields(
        {"payload": json.dumps({k: v for k, v in SEED_INTENT.items() if k != "leverage"})})

    plan = to_plan(made, access.filters.get("AVAXUSDT"), BridgeSettings())

    assert plan.leverage == planned and (planned is None or str(plan.leverage) == str(planned))


def test_the_same_intent_gives_the_same_plan_id_and_a_different_one_another() -> None:
    assert plan_id_for(intent()) == plan_id_for(intent())
    assert plan_id_for(intent()) != plan_id_for(intent(position_size_usd=101))


@pytest.mark.parametrize(
    ("changes", "settings", "reason"),
    [({"confidence": 0.5}, {}, "below_confidence_floor"), ({}, {"bridge_allowlist": "BTCUSDT"}, "symbol_not_allowed")],
)
def test_intents_outside_the_settings_are_skipped(access, changes, settings, reason) -> None:
    outcome = to_plan(intent(**changes), access.filters.get("AVAXUSDT"), BridgeSettings(**settings))

    assert isinstance(outcome, Skipped) and outcome.reason == reason


def test_an_intent_too_small_for_one_step_is_rejected(access) -> None:
    with pytest.raises(Rejected, match="size_below_one_step"):
        to_plan(intent(symbol="BTCUSDT", entry_price=88000, position_size_usd=10, stop_loss=87000, take_profit=90000),
                access.filters.get("BTCUSDT"), BridgeSettings())


def test_an_intent_whose_plan_cannot_be_made_is_rejected_at_once_naming_why(access) -> None:
    # Found in a review: each field valid, the computed quantity out of range; the handler raised a pydantic error,
    # so the entry was retried until max deliveries and dead-lettered as max_deliveries_exceeded.
    huge = intent(position_size_usd=10**14, entry_price="0.001", stop_loss="0.0009", take_profit="0.0011")
    with pytest.raises(Rejected, match="invalid_plan") as raised:
        to_plan(huge, access.filters.get("AVAXUSDT"), BridgeSettings())
    assert "qty" in raised.value.detail


def test_an_intent_read_twice_is_published_once(r, access) -> None:
    for _ in range(2):
        r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(SEED_INTENT)})

    run_bridge(r, access)

    assert len(plans(r)) == 1
    assert plans(r)[0].plan_id == plan_id_for(intent())


def test_an_intent_for_an_unknown_symbol_is_dead_lettered(r, access) -> None:
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps({**SEED_INTENT, "symbol": "DOGEUSDT"})})

    run_bridge(r, access, bridge_allowlist="DOGEUSDT")

    (_, dead), = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "unknown_symbol" and plans(r) == []


@pytest.mark.parametrize("side, stop, target", [("BUY", 12.45075, 13.1531), ("SELL", 13.1531, 12.45075)])
def test_a_published_plan_keeps_the_intents_side_as_an_open(r, access, side, stop, target) -> None:
    # Found in a review: every intent the tests used was a BUY, so a flipped side passed them all.
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps({**SEED_INTENT, "side": side, "stop_loss": stop,
                                                             "take_profit": target})})

    run_bridge(r, access)

    (_, fields), = r.xrange(keys.Stream.APPLY_PLAN)
    assert (fields["side"], fields["reduceOnly"], fields["action"], fields["decision"]) == (side, "false", "OPEN", "EXECUTE")
    assert D(fields["qty"]) == D("7")  # 100 USD at 12.77, down to AVAXUSDT's whole-unit market step


def test_an_intent_that_waited_in_the_stream_is_dead_lettered_not_planned(r, access) -> None:
    # Found in a review: a bridge started on a backlog (its group reads from 0) turned hours-old intents into open
    # orders at their old entry price. Its age runs from when Redis added the entry.
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(SEED_INTENT)}, id=f"{hour_ago_ms}-0")
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps({**SEED_INTENT, "intent_id": "fresh"})})

    run_bridge(r, access)

    (_, dead), = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "intent_expired" and json.loads(dead["detail"])["measured_from"] == "entry_id"
    assert [plan.plan_id for plan in plans(r)] == [plan_id_for(intent(intent_id="fresh"))]


@pytest.mark.parametrize("age_ms, reason", [(60_001, "intent_expired"), (-60_001, "intent_time_invalid")])
def test_the_intent_age_limit_is_exact_on_the_injected_clock(r, access, age_ms, reason) -> None:
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(SEED_INTENT)}, id="1800000000000-0")
    bridge = IntentBridge(r, access.filters, BridgeSettings(), clock=lambda: 1_800_000_000_000 + age_ms)
    config = ConsumerConfig(stream=keys.Stream.TRADE_INTENT, group=keys.Group.INTENT_BRIDGE, consumer="t", block_ms=50)

    StreamConsumer(r, config, TradeIntent.from_fields, bridge.handle).run(burst=True)

    (_, dead), = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == reason and plans(r) == []


def entry_of(r: redis.Redis, fields: dict[str, str], entry_id: str = "*") -> Entry:
    added = r.xadd(keys.Stream.TRADE_INTENT, fields, id=entry_id)
    return Entry(keys.Stream.TRADE_INTENT, added, fields, 1)


def test_an_intent_planned_before_is_a_duplicate_whatever_its_age(r, access) -> None:
    """Found in review: a crash between the XADD of the plan and the ack, and a restart a minute later; the
    redelivered intent was dead-lettered intent_expired ("never planned") while its plan was out."""
    entry = entry_of(r, {"payload": json.dumps(SEED_INTENT)}, "1800000000000-0")
    IntentBridge(r, access.filters, BridgeSettings(), clock=lambda: 1_800_000_000_500).handle(intent(), entry)
    later = IntentBridge(r, access.filters, BridgeSettings(), clock=lambda: 1_800_000_120_000)

    with capture_logs() as logs:
        later.handle(intent(), entry)

    assert len(plans(r)) == 1 and r.xlen(keys.Stream.DEAD_LETTER) == 0
    assert [line["event"] for line in logs if line["event"].startswith("PLAN_")] == ["PLAN_ALREADY_PUBLISHED"]


def test_an_intent_id_used_again_for_another_intent_is_dead_lettered(r, access) -> None:
    """Found in review: a second intent under an intent_id already planned (another symbol, another size) was acked
    with a log line saying its plan was published."""
    first = {**SEED_INTENT, "intent_id": "sig-7"}
    resent = {**first, "timestamp": "2026-01-01T18:47:40Z"}  # the same intent, sent again a moment later
    other = {**first, "symbol": "BTCUSDT", "position_size_usd": 500.0, "entry_price": 88000, "stop_loss": 87000,
             "take_profit": 90000}
    for payload in (first, resent, other):
        r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(payload)})

    run_bridge(r, access)

    assert [plan.symbol for plan in plans(r)] == ["AVAXUSDT"]
    (_, dead), = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "duplicate_intent" and json.loads(dead["detail"])["intent_id"] == "sig-7"


def test_the_same_intent_in_either_form_or_beside_any_envelope_is_one_plan(r, access) -> None:
    """Found in review: the envelope's publish time (when the payload had none) and an epoch-ms timestamp read as an
    int in JSON and as text flat each gave the same intent another plan id."""
    epoch = {**SEED_INTENT, "timestamp": 1767295800000}
    untimed = {key: value for key, value in SEED_INTENT.items() if key != "timestamp"}
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(epoch)})
    r.xadd(keys.Stream.TRADE_INTENT, {key: str(value) for key, value in epoch.items()})
    for published in ("2026-01-01T18:47:39Z", "2026-01-01T18:48:39Z"):
        r.xadd(keys.Stream.TRADE_INTENT, {"timestamp": published, "source": "bus", "payload": json.dumps(untimed)})

    run_bridge(r, access)

    assert len(plans(r)) == 2 and r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_an_intents_age_is_measured_by_redis_s_clock(r, access, monkeypatch) -> None:
    """Found in review: this host's clock against the entry id Redis wrote; a Redis on another host a minute behind
    had every intent refused as expired."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)  # this host two minutes ahead of Redis
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps(SEED_INTENT)})

    run_bridge(r, access)

    assert len(plans(r)) == 1 and r.xlen(keys.Stream.DEAD_LETTER) == 0


def earlier_plan_id(payload: dict, envelope_timestamp: str | None = None) -> str:
    """The id versions before 2026-12-08 gave an intent without intent_id: its model's dump (defaults in, source out),
    a JSON-number timestamp kept a number, an envelope's timestamp taken when the payload had none."""
    import hashlib

    from shared.schema import to_json

    dumped = TradeIntent.from_fields({"payload": json.dumps(payload)}).model_dump(mode="python", exclude={"source"})
    stamp = payload.get("timestamp", envelope_timestamp)
    dumped["timestamp"] = stamp
    return "ib-" + hashlib.sha256(to_json(dumped).encode()).hexdigest()[:20]


UNTIMED = {key: value for key, value in SEED_INTENT.items() if key != "timestamp"}


@pytest.mark.parametrize(("payload", "envelope"), [
    (SEED_INTENT, None), ({**SEED_INTENT, "timestamp": 1767295800000}, None), (UNTIMED, "2026-01-01T18:47:39Z"),
], ids=["iso timestamp", "epoch ms as a JSON number", "envelope timestamp"])
def test_an_intent_planned_by_the_earlier_version_is_not_planned_again(r, access, payload, envelope) -> None:
    """Found in review: plan ids now leave fields at their default out of the hash (and read the producer's time as
    text, and never the envelope's); an intent the earlier version planned, read again after the upgrade, was a
    second open. Each earlier rule's id is looked up."""
    earlier = earlier_plan_id(payload, envelope)
    fields = {"payload": json.dumps(payload), **({"timestamp": envelope} if envelope else {})}
    assert earlier != plan_id_for(TradeIntent.from_fields(fields))
    r.set(keys.bridge_intent(earlier), "1")  # what the earlier version's xadd_once wrote
    r.xadd(keys.Stream.TRADE_INTENT, fields)

    run_bridge(r, access)

    assert plans(r) == [] and r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_a_release_adding_an_intent_field_with_a_default_keeps_plan_ids_and_digests() -> None:
    """A redelivered intent must find its plan after an upgrade: with the defaults hashed, a new field changed every
    plan id (a second open) and every digest (a duplicate_intent dead letter)."""
    from microservices.intent_bridge.bridge import intent_digest

    class NextRelease(TradeIntent):
        max_slippage_bps: D | None = None

    now, next_ = intent(), NextRelease.from_fields({"payload": json.dumps(SEED_INTENT)})
    assert (plan_id_for(next_), intent_digest(next_)) == (plan_id_for(now), intent_digest(now))


def test_a_timestamp_of_unicode_digits_is_planned_not_a_crash(r, access) -> None:
    """Found in review: "²" is a digit to str.isdigit but not to int(): the legacy id lookup raised on every delivery,
    and a valid intent ended as max_deliveries_exceeded."""
    r.xadd(keys.Stream.TRADE_INTENT, {"payload": json.dumps({**SEED_INTENT, "timestamp": "²"})})

    run_bridge(r, access)

    assert len(plans(r)) == 1 and r.xlen(keys.Stream.DEAD_LETTER) == 0
