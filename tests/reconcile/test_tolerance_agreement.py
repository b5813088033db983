"""P3.3 and reconcile share one tolerance: no configuration lets P3.3 hold a symbol that reconcile
calls agreement, so a held symbol is always healed."""

from __future__ import annotations

import itertools
from decimal import Decimal as D

import pytest

from microservices.position_state_brain.gates import GatePolicy, decide as p33_decide
from microservices.reconcile.decide import Observation
from microservices.reconcile.reconciler import Reconciler
from microservices.reconcile.settings import ReconcileSettings
from shared import keys, ledger
from shared.exchange.filters import SymbolRules
from shared.runtime.consumer import Entry
from shared.schema import Plan, PlanResult, Reason
from shared.snapshot import ExchangeSnapshot, PositionState

NOW_MS = 1_800_000_000_000
STEPS = (0, 1, 2)
LOTS = [("0.001", "0.001"), ("0.001", "0.01"), ("0.01", "0.001")]  # (LOT_SIZE step, MARKET_LOT_SIZE step)


def rules(step: str, market_step: str) -> SymbolRules:
    return SymbolRules(
        symbol="BTCUSDT", status="TRADING", tick_size=D("0.1"), min_price=D("1"), max_price=D("1000000"),
        min_qty=D(step), max_qty=D("1000"), step_size=D(step), market_min_qty=D(market_step), market_max_qty=D("120"),
        market_step_size=D(market_step), min_notional=D("5"), quantity_precision=3, price_precision=2,
    )


def p33_holds(symbol_rules: SymbolRules, p33_steps: int, exchange_amt: D, ledger_amt: D) -> bool:
    close = Plan.from_fields({"plan_id": "c", "decision": "EXECUTE", "symbol": "BTCUSDT", "side": "SELL",
                              "qty": "0.001", "reduceOnly": "true"})
    held = ExchangeSnapshot(NOW_MS, {"BTCUSDT": PositionState("BTCUSDT", exchange_amt, D("88000"))}, {"BTCUSDT": D("88000")})
    position = ledger.LedgerPosition("BTCUSDT", ledger_amt, D("88000"))
    policy = GatePolicy(frozenset({"BTCUSDT"}), 10.0, p33_steps, 15.0)
    verdict = p33_decide(close, held, position, None, symbol_rules, policy, NOW_MS)
    return verdict.reason is Reason.RECONCILE_REQUIRED_QTY_MISMATCH


def reconcile_agrees(symbol_rules: SymbolRules, settings: ReconcileSettings, exchange_amt: D, ledger_amt: D) -> bool:
    tolerance = ledger.qty_tolerance(symbol_rules, settings.heal_tolerance_steps)
    return Observation("BTCUSDT", exchange_amt, ledger_amt, tolerance).agrees


@pytest.mark.parametrize(("lot", "p33_steps", "reconcile_steps"), list(itertools.product(LOTS, STEPS, STEPS)))
def test_whatever_p33_holds_reconcile_heals(lot, p33_steps, reconcile_steps) -> None:
    symbol_rules = rules(*lot)
    settings = ReconcileSettings(p33_qty_tolerance_steps=p33_steps, reconcile_tolerance_steps=reconcile_steps)
    finest = min(D(lot[0]), D(lot[1]))
    ledger_amt = D("0.05")

    held_but_agreeing = [diff for diff in range(0, 30)
                         if p33_holds(symbol_rules, p33_steps, ledger_amt + diff * finest, ledger_amt)
                         and reconcile_agrees(symbol_rules, settings, ledger_amt + diff * finest, ledger_amt)]

    assert held_but_agreeing == []


@pytest.mark.parametrize(("step", "market_step", "steps", "tolerance"), [
    ("0.001", "0.001", 1, "0.001"),
    ("0.001", "0.01", 2, "0.002"),
    ("0.01", "0.001", 1, "0.001"),
    ("0.001", "0.001", 0, "0"),
])
def test_the_shared_tolerance_counts_steps_of_the_finer_lot_step(step, market_step, steps, tolerance) -> None:
    assert ledger.qty_tolerance(rules(step, market_step), steps) == D(tolerance)


class Clock:
    def __init__(self) -> None:
        self.now = NOW_MS / 1000

    def __call__(self) -> float:
        return self.now


def one_step_apart(r, access) -> None:
    """The exchange holds 0.063 BTC, the ledger says 0.062: one step apart."""
    access.client.create_market_order("BTCUSDT", "BUY", D("0.063"), False, "manual-btc")
    r.hset(keys.position_ledger("BTCUSDT"), mapping={"position_amt": "0.062", "entry_price": "88000"})


@pytest.mark.parametrize(("p33_steps", "reconcile_steps", "healed"), [
    (0, 1, True),   # the finding: P3.3 tightened, reconcile's default would have called it agreement
    (1, 0, True),
    (1, 1, False),  # both tolerate one step: nothing is held, nothing to heal
])
def test_reconcile_heals_above_the_tighter_of_the_two_settings(r, access, sim, p33_steps, reconcile_steps, healed) -> None:
    one_step_apart(r, access)
    settings = ReconcileSettings(reconcile_grace_sec=0, p33_qty_tolerance_steps=p33_steps,
                                 reconcile_tolerance_steps=reconcile_steps)

    Reconciler(r, access, settings, clock=Clock()).run_pass()

    assert (ledger.read(r, "BTCUSDT").amount == D("0.063")) is healed


def result(reason: str) -> PlanResult:
    return PlanResult.from_fields({"plan_id": "c1", "executed": "false", "symbol": "BTCUSDT", "side": "SELL",
                                   "qty": "0.001", "reduceOnly": "true", "source": "test", "reason": reason})


@pytest.mark.parametrize(("reason", "healed"), [
    ("reconcile_required_qty_mismatch", True),  # P3.3 held it (its own file says 0 steps): heal any difference
    ("cooldown", False),
])
def test_a_symbol_p33_held_is_healed_whatever_reconcile_was_told(r, access, sim, reason, healed) -> None:
    one_step_apart(r, access)
    clock = Clock()
    heal = Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=0, reconcile_tolerance_steps=1,
                                                   p33_qty_tolerance_steps=1), clock=clock)

    heal.on_result(result(reason), Entry(keys.Stream.APPLY_RESULT, f"{NOW_MS - 1000}-0", {}, 1))
    heal.run_pass()

    assert (ledger.read(r, "BTCUSDT").amount == D("0.063")) is healed


def test_by_default_a_one_step_difference_is_healed(r, access, sim) -> None:
    # Found in a review: one step was agreement by default, so a close of a position the ledger held one step
    # larger left a phantom step in the ledger for good, and the next open built on it (its entry price averaged
    # in, the old stop loss inherited). Quantities are exact: a one-step difference is a real one.
    one_step_apart(r, access)
    heal = Reconciler(r, access, ReconcileSettings(reconcile_grace_sec=0), clock=Clock())

    heal.run_pass()

    assert ledger.read(r, "BTCUSDT").amount == D("0.063")
