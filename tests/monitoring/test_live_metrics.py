"""The fleet's real /metrics: every daemon's exposition passes `promtool check metrics`, every metric the
alerts and the dashboard use is exposed by at least one daemon, and so is every label value their
selectors name (a selector on a value no daemon exports matches nothing, and its alert never fires).

The daemons run as processes (the e2e harness) on the embedded Redis and the simulator; plans, a trade
intent and a malformed entry go through first so counters and histograms have samples. Starting the
fleet takes seconds, so one test starts it once and runs every check on what it scraped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import pytest

from shared import keys
from tests.monitoring.monitoring import (
    ALERTS_YML, BUILT_IN_METRICS, DASHBOARD_JSON, PROMTOOL_MISSING, ROOT, dashboard, dashboard_exprs,
    exposed_label_values, exposed_names, metric_names, promtool_path, rule_exprs, run_promtool, selected_label_values,
)

# Every daemon that serves /metrics (shared/fleet.py FLEET without demo-signals), in start order.
DAEMONS = ("position-state-brain", "governor", "intent-executor", "intent-bridge", "apply-layer", "reconcile",
           "portfolio-heat-gate", "harvest-proposal")

# (plan_id, side, qty, reduceOnly, executed): a min-notional refusal, an open that fills, the close.
PLANS = [
    ("mon-small", "BUY", "0.001", "false", "false"),
    ("mon-open", "BUY", "0.002", "false", "true"),
    ("mon-close", "SELL", "0.002", "true", "true"),
]
INTENT = {"symbol": "ETHUSDT", "side": "BUY", "position_size_usd": "50", "entry_price": "3000", "confidence": "0.9",
          "intent_id": "mon-intent"}

# Samples the traffic must leave: (daemon, a piece of an exposition line).
SAMPLES = [
    ("governor", "quantum_governor_kill_switch 0.0"),
    ("governor", 'quantum_governor_decisions_total{allow="true",reason="open_allowed"}'),
    ("intent-executor", 'quantum_executor_results_total{executed="true",reason="filled"}'),
    ("intent-executor", 'quantum_executor_results_total{executed="false",reason="min_notional_check_failed"} 1.0'),
    ("intent-executor", "quantum_executor_order_seconds_count "),
    ("intent-executor", 'quantum_stream_entries_acked_total{group="intent-executor",'),
    ("intent-executor", 'quantum_stream_handler_seconds_count{group="intent-executor",'),
    ("intent-executor", 'quantum_stream_entries_dead_lettered_total{group="intent-executor",'),
    ("position-state-brain", "quantum_p33_decisions_total{"),
    ("reconcile", "quantum_reconcile_mismatches 0.0"),
    ("portfolio-heat-gate", 'quantum_p26_mode{mode="shadow"} 1.0'),
    ("apply-layer", 'quantum_apply_p26_mode{mode="shadow"} 1.0'),  # the two agree (QuantumP26ModeDisagrees)
    ("intent-bridge", 'quantum_bridge_intents_total{outcome="planned"} 1.0'),
]


# Label values a selector names that the traffic cannot produce and no daemon exports before their first use:
# each must at least be one its daemon's code emits. (metric, label, value) -> the file that emits it.
CREATED_ON_FIRST_USE = {
    ("quantum_reconcile_passes_total", "outcome", "exchange_error"): "microservices/reconcile/reconciler.py",
}


def wait_until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def scrape(port: int) -> str:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
    response.raise_for_status()
    return response.text


def run_traffic(fleet) -> None:
    for plan_id, side, qty, reduce_only, executed in PLANS:
        fleet.plan(plan_id, "BTCUSDT", side, qty, reduce_only=reduce_only)
        result = fleet.wait_result(plan_id)
        assert result["executed"] == executed, (plan_id, result.get("reason"), result.get("detail"))
    fleet.client.xadd(keys.Stream.TRADE_INTENT, INTENT)
    fleet.client.xadd(keys.Stream.APPLY_PLAN, {"not": "a plan"})  # dead-lettered by every plan reader
    bridge, executor = fleet.metrics_ports["intent-bridge"], fleet.metrics_ports["intent-executor"]
    # Every outcome is exported at 0 from the start: wait for the intent's.
    wait_until(lambda: '\nquantum_bridge_intents_total{outcome="planned"} 1.0' in scrape(bridge), "the bridge's intent")
    wait_until(lambda: fleet.client.xlen(keys.Stream.APPLY_RESULT) > len(PLANS), "the result of the intent's plan")
    wait_until(lambda: "\nquantum_stream_entries_dead_lettered_total{" in scrape(executor), "the dead letter")


def used_names() -> dict[str, set[str]]:
    """Metric names by where they are used: every expr, and any quantum_* name in the files' text."""
    return {
        "alerts.yml exprs": set().union(*map(metric_names, rule_exprs(ALERTS_YML.read_text()))),
        "dashboard exprs": set().union(*map(metric_names, dashboard_exprs(dashboard()))),
        "quantum_* names in the text": set(re.findall(r"\bquantum_[a-z0-9_]+",
                                                      ALERTS_YML.read_text() + DASHBOARD_JSON.read_text())),
    }


def selected_values() -> set[tuple[str, str, str]]:
    """(metric, label, value) the alerts' and the dashboard's selectors name; `job` is the scrape's, not a daemon's."""
    exprs = rule_exprs(ALERTS_YML.read_text()) + dashboard_exprs(dashboard())
    return {(name, label, value) for name, label, value in set().union(*map(selected_label_values, exprs))
            if name not in BUILT_IN_METRICS and label != "job"}


def test_the_live_fleet_exposes_valid_metrics_and_every_name_the_alerts_and_dashboard_use(make_fleet) -> None:
    fleet = make_fleet().start(*DAEMONS, metrics=True)
    run_traffic(fleet)
    expositions = {name: scrape(port) for name, port in fleet.metrics_ports.items()}
    assert sorted(expositions) == sorted(DAEMONS)

    exposed = set().union(*map(exposed_names, expositions.values())) | BUILT_IN_METRICS
    # Prose may name a histogram by its family ("quantum_stream_handler_seconds"); queries may not.
    families = {name.removesuffix("_bucket") for name in exposed if name.endswith("_bucket")}
    used = used_names()
    assert all(used.values())
    unknown = {where: sorted(names - (exposed | families if where.startswith("quantum_*") else exposed))
               for where, names in used.items()}
    assert unknown == {where: [] for where in used}, "metrics used but exposed by no daemon"
    assert [(daemon, series) for daemon, series in SAMPLES if series not in expositions[daemon]] == []
    assert 'quantum_executor_results_total{executed="true",reason="filled"} 0.0' not in expositions["intent-executor"]
    exported = set().union(*map(exposed_label_values, expositions.values()))
    selected = selected_values()
    assert selected
    missing = sorted(selected - exported - set(CREATED_ON_FIRST_USE))
    assert missing == [], "label values selected but exported by no daemon"
    assert [item for item, path in CREATED_ON_FIRST_USE.items()
            if f'{item[1]}="{item[2]}"' not in (ROOT / path).read_text()] == []

    promtool = promtool_path()
    if promtool is None:
        pytest.skip(f"{PROMTOOL_MISSING}; the exposed-names and samples checks passed")
    problems = {}
    for name, body in expositions.items():
        run = run_promtool(promtool, "check", "metrics", stdin=body)
        if (run.returncode, run.stdout + run.stderr) != (0, ""):
            problems[name] = (run.returncode, run.stdout + run.stderr)
    assert problems == {}, "promtool check metrics"
