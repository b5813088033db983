"""Plan, intent, result and proposal parsing: every seed example, both wire forms, clear rejections."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from shared.schema import (
    Action,
    CalibratedProposal,
    Decision,
    EntryError,
    HarvestProposal,
    Plan,
    PlanResult,
    Side,
    TradeIntent,
)

SEED_TEST_OPEN_005 = {
    "plan_id": "test_open_005", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY",
    "type": "MARKET", "qty": "0.001", "reduceOnly": "false", "source": "test_manual",
}
SEED_EXIT_PROOF = {
    "plan_id": "exit_proof_filled_eth_001", "decision": "EXECUTE", "symbol": "ETHUSDT", "side": "SELL",
    "type": "MARKET", "qty": "0.01", "reduceOnly": "true", "action": "FULL_CLOSE_PROPOSED", "source": "manual",
}
SEED_HARVEST_PLAN_JSON = {
    "plan_data": json.dumps({
        "plan_id": "f1a8d7f48713d5cf", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "SELL",
        "type": "MARKET", "qty": 0.0015, "reduceOnly": True, "action": "PARTIAL_75", "kill_score": 0.539,
        "source": "harvest",
    })
}


def plan(**changes: str) -> dict[str, str]:
    fields = dict(SEED_TEST_OPEN_005)
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not None}


def without(field: str) -> dict[str, str]:
    fields = dict(SEED_TEST_OPEN_005)
    del fields[field]
    return fields


@pytest.mark.parametrize(
    ("fields", "reduce_only", "action", "qty"),
    [
        (SEED_TEST_OPEN_005, False, Action.OPEN, Decimal("0.001")),
        (SEED_EXIT_PROOF, True, Action.FULL_CLOSE_PROPOSED, Decimal("0.01")),
        (SEED_HARVEST_PLAN_JSON, True, Action.PARTIAL_75, Decimal("0.0015")),
        (plan(reduceOnly="False"), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly="FALSE"), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly="0"), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly="no"), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly=" No "), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly="true", side="SELL"), True, Action.CLOSE, Decimal("0.001")),
        (plan(reduceOnly="1"), True, Action.CLOSE, Decimal("0.001")),
        (plan(reduceOnly="YES"), True, Action.CLOSE, Decimal("0.001")),
        (without("reduceOnly"), False, Action.OPEN, Decimal("0.001")),
        (plan(reduceOnly=None, action="PARTIAL_25"), True, Action.PARTIAL_25, Decimal("0.001")),
        (plan(qty="1e-3"), False, Action.OPEN, Decimal("0.001")),
        ({"payload": json.dumps(SEED_TEST_OPEN_005)}, False, Action.OPEN, Decimal("0.001")),
        ({"data": json.dumps(SEED_TEST_OPEN_005), "plan_id": "test_open_005"}, False, Action.OPEN, Decimal("0.001")),
    ],
)
def test_plans_parse(fields: dict, reduce_only: bool, action: Action, qty: Decimal) -> None:
    parsed = Plan.from_fields(fields)

    assert parsed.reduce_only is reduce_only
    assert parsed.action is action
    assert parsed.qty == qty and isinstance(parsed.qty, Decimal)


def test_the_seed_open_plan_parses_exactly_as_typed_in_redis_cli() -> None:
    raw = {key.encode(): value.encode() for key, value in SEED_TEST_OPEN_005.items()}

    parsed = Plan.from_fields(raw)

    assert parsed.reduce_only is False
    assert (parsed.plan_id, parsed.decision, parsed.side, parsed.symbol) == ("test_open_005", Decision.EXECUTE, Side.BUY, "BTCUSDT")


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (plan(reduceOnly="maybe"), "reduceOnly"),
        (plan(reduceOnly="on"), "reduceOnly"),
        (plan(reduceOnly=""), "reduceOnly"),
        (plan(side="LONG"), "side"),
        (plan(decision="EXECUTE_NOW"), "decision"),
        (plan(action="PARTIAL_60"), "action"),
        (plan(type="STOP_MARKET"), "type"),
        (plan(qty="0"), "qty"),
        (plan(qty="-0.001"), "qty"),
        (plan(qty="NaN"), "qty"),
        (plan(qty="Infinity"), "qty"),
        (plan(qty="1e30"), "qty"),
        (plan(qty="abc"), "qty"),
        (plan(symbol="BTC/USDT"), "symbol"),
        (plan(plan_id="has space"), "plan_id"),
        (plan(kill_score="1.5"), "kill_score"),
        (without("plan_id"), "plan_id"),
        (without("qty"), "qty"),
        (without("side"), "side"),
        (plan(action="OPEN", reduceOnly="true"), "entry"),
        (plan(action="FULL_CLOSE_PROPOSED", reduceOnly="false"), "entry"),
        ({"plan_data": "{not json"}, "plan_data"),
        ({"plan_data": "[1, 2]"}, "plan_data"),
        ({"plan_data": json.dumps(SEED_TEST_OPEN_005), "payload": "{}"}, "plan_data"),
        ({"plan_data": json.dumps(SEED_TEST_OPEN_005), "qty": "5"}, "qty"),
        (plan(source="x" * 70_000), "entry"),
        (plan(stop_loss="1e-999999999"), "stop_loss"),  # written out: a billion characters (found in a review)
        (plan(qty="0e-100000"), "qty"),
    ],
)
def test_bad_plans_are_rejected_naming_the_field(fields: dict, named: str) -> None:
    with pytest.raises(EntryError) as raised:
        Plan.from_fields(fields)

    assert any(name == named or name.startswith(named) for name in raised.value.fields), raised.value.fields


def test_lower_case_enums_and_symbols_are_normalised() -> None:
    parsed = Plan.from_fields(plan(side="buy", symbol="btcusdt", decision="execute"))

    assert (parsed.side, parsed.symbol, parsed.decision) == (Side.BUY, "BTCUSDT", Decision.EXECUTE)


def test_a_plan_writes_flat_fields_that_parse_back() -> None:
    parsed = Plan.from_fields(SEED_HARVEST_PLAN_JSON)

    flat = parsed.to_fields()

    assert flat["reduceOnly"] == "true" and flat["qty"] == "0.0015" and flat["kill_score"] == "0.539"
    assert Plan.from_fields(flat) == parsed


def test_the_seed_trade_intent_parses() -> None:
    seed = {
        "symbol": "AVAXUSDT", "side": "BUY", "position_size_usd": 100.0, "leverage": 2.0, "entry_price": 12.77,
        "stop_loss": 12.45075, "take_profit": 13.1531, "confidence": 0.72,
        "timestamp": "2026-01-01T18:47:38.785347+00:00",
    }

    intent = TradeIntent.from_fields({"payload": json.dumps(seed)})

    assert intent.position_size_usd == Decimal("100.0")
    assert intent.stop_loss == Decimal("12.45075") and intent.confidence == Decimal("0.72")


def test_an_intents_exits_on_their_sides_parse() -> None:
    base = {"symbol": "BTCUSDT", "position_size_usd": "200", "entry_price": "88000", "confidence": "0.8"}
    buy = TradeIntent.from_fields({**base, "side": "BUY", "stop_loss": "87000", "take_profit": "90000"})
    sell = TradeIntent.from_fields({**base, "side": "SELL", "stop_loss": "89000", "take_profit": "86000"})
    assert (buy.stop_loss, sell.stop_loss) == (Decimal("87000"), Decimal("89000"))


@pytest.mark.parametrize(("change", "named"), [
    ({"confidence": "1.2"}, "confidence"), ({"leverage": "500"}, "leverage"), ({"entry_price": "-1"}, "entry_price"),
    # exits on the wrong side of the entry would close the position as it opens (found in a review)
    ({"stop_loss": "90000"}, "entry"), ({"stop_loss": "88000"}, "entry"), ({"take_profit": "87000"}, "entry"),
    ({"side": "SELL", "stop_loss": "87000"}, "entry"), ({"side": "SELL", "take_profit": "89000"}, "entry"),
])
def test_bad_intents_are_rejected(change: dict, named: str) -> None:
    fields = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "200", "entry_price": "88000", "confidence": "0.8"}
    fields.update(change)

    with pytest.raises(EntryError) as raised:
        TradeIntent.from_fields(fields)

    assert named in raised.value.fields


def test_the_seed_result_parses() -> None:
    seed = {"plan_id": "3220f0820d545cc3", "executed": "true", "order_id": "11986721004", "filled_qty": "0.002",
            "order_status": "FILLED", "source": "intent_executor", "symbol": "BTCUSDT", "side": "BUY",
            "qty": "0.002", "reduceOnly": "false"}

    result = PlanResult.from_fields(seed)

    assert result.executed is True and result.filled_qty == Decimal("0.002")


def test_a_result_that_did_not_execute_needs_a_reason() -> None:
    fields = {"plan_id": "p", "executed": "false", "symbol": "BTCUSDT", "side": "BUY", "qty": "1",
              "reduceOnly": "false", "source": "x"}

    with pytest.raises(EntryError):
        PlanResult.from_fields(fields)


def test_proposals_parse_in_both_forms() -> None:
    fields = {"proposal_id": "pr-1", "symbol": "BTCUSDT", "action": "PARTIAL_50", "kill_score": "0.4",
              "r_multiple": "1.5", "reason": "tp_ladder_1.5R", "position_amt": "0.004", "entry_price": "88000",
              "mark_price": "89000"}
    calibrated = {**fields, "original_action": "FULL_CLOSE_PROPOSED", "heat": "0.2", "heat_bucket": "cold",
                  "downgraded": "true", "calibration_reason": "cold_portfolio"}

    proposal = HarvestProposal.from_fields({"data": json.dumps(fields)})
    calibrated_proposal = CalibratedProposal.from_fields(calibrated)

    assert proposal.action is Action.PARTIAL_50 and proposal.action.close_fraction == Decimal("0.50")
    assert calibrated_proposal.downgraded is True and calibrated_proposal.heat_bucket.value == "COLD"


@pytest.mark.parametrize("changes", [{"qty": "0.002"}, {"side": "SELL"}, {"symbol": "ETHUSDT"}, {"reduceOnly": "true"},
                                     {"decision": "HOLD"}, {"leverage": "5"}, {"source": "other"}])
def test_a_plan_digest_changes_with_any_field(changes) -> None:
    assert Plan.from_fields(plan(**changes)).digest != Plan.from_fields(plan()).digest


def test_a_plan_digest_is_the_same_for_both_wire_forms_and_survives_a_copy() -> None:
    flat = Plan.from_fields(plan())
    as_json = Plan.from_fields({"plan_data": json.dumps({**SEED_TEST_OPEN_005, "qty": 0.001, "reduceOnly": False})})

    assert flat.digest == as_json.digest and len(flat.digest) == 32
    assert flat.model_copy(update={"qty": Decimal("0.002")}).digest == flat.digest  # the governor's rounded copy


def test_a_plan_digest_survives_a_release_that_adds_a_field_with_a_default() -> None:
    """The daemons are restarted one at a time: an older governor's permits must still bind a newer executor's plan
    (and a newer executor must know a redelivery of a plan an older one ended) when the plan has grown a field."""

    class NextRelease(Plan):
        trailing_stop: Decimal | None = None
        venue: str = "binance"

    old, new = Plan.from_fields(plan()), NextRelease.from_fields(plan())
    assert new.digest == old.digest
    assert NextRelease.from_fields(plan(venue="other")).digest != old.digest  # a plan that uses it is another plan
    stated = Plan.from_fields(plan(type="MARKET", source=old.source))  # a default said out loud is the same plan
    assert stated.digest == old.digest


def test_a_plan_digest_is_not_part_of_the_plan_it_describes() -> None:
    """Held beside the fields: never dumped, written to a stream or compared; the same value when a plan is
    built without validation, or read again."""
    one = Plan.from_fields(plan())
    assert "digest" not in one.model_dump() and "digest" not in one.model_dump_json() and "digest" not in one.to_fields()
    assert one == Plan.from_fields(plan()) and hash(one) == hash(Plan.from_fields(plan()))
    assert Plan.model_construct(**one.model_dump()).digest == one.digest
    assert Plan.from_fields(one.to_fields()).digest == one.digest


CLOSE_WITHOUT_REDUCE_ONLY = {**without("reduceOnly"), "side": "SELL"}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "reduceonly": "true"}, "reduceonly"),
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "ReduceOnly": "true"}, "ReduceOnly"),
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "reduce-only": "true"}, "reduce-only"),
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "reduce_only ": "true"}, "reduce_only "),
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "REDUCE_ONLY": "true"}, "REDUCE_ONLY"),
        ({**CLOSE_WITHOUT_REDUCE_ONLY, "reduce.only": "true"}, "reduce.only"),
        ({**without("plan_id"), "planId": "test_open_005"}, "planId"),
        (plan(planId="other_plan"), "planId"),
        (plan(Qty="5"), "Qty"),
        (plan(**{"kill-score": "0.9"}), "kill-score"),
        (plan(**{" symbol": "ETHUSDT"}), " symbol"),
        ({"plan_data": json.dumps({**CLOSE_WITHOUT_REDUCE_ONLY, "reduce-only": True})}, "reduce-only"),
        ({"plan_data": json.dumps(CLOSE_WITHOUT_REDUCE_ONLY), "ReduceOnly": "true"}, "ReduceOnly"),
        ({"planData": json.dumps(SEED_TEST_OPEN_005)}, "planData"),
        ({**SEED_TEST_OPEN_005, "Payload": json.dumps({"reduceOnly": True})}, "Payload"),
    ],
)
def test_a_near_miss_of_a_known_field_is_refused_naming_it(fields: dict, named: str) -> None:
    assert refusal(fields) == ("misspelled_field", named)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        (plan(reduceOnly="false", reduce_only="true"), "reduce_only"),
        (plan(reduceOnly="true", reduce_only="no", side="SELL"), "reduce_only"),
        (plan(reduceOnly="false", reduce_only="maybe"), "reduce_only"),
        ({"plan_data": json.dumps({**SEED_TEST_OPEN_005, "reduceOnly": False}), "reduce_only": "true"}, "reduce_only"),
        ({"plan_data": json.dumps({**SEED_TEST_OPEN_005, "reduce_only": True})}, "reduce_only"),
    ],
)
def test_a_field_and_its_alias_that_disagree_are_refused(fields: dict, named: str) -> None:
    assert refusal(fields) == ("conflicting_fields", named)


def refusal(fields: dict) -> tuple[str, str]:
    """The reason a plan is refused for, and the one field it names."""
    with pytest.raises(EntryError) as raised:
        Plan.from_fields(fields)
    (named,) = raised.value.fields
    return raised.value.reason, named


@pytest.mark.parametrize(
    ("fields", "reduce_only"),
    [
        (plan(reduce_only="false"), False),
        (without("reduceOnly") | {"reduce_only": "true", "side": "SELL"}, True),
        (plan(reduceOnly="false", reduce_only="0"), False),
        (plan(reduceOnly="False", reduce_only="no"), False),
        ({"plan_data": json.dumps({**SEED_TEST_OPEN_005, "reduceOnly": False, "reduce_only": "false"})}, False),
        (plan(producer_note="x", reduce_only_requested_by="ops", reduceOnlyHint="1", my_field="y"), False),
    ],
)
def test_exact_names_agreeing_aliases_and_unknown_fields_still_parse(fields: dict, reduce_only: bool) -> None:
    assert Plan.from_fields(fields).reduce_only is reduce_only


PROPOSAL = {"proposal_id": "pr-1", "symbol": "BTCUSDT", "action": "PARTIAL_50", "kill_score": "0.4", "r_multiple": "1.5",
            "reason": "tp_ladder_1.5R", "position_amt": "0.004", "entry_price": "88000", "mark_price": "89000"}
CALIBRATED = {**PROPOSAL, "original_action": "FULL_CLOSE_PROPOSED", "heat": "0.2", "heat_bucket": "cold",
              "downgraded": "true", "calibration_reason": "cold_portfolio"}
INTENT = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "200", "entry_price": "88000", "confidence": "0.8"}
RESULT = {"plan_id": "p", "executed": "false", "symbol": "BTCUSDT", "side": "BUY", "qty": "1", "reduceOnly": "false",
          "source": "x", "reason": "dry_run"}


@pytest.mark.parametrize(
    ("model", "fields", "near_miss"),
    [
        (TradeIntent, INTENT, "stopLoss"),
        (TradeIntent, INTENT, "Intent-ID"),
        (HarvestProposal, PROPOSAL, "positionAmt"),
        (HarvestProposal, PROPOSAL, "Kill_Score"),
        (CalibratedProposal, CALIBRATED, "heatBucket"),
        (CalibratedProposal, CALIBRATED, "original-action"),
        (PlanResult, RESULT, "orderId"),
        (PlanResult, RESULT, "reduce-only"),
    ],
)
def test_every_stream_schema_refuses_near_misses_and_ignores_unknown_fields(model, fields, near_miss) -> None:
    model.from_fields({**fields, "producer_own_field": "kept out"})

    with pytest.raises(EntryError) as raised:
        model.from_fields({**fields, near_miss: "1"})

    assert raised.value.reason == "misspelled_field" and near_miss in raised.value.fields


SEED_INTENT_PAYLOAD = {"symbol": "AVAXUSDT", "side": "BUY", "position_size_usd": 100.0, "leverage": 2.0,
                       "entry_price": 12.77, "confidence": 0.72, "timestamp": "2026-01-01T18:47:38.785347+00:00"}


def test_an_event_bus_envelope_beside_the_payload_is_not_a_conflict() -> None:
    # Found in a review: an event bus writes its own publish time and source beside the JSON payload; they differ
    # from the payload's, and every such intent was dead-lettered as conflicting_fields.
    envelope = {"event_type": "trade.intent", "timestamp": "2026-01-01T18:47:39.000001+00:00", "source": "ai_engine",
                "correlation_id": "c-1", "payload": json.dumps(SEED_INTENT_PAYLOAD)}

    intent = TradeIntent.from_fields(envelope)

    assert (intent.timestamp, intent.source, intent.side.value) == (SEED_INTENT_PAYLOAD["timestamp"], "intent", "BUY")
    with pytest.raises(EntryError, match="conflicting_fields"):  # a trade field that disagrees still is one
        TradeIntent.from_fields({**envelope, "side": "SELL"})


def test_an_envelope_does_not_fill_in_what_the_payload_leaves_out() -> None:
    """Found in review: the bus's publish time became the intent's timestamp when the payload had none, so the same
    payload published twice hashed to two plan ids (two opens for one intent)."""
    payload = {key: value for key, value in SEED_INTENT_PAYLOAD.items() if key != "timestamp"}

    intent = TradeIntent.from_fields({"timestamp": "2026-01-01T18:47:39Z", "source": "bus", "payload": json.dumps(payload)})

    assert (intent.timestamp, intent.source) == (None, "intent")


def test_an_intent_timestamp_in_epoch_ms_is_accepted() -> None:
    payload = {**SEED_INTENT_PAYLOAD, "timestamp": 1767295800000}

    as_json = TradeIntent.from_fields({"payload": json.dumps(payload)})
    flat = TradeIntent.from_fields({key: str(value) for key, value in payload.items()})

    # One text in both forms (found in review: an int here and a str there hashed to two plan ids for one intent).
    assert as_json.timestamp == flat.timestamp == "1767295800000"


@pytest.mark.parametrize(("payload", "reason", "field"), [
    # Found in review: Decimal cannot hold it (InvalidOperation, not ValueError): the executor's give-up raised
    # out of the runtime on every start, and the entry was never dead-lettered.
    ('{"plan_id": "p1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "qty": 1.5e99999999999999999999}',
     "invalid_json", "plan_data"),
    # A key given twice with different values: the last won (a SELL close read as a BUY open); flat fields given
    # twice are refused as duplicate_field, and so is this now.
    ('{"plan_id": "p1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "SELL", "qty": "0.001", '
     '"reduceOnly": true, "reduceOnly": false}', "duplicate_field", "reduceOnly"),
])
def test_a_json_payload_that_cannot_be_one_plan_is_refused_naming_why(payload, reason, field) -> None:
    with pytest.raises(EntryError) as refused:
        Plan.from_fields({"plan_data": payload})

    assert refused.value.reason == reason and field in refused.value.fields


def test_a_key_repeated_with_the_same_value_in_a_json_payload_is_one_field() -> None:
    plan = Plan.from_fields({"plan_data": json.dumps(SEED_TEST_OPEN_005)[:-1] + ', "side": "BUY"}'})

    assert plan.side is Side.BUY


@pytest.mark.parametrize("proposal_id", ["", "   ", "two words"])
def test_a_proposal_without_a_usable_id_is_refused(proposal_id: str) -> None:
    """Found in review: an empty id made every such proposal the same plan; the second, on any symbol, was acked
    as a duplicate with no dead letter."""
    fields = {"proposal_id": proposal_id, "symbol": "ETHUSDT", "action": "PARTIAL_50", "kill_score": "0.5",
              "r_multiple": "1", "reason": "x", "position_amt": "0.1", "entry_price": "1", "mark_price": "1"}

    with pytest.raises(EntryError) as refused:
        HarvestProposal.from_fields(fields)

    assert "proposal_id" in refused.value.fields


def test_an_intent_s_fractional_timestamp_reads_alike_flat_or_in_json() -> None:
    """Found in review: the flat form was accepted and the JSON number refused (a Decimal, neither text nor int)."""
    base = {"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "entry_price": "88000", "confidence": "0.9"}

    in_json = TradeIntent.from_fields({"payload": json.dumps({**base, "timestamp": 1712345678.5})})
    flat = TradeIntent.from_fields({**base, "timestamp": "1712345678.5"})

    assert in_json.timestamp == flat.timestamp == "1712345678.5"


@pytest.mark.parametrize("timestamp", ["1e999999999", "1e-999999999"])
def test_an_intent_timestamp_no_decimal_can_write_out_is_refused_at_once(timestamp: str) -> None:
    """Found in review: written out as text first, it took 4 s and 2 GB before the length check refused it."""
    payload = ('{"symbol": "BTCUSDT", "side": "BUY", "position_size_usd": "100", "entry_price": "88000", '
               f'"confidence": "0.9", "timestamp": {timestamp}}}')

    with pytest.raises(EntryError) as refused:
        TradeIntent.from_fields({"payload": payload})

    assert "timestamp" in refused.value.fields
