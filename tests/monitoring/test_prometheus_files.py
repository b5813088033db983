"""deploy/prometheus: promtool accepts the config and the rules, the rules' unit tests pass and see every
alert fire on series labelled as the fleet labels them, and the config scrapes exactly the daemons of
shared/fleet.py on their ports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from microservices.intent_bridge.bridge import INTENT_OUTCOMES
from microservices.intent_executor.outcomes import ORDER_ERROR_KINDS
from shared import fleet, keys
from shared.modes import ApplyMode
from shared.runtime.handling import MAX_DELIVERIES_REASON, PARSE_FAILED_REASON
from shared.schema import Reason
from tests.monitoring.monitoring import (
    ALERTS_TEST_YML, ALERTS_YML, PROMETHEUS_DIR, PROMETHEUS_YML, ROOT, dashboard, dashboard_exprs, rule_count,
    run_promtool, rule_exprs, selected_label_values, with_grafana_intervals,
)


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", str(PROMETHEUS_YML)),
        ("check", "rules", str(ALERTS_YML)),
        ("test", "rules", str(ALERTS_TEST_YML)),
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts(promtool: str, args: tuple[str, ...]) -> None:
    run = run_promtool(promtool, *args, cwd=PROMETHEUS_DIR)
    assert run.returncode == 0, run.stdout + run.stderr


def _check_as_recording_rules(promtool: str, exprs: list[str], tmp_path: Path) -> None:
    """Let promtool parse each expression: a rules file is YAML, and JSON is YAML."""
    rules = [{"record": f"extracted:expr_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path = tmp_path / "extracted.rules.json"
    path.write_text(json.dumps({"groups": [{"name": "extracted", "rules": rules}]}))
    run = run_promtool(promtool, "check", "rules", str(path))
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_rule_reader_finds_every_expression_and_each_parses(promtool: str, tmp_path: Path) -> None:
    text = ALERTS_YML.read_text()
    exprs = rule_exprs(text)

    assert len(exprs) == rule_count(text) > 0
    _check_as_recording_rules(promtool, exprs, tmp_path)


def test_every_dashboard_expression_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [with_grafana_intervals(expr) for expr in dashboard_exprs(dashboard())]

    assert exprs
    _check_as_recording_rules(promtool, exprs, tmp_path)


def test_the_config_scrapes_every_daemon_of_the_fleet_on_its_port() -> None:
    text = PROMETHEUS_YML.read_text()
    scraped = {daemon: int(port) for port, daemon in re.findall(
        r'-\s+targets:\s*\["127\.0\.0\.1:(\d+)"\]\s*\n\s*labels:\s*\{daemon:\s*([\w-]+)\}', text)}
    expected = {spec.name: spec.metrics_port for spec in fleet.FLEET if spec.metrics_port and not spec.demo}

    assert scraped == expected


@pytest.mark.parametrize(
    "setting",
    [
        r"^  scrape_interval: 15s$",
        r"^  evaluation_interval: 15s$",
        r"^rule_files:\n  - alerts\.yml$",
        r"^  - job_name: quantum$",
    ],
)
def test_the_config_has(setting: str) -> None:
    assert re.search(setting, PROMETHEUS_YML.read_text(), re.MULTILINE)


def test_every_alert_has_for_a_severity_and_what_to_do() -> None:
    blocks = re.split(r"^\s*- alert:", ALERTS_YML.read_text(), flags=re.MULTILINE)[1:]

    assert blocks
    for block in blocks:
        name = block.split()[0]
        assert re.search(r"^\s+for: \d+[smh]$", block, re.MULTILINE), name
        assert re.search(r"^\s+severity: (critical|warning)$", block, re.MULTILINE), name
        assert re.search(r"^\s+summary: ", block, re.MULTILINE), name
        assert re.search(r"^\s+description: ", block, re.MULTILINE), name



def alert_names() -> list[str]:
    return re.findall(r"^\s+- alert: (\w+)$", ALERTS_YML.read_text(), re.MULTILINE)


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\s*\n\s+- exp_labels", ALERTS_TEST_YML.read_text()))

    assert alert_names()
    assert [name for name in alert_names() if name not in firing] == []


def _constants(code: str) -> dict[str, str]:
    return dict(re.findall(r'^([A-Z][A-Z0-9_]*)\s*=\s*"([^"]+)"', code, re.MULTILINE))


def dead_letter_reasons() -> set[str]:
    """Every reason the fleet dead-letters with: the runtime's own, a parser's (EntryError) and a handler's
    (Rejected), named in place or by a module constant."""
    reasons = {MAX_DELIVERIES_REASON, PARSE_FAILED_REASON}
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "microservices").rglob("*.py")]:
        code = path.read_text()
        for literal, constant in re.findall(r'\b(?:EntryError|Rejected)\(\s*(?:"(\w+)"|([A-Z][A-Z0-9_]*)\b)', code):
            reasons.add(literal or _constants(code).get(constant, constant))
    return reasons


def known_label_values() -> dict[tuple[str | None, str], set[str]]:
    """Labels whose values the fleet fixes, by (metric or None for any metric, label)."""
    daemons = {spec.name for spec in fleet.FLEET}
    streams = {value for name, value in vars(keys.Stream).items() if name.isupper()}
    groups = {value for name, value in vars(keys.Group).items() if name.isupper()}
    reconcile = (ROOT / "microservices" / "reconcile" / "reconciler.py").read_text()
    return {
        (None, "daemon"): daemons,
        (None, "stream"): streams | {"timer"},  # timer daemons' heartbeat: stream="timer", group=<daemon>
        (None, "group"): groups | daemons,
        ("quantum_stream_entries_dead_lettered_total", "reason"): dead_letter_reasons(),
        ("quantum_stream_entries_dead_lettered_created", "reason"): dead_letter_reasons(),
        ("quantum_executor_exchange_errors_total", "kind"): set(ORDER_ERROR_KINDS),
        ("quantum_executor_results_total", "executed"): {"true", "false"},
        ("quantum_executor_results_total", "reason"): {reason.value for reason in Reason} | {"filled"},
        ("quantum_executor_apply_mode", "mode"): {mode.value for mode in ApplyMode},
        ("quantum_bridge_intents_total", "outcome"): set(INTENT_OUTCOMES),
        ("quantum_reconcile_passes_total", "outcome"): set(re.findall(r'PASSES\.labels\(outcome="(\w+)"\)', reconcile)),
    }


def test_the_unit_tests_feed_only_label_values_the_fleet_exports() -> None:
    """A unit test on a value no daemon exports (reason="max_deliveries" for max_deliveries_exceeded) passes
    while the alert it stands for may never fire."""
    known = known_label_values()
    fed = set().union(*map(selected_label_values, re.findall(r"series: '([^']*)'", ALERTS_TEST_YML.read_text())))

    checked = [(name, label, value) for name, label, value in fed if (name, label) in known or (None, label) in known]
    unknown = [(name, label, value) for name, label, value in checked
               if value not in known.get((name, label), known.get((None, label), set()))]
    assert checked
    assert sorted(unknown) == []


def test_every_test_file_a_config_comment_cites_exists() -> None:
    cited = re.findall(r"\btests/[\w/]+\.py\b", PROMETHEUS_YML.read_text() + ALERTS_YML.read_text())

    assert [path for path in cited if not (ROOT / path).is_file()] == []


@pytest.mark.parametrize(
    ("alert", "setting"),
    [("QuantumP33SnapshotStale", "P33_STALE_THRESHOLD_SEC"), ("QuantumPortfolioHeatHot", "P26_WARM_MAX")],
)
def test_an_alert_on_a_configurable_threshold_names_the_setting_in_its_description(alert: str, setting: str) -> None:
    block = re.split(r"^\s*- alert:", ALERTS_YML.read_text(), flags=re.MULTILINE)[alert_names().index(alert) + 1]

    assert setting in block.split("description:", 1)[1]
