"""Edges of the executor found in review: invalid permits, upsizing under the total cap, liveness while slow."""

from __future__ import annotations

import json
from decimal import Decimal as D
from types import SimpleNamespace

import pytest

from microservices.intent_executor.resolve import OutcomeStillUnknown, Resolver
from microservices.intent_executor.sizing import Refused, Sized, size_order
from shared import keys
from shared.exchange.errors import ExchangeUnavailable
from shared.exchange.filters import parse_exchange_info
from shared.logging import get_logger
from shared.schema import Plan, Reason
from tests.intent_executor.test_executor_sim import grant, orders_for, plan, run_executor, the_result


def test_a_permit_the_gates_would_never_write_is_a_refusal_not_a_crash(r, access, sim) -> None:
    grant(r, "odd-1")
    plan(r, "odd-1", "BUY", "0.002")
    raw = json.loads(r.get(keys.permit_p32("odd-1")))
    del raw["created_at"]  # allow true and the plan's digest, but not a permit the model accepts
    r.set(keys.permit_p32("odd-1"), json.dumps(raw), keepttl=True)

    run_executor(r, access)

    result = the_result(r, "odd-1")
    assert (result["executed"], result["reason"]) == ("false", "permit_denied")
    assert "invalid" in json.loads(result["detail"])["invalid_permit"]
    assert orders_for(sim, "odd-1") == []


def btc_rules(access):
    return parse_exchange_info(access.client.exchange_info())["BTCUSDT"]


@pytest.mark.parametrize("room, expected", [
    (None, Sized), (D("1000"), Sized), (D("150"), Refused),
], ids=["no total cap known", "room enough", "upsized past the total cap"])
def test_an_upsized_open_must_fit_the_room_the_governor_left_under_the_total_cap(access, room, expected) -> None:
    small = Plan.from_fields({"plan_id": "up-1", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY",
                              "qty": "0.001", "reduceOnly": "false"})  # 88 USDT: under the 100 USDT minimum

    sized = size_order(small, D(0), btc_rules(access), D("88000"), allow_upsize=True, max_notional=D("1000"),
                       room_in_total=room)

    assert isinstance(sized, expected)
    if expected is Refused:
        assert sized.reason == Reason.TOTAL_NOTIONAL_EXCEEDED


def test_each_lookup_attempt_tells_liveness_the_executor_is_not_hung(r) -> None:
    beats = []

    def unavailable(*_args):
        raise ExchangeUnavailable("get_order: connection refused")

    exchange = SimpleNamespace(client=SimpleNamespace(get_order=unavailable))
    resolver = Resolver(r, exchange, attempts=4, log=get_logger(), wait=lambda _s: None,
                        beat=lambda: beats.append(1))

    with pytest.raises(OutcomeStillUnknown):
        resolver.look_up("BTCUSDT", "qt-slow-1")

    assert len(beats) == 4

