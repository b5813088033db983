"""Bad input never stops a daemon: property tests of every schema, then garbage into a running fleet."""

from __future__ import annotations

import json
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared import keys
from shared.orders import client_order_id_for
from shared.schema import CalibratedProposal, EntryError, HarvestProposal, Plan, PlanResult, TradeIntent

MODELS = (TradeIntent, Plan, PlanResult, HarvestProposal, CalibratedProposal)
NASTY = ["", " ", "0", "-1", "-0.000", "NaN", "nan", "Infinity", "-inf", "1e308", "1e-308", "1e-999999999", "0e-99999", "9" * 400, "0x1F",
         "true", "False", "maybe", "null", "None", "[]", "{}", '{"a": 1}', "BUY", "sell", "LONG", "EXECUTE",
         "PARTIAL_60", "BTCUSDT", "DOGEUSDT", "btc/usdt", "💥🚀", "ʇǝsǝɹ", "\x00\x01", "a" * 70_000, "0.0023",
         "88000.5", "1", "-5", "3.14159", "reduceOnly"]
FIELDS = sorted({name for model in MODELS for name in model.model_fields} | {"reduceOnly", "plan_data", "payload", "data"})

values = st.one_of(st.sampled_from(NASTY), st.text(max_size=50), st.integers().map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr))
entries = st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=20)), values, max_size=14)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=entries)
def test_any_entry_parses_or_is_refused_with_an_entry_error(fields) -> None:
    for model in MODELS:
        try:
            model.from_fields(fields)
        except EntryError as exc:
            assert exc.reason and isinstance(exc.fields, dict)


@settings(max_examples=150, deadline=None)
@given(document=st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20) | st.integers(),
                             lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                             max_leaves=20))
def test_any_json_payload_parses_or_is_refused_with_an_entry_error(document) -> None:
    for name in ("plan_data", "payload", "data"):
        for model in MODELS:
            try:
                model.from_fields({name: json.dumps(document)})
            except EntryError:
                pass


def garbage(rng: random.Random, count: int) -> list[dict[str, str]]:
    made = []
    for _ in range(count):
        fields = {rng.choice(FIELDS): rng.choice(NASTY) for _ in range(rng.randint(0, 10))}
        made.append(fields or {"junk": rng.choice(NASTY) or "x"})
    return made


STREAMS = {
    keys.Stream.TRADE_INTENT: (TradeIntent, "intent-bridge"),
    keys.Stream.APPLY_PLAN: (Plan, "intent-executor"),
    keys.Stream.APPLY_RESULT: (PlanResult, "reconcile"),
    keys.Stream.HARVEST_PROPOSAL: (HarvestProposal, "apply-layer"),
}
FLEET = ("position-state-brain", "governor", "intent-executor", "intent-bridge", "apply-layer", "portfolio-heat-gate",
         "reconcile")


def rejected(model, fields: dict[str, str]) -> bool:
    try:
        model.from_fields(fields)
    except EntryError:
        return True
    return False


def settled(fleet) -> bool:
    for stream in STREAMS:
        for group in fleet.client.xinfo_groups(stream):
            if group["pending"] or fleet.client.xrange(stream, min=f"({group['last-delivered-id']}", count=1):
                return False
    return True


# Retried every 0.5 s: 20 deliveries outlast the executor's 9 s from a delivery until an unclear send is resolved
# (it checks at start).
QUICK_RETRIES = {"STREAM_CLAIM_IDLE_MS": "500", "STREAM_MAX_DELIVERIES": "20"}


def test_garbage_on_every_stream_is_dead_lettered_and_the_fleet_carries_on(make_fleet, sim) -> None:
    fleet = make_fleet(**QUICK_RETRIES).start(*FLEET)
    rng = random.Random(11)
    expected_dead: set[tuple[str, str]] = set()
    for stream, (model, _reader) in STREAMS.items():
        for fields in garbage(rng, 60):
            entry_id = fleet.client.xadd(stream, fields)
            if rejected(model, fields):
                expected_dead.add((stream, entry_id))

    fleet.plan("after-garbage", "BTCUSDT", "BUY", "0.002")
    result = fleet.wait_result("after-garbage", timeout=30)
    deadline = time.monotonic() + 60
    while not settled(fleet) and time.monotonic() < deadline:
        time.sleep(0.2)

    dead = {(f["source_stream"], f["entry_id"]): f for _, f in fleet.client.xrange(keys.Stream.DEAD_LETTER)}
    assert expected_dead <= set(dead), sorted(expected_dead - set(dead))[:5]
    assert all(dead[key]["reason"] for key in expected_dead)
    assert result["executed"] == "true"
    assert settled(fleet)
    assert all(process.poll() is None for process in fleet.processes.values())


VALID_PLAN = {"decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "qty": "0.002",
              "reduceOnly": "false", "source": "fuzz"}


def test_near_valid_plans_end_in_one_result_or_a_dead_letter(make_fleet, sim) -> None:
    fleet = make_fleet(**QUICK_RETRIES).start(
        "position-state-brain", "governor", "intent-executor")
    rng = random.Random(5)
    accepted, refused = [], set()
    for i in range(80):
        fields = {**VALID_PLAN, "plan_id": f"near-{i}", rng.choice(sorted(VALID_PLAN)): rng.choice(NASTY)}
        entry_id = fleet.client.xadd(keys.Stream.APPLY_PLAN, fields)
        if rejected(Plan, fields):
            refused.add(entry_id)
        else:
            accepted.append(fields["plan_id"])

    for plan_id in accepted:
        fleet.wait_result(plan_id, timeout=30)
    deadline = time.monotonic() + 30
    while not refused <= {f["entry_id"] for _, f in fleet.client.xrange(keys.Stream.DEAD_LETTER)}:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    assert accepted and refused
    assert all(len(fleet.results(plan_id)) == 1 for plan_id in accepted)
    assert all(process.poll() is None for process in fleet.processes.values())


def test_replays_of_one_plan_id_give_one_result_and_at_most_one_order(make_fleet, sim) -> None:
    fleet = make_fleet().start("position-state-brain", "governor", "intent-executor")

    for qty in ("0.002", "0.003", "0.002", "0.004"):
        fleet.plan("replayed", "BTCUSDT", "BUY", qty)
    fleet.plan("marker", "ETHUSDT", "BUY", "0.05")
    fleet.wait_result("marker")
    time.sleep(0.5)

    assert len(fleet.results("replayed")) == 1
    assert len([o for o in sim.orders() if o["clientOrderId"] == client_order_id_for("replayed")]) <= 1
