"""The P3.3 gates as pure functions: tables of plans against snapshots, ledgers and clocks."""

from __future__ import annotations

from dataclasses import replace

import pytest
from p33_helpers import NOW_MS, D, close_plan, ledger, plan, policy, rules, snapshot

from microservices.position_state_brain.gates import OpenOnPosition, decide
from shared.ledger import qty_tolerance as ledger_tolerance
from shared.schema import Plan, Reason, Side

SEED_TEST_OPEN_005 = {
    "plan_id": "test_open_005", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
    "qty": "0.001", "reduceOnly": "false", "source": "test_manual",
}


DEFAULT = object()


def run(p, snap=DEFAULT, led=None, last_exec_ms=None, symbol_rules=DEFAULT, pol=None, now_ms=NOW_MS):
    snap = snapshot() if snap is DEFAULT else snap
    symbol_rules = rules(p.symbol) if symbol_rules is DEFAULT else symbol_rules
    return decide(p, snap, led, last_exec_ms, symbol_rules, pol or policy(), now_ms)


def test_the_seed_open_plan_gets_an_open_permit_with_safe_qty_zero():
    seed_plan = Plan.from_fields(SEED_TEST_OPEN_005)

    verdict = run(seed_plan)

    assert verdict.allow is True
    assert verdict.reason is Reason.SANITY_CHECKS_PASSED
    assert verdict.safe_qty == 0


@pytest.mark.parametrize("typed", ["false", "False", "FALSE", "0", "no", " false "])
def test_a_false_string_is_never_a_close(typed):
    p = plan(reduceOnly=typed)

    verdict = run(p)

    assert p.is_close is False
    assert (verdict.allow, verdict.reason, verdict.context["pathway"]) == (True, Reason.SANITY_CHECKS_PASSED, "open")


@pytest.mark.parametrize("typed", ["true", "True", "1", "yes"])
def test_a_true_string_is_a_close(typed):
    assert plan(reduceOnly=typed).is_close is True


DENIALS = [
    ("symbol not allowlisted", dict(p=plan(symbol="DOGEUSDT")), Reason.SYMBOL_NOT_ALLOWED),
    ("no snapshot", dict(snap=None), Reason.STALE_SNAPSHOT),
    ("snapshot past threshold", dict(snap=snapshot(fetched_at_ms=NOW_MS - 10_001)), Reason.STALE_SNAPSHOT),
    ("no trading rules", dict(symbol_rules=None), Reason.UNKNOWN_SYMBOL),
    ("ledger disagrees", dict(led=ledger("BTCUSDT", "0.005")), Reason.RECONCILE_REQUIRED_QTY_MISMATCH),
    ("open within cooldown", dict(last_exec_ms=NOW_MS - 14_999, snap=snapshot(fetched_at_ms=NOW_MS)),
     Reason.COOLDOWN),
    ("open on a position (deny)", dict(snap=snapshot({"BTCUSDT": "0.01"}), led=ledger("BTCUSDT", "0.01")),
     Reason.POSITION_EXISTS),
    ("scale_in against the position", dict(p=plan(side="SELL"), snap=snapshot({"BTCUSDT": "0.01"}),
                                           led=ledger("BTCUSDT", "0.01"),
                                           pol=policy(open_on_position=OpenOnPosition.SCALE_IN)),
     Reason.SIDE_MISMATCH),
    ("close without a position", dict(p=close_plan("SELL", "0.01")), Reason.NO_POSITION),
    ("close adding to a long", dict(p=close_plan("BUY", "0.01"), snap=snapshot({"BTCUSDT": "0.01"}),
                                    led=ledger("BTCUSDT", "0.01")), Reason.SIDE_MISMATCH),
    ("close adding to a short", dict(p=close_plan("SELL", "0.01"), snap=snapshot({"BTCUSDT": "-0.01"}),
                                     led=ledger("BTCUSDT", "-0.01")), Reason.SIDE_MISMATCH),
    ("close below one step", dict(p=close_plan("SELL", "0.0009"), snap=snapshot({"BTCUSDT": "0.01"}),
                                  led=ledger("BTCUSDT", "0.01")), Reason.BELOW_MIN_QTY),
]


@pytest.mark.parametrize("case, inputs, reason", DENIALS, ids=[c[0] for c in DENIALS])
def test_each_gate_denies_with_its_reason(case, inputs, reason):
    inputs = dict(inputs)

    verdict = run(inputs.pop("p", plan()), **inputs)

    assert (verdict.allow, verdict.reason, verdict.safe_qty) == (False, reason, 0)


@pytest.mark.parametrize("requested, position, side, expected", [
    ("0.0155", "0.012", "SELL", "0.012"),
    ("0.0047", "0.01", "SELL", "0.004"),
    ("0.005", "0.01", "SELL", "0.005"),
    ("0.0129", "-0.02", "BUY", "0.012"),
    ("1", "-0.0031", "BUY", "0.003"),
])
def test_close_safe_qty_is_the_smaller_of_plan_and_position_rounded_down(requested, position, side, expected):
    held = snapshot({"BTCUSDT": position})

    verdict = run(close_plan(side, requested), snap=held, led=ledger("BTCUSDT", position))

    assert (verdict.allow, verdict.reason) == (True, Reason.SANITY_CHECKS_PASSED)
    assert verdict.safe_qty == D(expected)
    assert str(verdict.safe_qty) == expected


def test_closes_ignore_the_open_cooldown():
    held = snapshot({"BTCUSDT": "0.01"}, fetched_at_ms=NOW_MS)

    verdict = run(close_plan("SELL", "0.01"), snap=held, led=ledger("BTCUSDT", "0.01"), last_exec_ms=NOW_MS - 1)

    assert verdict.allow is True and verdict.safe_qty == D("0.01")


@pytest.mark.parametrize("elapsed_ms, allowed", [(14_999, False), (15_000, True), (60_000, True)])
def test_the_open_cooldown_counts_from_the_last_executed_order(elapsed_ms, allowed):
    verdict = run(plan(), last_exec_ms=NOW_MS - elapsed_ms, snap=snapshot(fetched_at_ms=NOW_MS))

    assert verdict.allow is allowed
    assert verdict.reason is (Reason.SANITY_CHECKS_PASSED if allowed else Reason.COOLDOWN)


@pytest.mark.parametrize("mode, side, position, allowed, reason", [
    (OpenOnPosition.DENY, "BUY", "0.01", False, Reason.POSITION_EXISTS),
    (OpenOnPosition.DENY, "SELL", "-0.01", False, Reason.POSITION_EXISTS),
    (OpenOnPosition.SCALE_IN, "BUY", "0.01", True, Reason.SANITY_CHECKS_PASSED),
    (OpenOnPosition.SCALE_IN, "SELL", "-0.01", True, Reason.SANITY_CHECKS_PASSED),
    (OpenOnPosition.SCALE_IN, "BUY", "-0.01", False, Reason.SIDE_MISMATCH),
    (OpenOnPosition.SCALE_IN, "SELL", "0.01", False, Reason.SIDE_MISMATCH),
])
def test_open_on_an_existing_position_follows_the_documented_choice(mode, side, position, allowed, reason):
    verdict = run(plan(side=side), snap=snapshot({"BTCUSDT": position}), led=ledger("BTCUSDT", position),
                  pol=policy(open_on_position=mode))

    assert (verdict.allow, verdict.reason, verdict.safe_qty) == (allowed, reason, 0)


def test_scale_in_still_waits_for_the_cooldown():
    verdict = run(plan(), snap=snapshot({"BTCUSDT": "0.01"}), led=ledger("BTCUSDT", "0.01"), last_exec_ms=NOW_MS - 5000,
                  pol=policy(open_on_position=OpenOnPosition.SCALE_IN))

    assert verdict.reason is Reason.COOLDOWN


def test_the_seed_mismatch_holds_btcusdt_only():
    held = snapshot({"BTCUSDT": "0.062"})
    btc_ledger = ledger("BTCUSDT", "0.002")

    btc = run(close_plan("SELL", "0.002"), snap=held, led=btc_ledger)
    eth = run(plan(symbol="ETHUSDT", qty="0.01"), snap=held, led=None)

    assert (btc.allow, btc.reason) == (False, Reason.RECONCILE_REQUIRED_QTY_MISMATCH)
    assert btc.context == {"exchange_amt": "0.062", "ledger_amt": "0.002", "diff": "0.06", "tolerance": "0.001"}
    assert (eth.allow, eth.reason) == (True, Reason.SANITY_CHECKS_PASSED)


def test_the_mismatch_clears_once_reconcile_adopts_the_exchange_amount():
    held = snapshot({"BTCUSDT": "0.062"})

    verdict = run(close_plan("SELL", "0.002"), snap=held, led=ledger("BTCUSDT", "0.062"))

    assert (verdict.allow, verdict.safe_qty) == (True, D("0.002"))


@pytest.mark.parametrize("exchange, ledger_amt, steps, agrees", [
    ("0.011", "0.010", 1, True),
    ("0.012", "0.010", 1, False),
    ("0.012", "0.010", 2, True),
    ("0.010", "0.010", 0, True),
    ("0.011", "0.010", 0, False),
    ("0.001", None, 1, True),
    ("-0.01", "0.01", 1, False),
])
def test_the_ledger_tolerance_is_steps_times_the_step_size(exchange, ledger_amt, steps, agrees):
    led = ledger("BTCUSDT", ledger_amt) if ledger_amt else None

    verdict = run(close_plan("SELL", "0.001"), snap=snapshot({"BTCUSDT": exchange}), led=led,
                  pol=policy(qty_tolerance_steps=steps))

    assert (verdict.reason is not Reason.RECONCILE_REQUIRED_QTY_MISMATCH) is agrees


@pytest.mark.parametrize("inputs, first_reason", [
    (dict(p=plan(symbol="DOGEUSDT"), snap=snapshot(fetched_at_ms=0)), Reason.SYMBOL_NOT_ALLOWED),
    (dict(snap=snapshot(fetched_at_ms=0), led=ledger("BTCUSDT", "1")), Reason.STALE_SNAPSHOT),
    (dict(symbol_rules=None, led=ledger("BTCUSDT", "1")), Reason.UNKNOWN_SYMBOL),
    (dict(led=ledger("BTCUSDT", "1"), last_exec_ms=NOW_MS - 1, snap=snapshot(fetched_at_ms=NOW_MS)),
     Reason.RECONCILE_REQUIRED_QTY_MISMATCH),
])
def test_gates_run_in_order_and_the_first_denial_wins(inputs, first_reason):
    inputs = dict(inputs)

    verdict = run(inputs.pop("p", plan()), **inputs)

    assert verdict.reason is first_reason


ALLOWLIST_CASES = [
    ("open outside the allowlist", plan(symbol="XRPUSDT", qty="10"), {}, None, False, Reason.SYMBOL_NOT_ALLOWED),
    ("close of a held position outside it", close_plan("SELL", "10", "XRPUSDT"), {"XRPUSDT": "10"}, "10", True,
     Reason.SANITY_CHECKS_PASSED),
    ("close of a held short outside it", close_plan("BUY", "4", "XRPUSDT"), {"XRPUSDT": "-10"}, "-10", True,
     Reason.SANITY_CHECKS_PASSED),
    ("close with nothing held", close_plan("SELL", "10", "XRPUSDT"), {}, None, False, Reason.NO_POSITION),
    ("close adding to the position", close_plan("BUY", "10", "XRPUSDT"), {"XRPUSDT": "10"}, "10", False,
     Reason.SIDE_MISMATCH),
    ("close while the ledger disagrees", close_plan("SELL", "10", "XRPUSDT"), {"XRPUSDT": "10"}, "3", False,
     Reason.RECONCILE_REQUIRED_QTY_MISMATCH),
]


@pytest.mark.parametrize(("case", "p", "held", "ledger_amt", "allowed", "reason"), ALLOWLIST_CASES,
                         ids=[c[0] for c in ALLOWLIST_CASES])
def test_the_allowlist_limits_opens_and_closes_face_only_the_position_checks(case, p, held, ledger_amt, allowed, reason):
    led = ledger("XRPUSDT", ledger_amt) if ledger_amt else None

    verdict = run(p, snap=snapshot(held), led=led, symbol_rules=rules("XRPUSDT", "0.1"))

    assert (verdict.allow, verdict.reason) == (allowed, reason)


@pytest.mark.parametrize(("market_step", "exchange", "agrees"), [
    ("0.001", "0.011", True),
    ("0.01", "0.011", True),   # the finer of LOT_SIZE (0.001) and MARKET_LOT_SIZE steps
    ("0.01", "0.012", False),  # two LOT_SIZE steps apart: held, though within one MARKET_LOT_SIZE step
    ("0.0001", "0.0102", False),
    ("0.0001", "0.0101", True),
])
def test_the_tolerance_is_the_shared_one_in_steps_of_the_finer_lot_step(market_step, exchange, agrees):
    symbol_rules = replace(rules(), market_step_size=D(market_step))

    verdict = run(close_plan("SELL", "0.001"), snap=snapshot({"BTCUSDT": exchange}), led=ledger("BTCUSDT", "0.010"),
                  symbol_rules=symbol_rules)

    assert (verdict.reason is not Reason.RECONCILE_REQUIRED_QTY_MISMATCH) is agrees
    assert ledger_tolerance(symbol_rules, 1) == min(D("0.001"), D(market_step))


@pytest.mark.parametrize("on_its_way, pol, expected", [
    ("BUY", policy(cooldown_s=0), Reason.POSITION_EXISTS),
    ("BUY", policy(cooldown_s=0, open_on_position=OpenOnPosition.SCALE_IN), Reason.SANITY_CHECKS_PASSED),
    ("SELL", policy(cooldown_s=0, open_on_position=OpenOnPosition.SCALE_IN), Reason.SIDE_MISMATCH),
    ("BUY", policy(cooldown_s=15, open_on_position=OpenOnPosition.SCALE_IN), Reason.COOLDOWN),
    (None, policy(cooldown_s=15), Reason.SANITY_CHECKS_PASSED),
], ids=["deny", "scale in", "scale in, other side", "cooldown", "none on its way"])
def test_an_open_permitted_and_not_filled_yet_counts_as_a_position_on_its_way(on_its_way, pol, expected):
    verdict = decide(plan(side="BUY"), snapshot(), None, None, rules("BTCUSDT"), pol, NOW_MS,
                     Side(on_its_way) if on_its_way else None)

    assert verdict.reason is expected


def test_a_close_does_not_wait_for_an_open_on_its_way():
    held = snapshot({"BTCUSDT": "0.003"})
    verdict = decide(close_plan("SELL", "0.003"), held, ledger("BTCUSDT", "0.003"), None, rules("BTCUSDT"), policy(),
                     NOW_MS, Side.BUY)

    assert verdict.allow and verdict.safe_qty == D("0.003")


def test_permitted_opens_settle_by_result_expire_by_time_and_never_count_their_own_plan():
    from microservices.position_state_brain.permitted import GRACE_MS, PermittedOpens

    opens = PermittedOpens(permit_ttl_s=60)
    opens.add("a", "BTCUSDT", Side.BUY, NOW_MS)
    opens.add("b", "BTCUSDT", Side.SELL, NOW_MS + 1)

    assert opens.side_on("BTCUSDT", NOW_MS, other_than="c") is Side.BUY
    assert opens.side_on("BTCUSDT", NOW_MS, other_than="a") is Side.SELL  # a replay of a does not count a
    assert opens.side_on("ETHUSDT", NOW_MS, other_than="c") is None
    opens.settle(["a"])
    assert opens.side_on("BTCUSDT", NOW_MS, other_than="c") is Side.SELL
    assert opens.side_on("BTCUSDT", NOW_MS + 60_000 + GRACE_MS + 1, other_than="c") is None


def test_a_permitted_open_permitted_again_moves_behind_the_later_ones_so_they_still_expire():
    from microservices.position_state_brain.permitted import GRACE_MS, PermittedOpens

    lifetime = 60_000 + GRACE_MS
    opens = PermittedOpens(permit_ttl_s=60)
    opens.add("a", "BTCUSDT", Side.BUY, NOW_MS)
    opens.add("b", "BTCUSDT", Side.SELL, NOW_MS + 1)
    opens.add("a", "BTCUSDT", Side.BUY, NOW_MS + 10_000)  # a replay of a, decided again

    assert opens.side_on("BTCUSDT", NOW_MS + lifetime + 2, other_than="c") is Side.BUY  # b expired, a not yet
    assert not opens.holds("b") and opens.holds("a")
