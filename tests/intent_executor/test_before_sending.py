"""A request the executor makes after taking the permits and before the order (the mark price, the open's
leverage) fails on the simulator over HTTP: the plan ends at once in a result that says nothing was sent and
why. Before, a failing mark price left the entry pending, to end as order_not_found deliveries later."""

from __future__ import annotations

import json

import pytest

from shared import keys
from tests.intent_executor.test_executor_sim import grant, orders_for, plan, run_executor, the_result


@pytest.fixture
def outage(sim):
    yield lambda endpoint, kind: sim.set_faults(outages={endpoint: kind})
    sim.set_faults(outages={})


@pytest.mark.parametrize("kind", ["service_unavailable", "rate_limited", "ip_banned", "waf_blocked"])
def test_no_mark_price_ends_the_plan_unsent_and_says_why(r, access, sim, outage, kind) -> None:
    outage("GET /fapi/v1/premiumIndex", kind)  # no snapshot in Redis: the executor asks for the mark
    grant(r, "no-mark")
    plan(r, "no-mark", "BUY", "0.002")

    run_executor(r, access)

    result = the_result(r, "no-mark")
    detail = json.loads(result["detail"])
    assert (result["executed"], result["reason"]) == ("false", "exchange_unavailable")
    assert detail["before_sending"] == "mark_price" and detail["error"].startswith("mark_price: ")
    assert orders_for(sim, "no-mark") == []
    assert r.xpending(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR)["pending"] == 0  # ended, not retried
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0


def test_a_leverage_request_that_is_not_served_says_which_step(r, access, sim, outage) -> None:
    outage("POST /fapi/v1/leverage", "service_unavailable")
    grant(r, "no-lev")
    plan(r, "no-lev", "BUY", "0.002", leverage="3")

    run_executor(r, access)

    result = the_result(r, "no-lev")
    assert (result["executed"], result["reason"]) == ("false", "leverage_not_set")
    assert json.loads(result["detail"])["before_sending"] == "set_leverage"
    assert orders_for(sim, "no-lev") == []


def test_an_unreadable_snapshot_is_passed_over_for_the_exchanges_mark(r, access, sim) -> None:
    r.set(keys.EXCHANGE_POSITIONS, "{not json")
    grant(r, "garbled")
    plan(r, "garbled", "BUY", "0.002")

    run_executor(r, access)

    assert the_result(r, "garbled")["order_status"] == "FILLED"
    assert r.xpending(keys.Stream.APPLY_PLAN, keys.Group.INTENT_EXECUTOR)["pending"] == 0
