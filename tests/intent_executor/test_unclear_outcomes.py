"""Orders the executor cannot see the end of: believed absent only when no request can still land, final
only in a final state, and never sent again. Real Redis, the simulator over HTTP."""

from __future__ import annotations

import itertools
import time
import json
from decimal import Decimal as D

import pytest
import redis

from microservices.intent_executor.executor import Executor
from microservices.intent_executor.resolve import Marker
from microservices.intent_executor.settings import ExecutorSettings
from shared import keys, ledger
from shared.exchange.errors import ExchangeUnavailable, OutcomeUnknown
from shared.modes import ApplyMode
from shared.orders import client_order_id_for
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.runtime.exchange import ExchangeAccess
from shared.schema import Plan
from tests.intent_executor.test_executor_sim import grant, orders_for, plan, results_of, the_result


def consumer(r: redis.Redis, access, **executor_kwargs) -> StreamConsumer:
    executor = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                        consumer_name="test-executor", wait=lambda _s: None, **executor_kwargs)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="test-executor",
                            block_ms=50, claim_idle_ms=60_000)
    return StreamConsumer(r, config, Plan.from_fields, executor.handle, on_give_up=executor.give_up)


def age_the_marker(r: redis.Redis, plan_id: str, by_ms: int) -> None:
    marker = Marker.parse(r.get(keys.plan_order_marker(plan_id)))
    r.set(keys.plan_order_marker(plan_id), f"{marker.client_order_id} {marker.attempt} {marker.marked_ms - by_ms}")


def test_no_order_right_after_a_dropped_send_is_not_believed_until_no_request_can_land(r, access, sim) -> None:
    grant(r, "drop-1")
    plan(r, "drop-1", "BUY", "0.002")
    sim.set_faults(drop_connection=1.0, drop_after_execute=False)  # the request never reached the engine
    try:
        consumer(r, access).run(burst=True)
    finally:
        sim.set_faults(drop_connection=0.0, drop_after_execute=True)

    assert results_of(r, "drop-1") == []  # pending: the exchange might still accept a request sent then
    assert Marker.parse(r.get(keys.plan_order_marker("drop-1"))).marked_ms > 0

    age_the_marker(r, "drop-1", by_ms=60_000)  # as when it is delivered again, past the window
    consumer(r, access).run(burst=True)

    assert the_result(r, "drop-1")["reason"] == "order_not_found"
    assert orders_for(sim, "drop-1") == []


def test_an_order_found_still_open_is_waited_for_not_reported(r, access, sim) -> None:
    grant(r, "open-order-1")
    plan(r, "open-order-1", "BUY", "0.002")
    r.set(keys.plan_order_marker("open-order-1"), f"{client_order_id_for('open-order-1')} earlier 1")
    access.client._client.futures_create_order(  # what the earlier attempt left: a LIMIT far below the market
        symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.002", price="50000", timeInForce="GTC",
        newClientOrderId=client_order_id_for("open-order-1"))

    consumer(r, access).run(burst=True)
    assert results_of(r, "open-order-1") == []

    access.client.cancel_order("BTCUSDT", client_order_id_for("open-order-1"))
    consumer(r, access).run(burst=True)

    result = the_result(r, "open-order-1")
    assert (result["executed"], result["order_status"]) == ("false", "CANCELED")
    assert len(orders_for(sim, "open-order-1")) == 1


def test_nothing_is_sent_long_after_the_permits_were_taken(r, access, sim) -> None:
    grant(r, "late-send-1")
    plan(r, "late-send-1", "BUY", "0.002")
    ticks = itertools.count(step=100.0)  # every look at the clock is 100 s after the last

    consumer(r, access, monotonic=lambda: next(ticks)).run(burst=True)

    result = the_result(r, "late-send-1")
    assert (result["executed"], result["reason"]) == ("false", "send_deadline_passed")
    assert orders_for(sim, "late-send-1") == []
    assert D(result["qty"]) == D("0.002")


def test_a_result_written_after_a_crash_carries_both_permits_though_their_keys_expired(r, access, sim,
                                                                                      monkeypatch) -> None:
    # Found in a review: the results written by a later attempt (after a crash, an order found NEW, a give-up) had
    # no p32_permit/p33_permit, though every result carries both permits' context. The order marker carries them.
    grant(r, "crash-1")
    plan(r, "crash-1", "BUY", "0.002")
    send = access.client.create_market_order

    def sends_then_crashes(*args, **kwargs):
        send(*args, **kwargs)
        raise RuntimeError("the executor died before writing the result")

    monkeypatch.setattr(access.client, "create_market_order", sends_then_crashes)
    consumer(r, access).run(burst=True)
    monkeypatch.undo()
    assert results_of(r, "crash-1") == []
    r.delete(keys.permit_p32("crash-1"), keys.permit_p33("crash-1"))  # their TTL is over

    consumer(r, access).run(burst=True)  # its own pending entry, read again as after a restart

    result = the_result(r, "crash-1")
    assert (result["executed"], result["order_status"]) == ("true", "FILLED")
    assert json.loads(result["p32_permit"])["allow"] is True
    assert json.loads(result["p33_permit"])["reason"] == "sanity_checks_passed"
    assert len(orders_for(sim, "crash-1")) == 1


class _Wrapped:
    """The fleet's exchange client, with what a test overrides."""

    def __init__(self, real) -> None:
        self.real = real

    def __getattr__(self, name):
        return getattr(self.real, name)


class _LostReplyLookupsDown(_Wrapped):
    """The order executes but its reply is lost, and every lookup fails: the plan stays pending with its marker."""

    def create_market_order(self, *args, **kwargs):
        self.real.create_market_order(*args, **kwargs)
        raise OutcomeUnknown("read timed out (test)")

    def get_order(self, *_args, **_kwargs):
        raise ExchangeUnavailable("get_order: connection refused (test)")


@pytest.mark.parametrize("retype", [{"side": "SELL"}, {"decision": "HOLD"}], ids=["other side", "not execute"])
def test_a_plan_id_retyped_with_other_content_is_not_resolved_against_the_first_plans_order(r, access, sim,
                                                                                           retype) -> None:
    """Found in a review: while the first plan's order was unresolved, a second entry under its plan_id (a SELL)
    was resolved against the BUY order: a result saying SELL executed and a ledger short 0.002 while the exchange
    held +0.002. The marker carries the permits taken, bound to the first plan's digest: the second entry is
    dead-lettered as duplicate_plan without a result, and the first entry resolves its own order. A later review:
    a retype with decision HOLD was ended decision_not_execute before the marker was looked at."""
    grant(r, "retyped-1")
    plan(r, "retyped-1", "BUY", "0.002")
    flaky = ExchangeAccess(access.settings, _LostReplyLookupsDown(access.client), access.filters)
    consumer(r, flaky).run(burst=True)
    assert results_of(r, "retyped-1") == [] and [o["status"] for o in orders_for(sim, "retyped-1")] == ["FILLED"]

    first = r.xrange(keys.Stream.APPLY_PLAN)[-1][1]
    r.xadd(keys.Stream.APPLY_PLAN, {**first, **retype})  # an operator's retype, first delivered elsewhere
    raw = r.get(keys.plan_order_marker("retyped-1"))
    head, carried = raw.split("\n", 1)
    words = head.split(" ")
    r.set(keys.plan_order_marker("retyped-1"), f"{words[0]} {words[1]} {int(words[2]) - 60_000}\n{carried}")
    other = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET, executor_permit_wait_ms=300),
                     consumer_name="other-executor", wait=lambda _s: None)
    config = ConsumerConfig(stream=keys.Stream.APPLY_PLAN, group=keys.Group.INTENT_EXECUTOR, consumer="other-executor",
                            block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, config, Plan.from_fields, other.handle, on_give_up=other.give_up).run(burst=True)

    assert results_of(r, "retyped-1") == []  # the plan_id is the first entry's to end
    [(_id, dead)] = r.xrange(keys.Stream.DEAD_LETTER)
    assert dead["reason"] == "duplicate_plan" and "other content" in dead["detail"]
    assert len(orders_for(sim, "retyped-1")) == 1

    consumer(r, access).run(burst=True)  # the first entry, delivered again, finds its order

    result = the_result(r, "retyped-1")
    assert (result["side"], result["executed"], result["filled_qty"]) == ("BUY", "true", "0.002")
    assert ledger.read(r, "BTCUSDT").amount == D("0.002")


def test_a_wall_clock_step_during_an_unclear_send_does_not_make_no_order_believed_sooner(r, access, sim) -> None:
    """Found in a review: the window after an unclear send ran on the wall clock, so an NTP step forward while the
    exchange could still accept the request made "no such order" believed at once. It runs on the monotonic clock."""
    stepped = [0.0]

    class StepsTheClockWhileSending(_Wrapped):
        def create_market_order(self, *args, **kwargs):
            stepped[0] = 3600.0  # the wall clock jumps an hour while the request is out
            raise OutcomeUnknown("read timed out (test)")  # and it never reached the exchange

    grant(r, "stepped-1")
    plan(r, "stepped-1", "BUY", "0.002")
    stepping = ExchangeAccess(access.settings, StepsTheClockWhileSending(access.client), access.filters)
    consumer(r, stepping, clock=lambda: time.time() + stepped[0]).run(burst=True)

    assert results_of(r, "stepped-1") == []  # still pending: a request sent a moment ago may yet land
    assert orders_for(sim, "stepped-1") == []


def test_giving_up_a_retyped_entry_leaves_the_first_plans_order_to_its_own_entry(r, access, sim) -> None:
    """Found in review: giving up an entry (past its deliveries) wrote gave_up_after_retries for its plan_id
    without looking whose order marker it was: a retype with other content ended the first plan, whose order
    filled, and the ledger never recorded the fill."""
    from shared.runtime.consumer import Entry

    grant(r, "retyped-2")
    plan(r, "retyped-2", "BUY", "0.002")
    flaky = ExchangeAccess(access.settings, _LostReplyLookupsDown(access.client), access.filters)
    consumer(r, flaky).run(burst=True)
    first = r.xrange(keys.Stream.APPLY_PLAN)[-1][1]
    other = Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="other-executor",
                     wait=lambda _s: None)

    other.give_up(Entry(keys.Stream.APPLY_PLAN, "1-1", {**first, "side": "SELL"}, 6), "max_deliveries_exceeded")

    assert results_of(r, "retyped-2") == [] and not r.exists(keys.plan_claim("retyped-2"))
    consumer(r, access).run(burst=True)  # the first entry, delivered again, finds its order
    result = the_result(r, "retyped-2")
    assert (result["side"], result["executed"], result["filled_qty"]) == ("BUY", "true", "0.002")


def test_a_plan_whose_order_was_out_when_the_executor_was_upgraded_is_resolved_not_dead_lettered(r, access,
                                                                                                  sim) -> None:
    """Found in review: the digest changed with the release of 2026-12-08; an order marker written by the earlier
    executor (its permits bound to the digest as that version took it) read as another plan's under the plan_id, so
    the entry was dead-lettered duplicate_plan with its order filled and no result, ever. The earlier digest of the
    same plan is still its own."""
    grant(r, "upgraded-1")
    plan(r, "upgraded-1", "BUY", "0.002")
    flaky = ExchangeAccess(access.settings, _LostReplyLookupsDown(access.client), access.filters)
    consumer(r, flaky).run(burst=True)
    assert results_of(r, "upgraded-1") == [] and [o["status"] for o in orders_for(sim, "upgraded-1")] == ["FILLED"]
    parsed = Plan.from_fields(r.xrange(keys.Stream.APPLY_PLAN)[-1][1])
    marker = r.get(keys.plan_order_marker("upgraded-1"))
    assert parsed.digest in marker and parsed.legacy_digest != parsed.digest
    r.set(keys.plan_order_marker("upgraded-1"), marker.replace(parsed.digest, parsed.legacy_digest), keepttl=True)

    consumer(r, access).run(burst=True)  # the new executor meets the earlier one's marker

    result = the_result(r, "upgraded-1")
    assert (result["side"], result["executed"], result["filled_qty"]) == ("BUY", "true", "0.002")
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0
