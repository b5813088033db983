"""deploy/prometheus: promtool accepts the config and the rules, the rules' unit tests pass, and the
config scrapes exactly the daemons of shared/fleet.py on their ports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from shared import fleet
from tests.monitoring.monitoring import (
    ALERTS_TEST_YML, ALERTS_YML, PROMETHEUS_DIR, PROMETHEUS_YML, dashboard, dashboard_exprs, rule_count, run_promtool,
    rule_exprs, with_grafana_intervals,
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
