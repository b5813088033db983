"""deploy/grafana/quantum-pipeline.json: a valid Grafana dashboard on the ${DS_PROMETHEUS} data source."""

from __future__ import annotations

import pytest

from tests.monitoring.monitoring import DASHBOARD_JSON, dashboard, dashboard_exprs, panels, walk

DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}

# What the pipeline dashboard must show: a metric each, looked for in the panels' queries.
REQUIRED = [
    ("kill switch", "quantum_governor_kill_switch"),
    ("execution", "quantum_governor_execution_enabled"),
    ("auto-disarm", "quantum_governor_auto_disarmed"),
    ("mode", "quantum_p26_mode"),
    ("dry run", "quantum_executor_dry_run"),
    ("entries read", "quantum_stream_entries_read_total"),
    ("entries acked", "quantum_stream_entries_acked_total"),
    ("handler latency", "quantum_stream_handler_seconds_bucket"),
    ("consumer lag", "quantum_stream_group_lag_entries"),
    ("pending", "quantum_stream_group_pending_entries"),
    ("dead letters", "quantum_stream_entries_dead_lettered_total"),
    ("governor decisions", "quantum_governor_decisions_total"),
    ("p33 decisions", "quantum_p33_decisions_total"),
    ("executor results", "quantum_executor_results_total"),
    ("order latency", "quantum_executor_order_seconds_bucket"),
    ("exchange errors", "quantum_executor_exchange_errors_total"),
    ("reconcile mismatches", "quantum_reconcile_mismatches"),
    ("reconcile heals", "quantum_reconcile_heals_total"),
    ("portfolio heat", "quantum_p26_heat"),
    ("harvest proposals", "quantum_harvest_proposals_total"),
    ("daemons up", "up{"),
]


def test_the_file_is_json_with_a_title_and_uid() -> None:
    model = dashboard()

    assert (model["title"], model["uid"]) == ("Quantum Trader pipeline", "quantum-pipeline")
    assert DASHBOARD_JSON.read_text().isascii()


def test_the_data_source_is_the_DS_PROMETHEUS_variable() -> None:
    model = dashboard()
    variables = {v["name"]: v for v in model["templating"]["list"]}

    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    queried = [obj for obj in walk(model) if "expr" in obj or "targets" in obj]
    assert queried
    assert all(obj["datasource"] == DATASOURCE for obj in queried)


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    found = panels(dashboard())
    ids = [panel["id"] for panel in found]

    assert len(ids) == len(set(ids))
    for panel in found:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, panel["title"]


def test_every_query_panel_has_a_title_a_description_and_exprs() -> None:
    for panel in panels(dashboard()):
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel.get("description"), panel
        assert panel["targets"] and all(t["expr"].strip() and t["refId"] for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize(("what", "metric"), REQUIRED, ids=[what for what, _ in REQUIRED])
def test_the_dashboard_shows(what: str, metric: str) -> None:
    assert any(metric in expr for expr in dashboard_exprs(dashboard())), what


def test_the_executor_mode_panel_reads_the_executors_dry_run_gauge() -> None:
    """Not the dry_run results: those need plans, so an idle fleet in dry run looked as if it sent orders."""
    panel = next(panel for panel in panels(dashboard()) if panel["title"].startswith("Executor mode"))

    assert [target["expr"] for target in panel["targets"]] == ["max(quantum_executor_dry_run)"]
    assert panel["fieldConfig"]["defaults"]["mappings"][0]["options"]["1"]["text"] == "DRY RUN"
