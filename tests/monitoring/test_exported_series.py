"""The series the alerts rely on, as the daemons define them: there from the start where increase() must
see a first event, with the label values the code can emit, and the governor's exposure beside its caps."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from microservices.governor import metrics as governor_metrics
from microservices.governor.governor import Governor
from microservices.governor.settings import Limits
from microservices.intent_bridge import bridge
from microservices.intent_executor import outcomes
from microservices.intent_executor.executor import Executor
from microservices.intent_executor.settings import ExecutorSettings
from shared import snapshot as exchange_snapshot
from shared.exchange.errors import ExchangeRejected, ExchangeUnavailable, OutcomeUnknown
from shared.modes import ApplyMode
from shared.snapshot import ExchangeSnapshot, PositionState
from tests.monitoring.monitoring import ROOT, exposed_label_values

# The errors the executor catches around sending an order, each passed to outcomes.order_error.
CAUGHT_WHEN_SENDING = (ExchangeRejected, OutcomeUnknown, ExchangeUnavailable)


def exposition_at_import(module: str) -> str:
    """What a daemon exports before it has done anything: the module imported in a fresh interpreter."""
    code = f"import {module}\nfrom prometheus_client import generate_latest\nprint(generate_latest().decode())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


def zero_samples(exposition: str, name: str) -> set[tuple[str, str]]:
    """(label, value) of each sample of `name` that reads 0."""
    return {(label, value) for line in exposition.splitlines() if re.match(rf"{name}\{{.*\}} 0\.0$", line)
            for _name, label, value in exposed_label_values(line)}


def subclasses(*bases: type) -> set[type]:
    found = set(bases)
    for base in bases:
        found |= subclasses(*base.__subclasses__())
    return found


@pytest.mark.parametrize(
    ("module", "name", "expected"),
    [
        ("microservices.intent_executor.outcomes", "quantum_executor_exchange_errors_total",
         {("kind", kind) for kind in ("ExchangeRejected", "ExchangeUnavailable", "RateLimited", "OutcomeUnknown")}),
        ("microservices.intent_executor.outcomes", "quantum_executor_results_total",
         {("executed", "true"), ("reason", "filled"), ("executed", "false"), ("reason", "dry_run")}),
        ("microservices.intent_executor.outcomes", "quantum_executor_apply_mode",
         {("mode", "dry_run"), ("mode", "testnet"), ("mode", "live")}),
        ("microservices.intent_bridge.bridge", "quantum_bridge_intents_total",
         {("outcome", o) for o in ("planned", "duplicate", "symbol_not_allowed", "below_confidence_floor",
                                   "intent_expired", "intent_time_invalid", "duplicate_intent")}),
        ("microservices.reconcile.reconciler", "quantum_reconcile_passes_total",
         {("outcome", o) for o in ("done", "weight_budget", "exchange_error")}),  # QuantumReconcileFailing
    ],
    ids=["exchange-error-kinds", "fills-and-dry-run", "apply-modes", "intent-outcomes", "reconcile-passes"],
)
def test_the_series_alerts_count_with_increase_exist_at_zero_from_the_start(
    module: str, name: str, expected: set
) -> None:
    assert zero_samples(exposition_at_import(module), name) == expected


def test_every_error_sending_can_raise_is_a_kind_exported_from_the_start() -> None:
    assert set(outcomes.ORDER_ERROR_KINDS) == {error.__name__ for error in subclasses(*CAUGHT_WHEN_SENDING)}


def test_every_outcome_the_bridge_counts_is_exported_from_the_start() -> None:
    code = (ROOT / "microservices" / "intent_bridge" / "bridge.py").read_text()
    # _check_fresh counts both of its refusals (expired, time invalid) under their own reason, _planned_before its one
    counted = {"planned", "duplicate", bridge.INTENT_EXPIRED, bridge.INTENT_TIME_INVALID, bridge.DUPLICATE_INTENT} | set(
        re.findall(r'\bSkipped\(\s*"(\w+)"', code))

    assert set(bridge.INTENT_OUTCOMES) == counted


@pytest.mark.parametrize("mode", list(ApplyMode))
def test_the_configured_mode_is_the_one_apply_mode_series_at_one(mode: ApplyMode) -> None:
    outcomes.configured_mode(mode)

    values = {each.value: REGISTRY.get_sample_value("quantum_executor_apply_mode", {"mode": each.value})
              for each in ApplyMode}
    assert values == {each.value: (1.0 if each is mode else 0.0) for each in ApplyMode}


def position(symbol: str, amount: str, entry: str) -> PositionState:
    return PositionState(symbol, Decimal(amount), Decimal(entry))


def governor_gauges() -> dict[str, float | None]:
    names = ("open_positions", "open_notional_usdt", "max_open_positions", "max_total_notional_usdt")
    return {name: REGISTRY.get_sample_value(f"quantum_governor_{name}") for name in names}


def test_the_exposure_of_a_snapshot_is_exported_beside_the_caps() -> None:
    snapshot = ExchangeSnapshot(
        fetched_at_ms=1,
        positions={"BTCUSDT": position("BTCUSDT", "1.2", "80000"), "ETHUSDT": position("ETHUSDT", "-3", "3000")},
        marks={"BTCUSDT": Decimal("88000.5")},  # ETHUSDT without a mark counts at its entry price
    )
    limits = Limits(max_open_positions=10, max_total_notional=Decimal("2000"))

    governor_metrics.record_exposure(snapshot, limits)

    assert governor_gauges() == {"open_positions": 2.0, "open_notional_usdt": 114600.6, "max_open_positions": 10.0,
                                 "max_total_notional_usdt": 2000.0}


def test_no_snapshot_leaves_the_exposure_as_it_was() -> None:
    governor_metrics.record_exposure(ExchangeSnapshot(fetched_at_ms=1), Limits(max_open_positions=3))
    before = governor_gauges()

    governor_metrics.record_exposure(None, Limits(max_open_positions=7))

    assert governor_gauges() == before == {"open_positions": 0.0, "open_notional_usdt": 0.0, "max_open_positions": 3.0,
                                           "max_total_notional_usdt": 2000.0}


def test_the_governor_refreshes_the_exposure_from_the_fleets_snapshot_while_idle(r) -> None:
    """Wired: the idle-time gauge refresh (about once a second) reads the snapshot P3.3 publishes, so the alert
    follows positions closed or opened outside the fleet without waiting for a decision."""
    snapshot = ExchangeSnapshot(fetched_at_ms=1, positions={"BTCUSDT": position("BTCUSDT", "0.5", "80000")},
                                marks={"BTCUSDT": Decimal("90000")})
    exchange_snapshot.publish(r, snapshot)

    Governor(r, Limits(max_open_positions=4, max_total_notional=Decimal("1500"))).refresh_gauges()

    assert governor_gauges() == {"open_positions": 1.0, "open_notional_usdt": 45000.0, "max_open_positions": 4.0,
                                 "max_total_notional_usdt": 1500.0}


def test_the_executor_exports_the_apply_mode_it_was_started_with(r, access) -> None:
    Executor(r, access, ExecutorSettings(apply_mode=ApplyMode.TESTNET), consumer_name="modes")

    assert REGISTRY.get_sample_value("quantum_executor_apply_mode", {"mode": "testnet"}) == 1.0
    assert REGISTRY.get_sample_value("quantum_executor_apply_mode", {"mode": "dry_run"}) == 0.0
