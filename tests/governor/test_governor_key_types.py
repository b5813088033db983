"""A key of another Redis type than the fleet writes (an operator's HSET where a string belongs, a SET over a
hash) is an unreadable value, decided as such: it does not fail the script that reads it, which failed every
plan of the batch (any symbol) on every delivery, closes included. Found in a review."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from governor_support import Clock, close_plan, plan, snapshot

from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from shared import keys, permits
from shared import snapshot as exchange_snapshot
from shared.permits import PermitKind
from shared.schema import Reason

LIMITS = Limits(max_open_positions=10, max_total_notional=Decimal(10_000), max_notional_per_trade=Decimal(1_000))
MARKS = {"BTCUSDT": "80000", "ETHUSDT": "1000"}


def governor(r: redis.Redis) -> Governor:
    exchange_snapshot.publish(r, snapshot({"BTCUSDT": "0.002", "ETHUSDT": "0.1"}, MARKS))
    return Governor(r, LIMITS, clock=Clock())


def reason(r: redis.Redis, plan_id: str) -> Reason:
    return permits.peek(r, PermitKind.P32, plan_id).reason


def test_a_cooldown_key_of_another_type_does_not_fail_the_other_plans_of_the_batch(r) -> None:
    r.hset(keys.cooldown_last_exec("ETHUSDT"), "ts", "1")

    governor(r).handle_batch([(plan("on-btc", "BTCUSDT"), None), (plan("on-eth", "ETHUSDT", qty="0.1"), None)])

    assert reason(r, "on-btc") is Reason.OPEN_ALLOWED
    assert permits.peek(r, PermitKind.P32, "on-eth") is not None  # decided, whatever the unreadable value made of it


@pytest.mark.parametrize("key, opens, closes", [
    (keys.KILL, Reason.KILL_SWITCH, Reason.KILL_SWITCH),  # unreadable: halted, as any unreadable kill value
    (keys.GOVERNOR_EXECUTION, Reason.EXECUTION_DISABLED, Reason.CLOSE_ALLOWED),  # unreadable: reduce-only
])
def test_a_switch_of_another_type_reads_as_unreadable_and_fails_safe(r, key, opens, closes) -> None:
    r.hset(key, "value", "1")
    deciding = governor(r)

    deciding.handle_batch([(plan("an-open"), None)])
    deciding.handle(close_plan("a-close"))

    assert (reason(r, "an-open"), reason(r, "a-close")) == (opens, closes)


def test_running_totals_of_another_type_are_rebuilt(r) -> None:
    deciding = governor(r)
    r.set(keys.GOVERNOR_INFLIGHT_TOTALS, "0")

    deciding.handle_batch([(plan("after-garble"), None)])

    assert reason(r, "after-garble") is Reason.OPEN_ALLOWED
    assert r.type(keys.GOVERNOR_INFLIGHT_TOTALS) == "hash"
