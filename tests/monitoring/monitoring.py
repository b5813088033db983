"""What the monitoring tests read: the files under deploy/, the PromQL in them, and /metrics expositions.

No YAML library is a dependency of the project, so the rule expressions are read with a small
line-based reader of the subset alerts.yml uses (plain one-line values and block scalars); the
tests check it found one expression per rule, and promtool re-parses what it found.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
ALERTS_YML = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST_YML = PROMETHEUS_DIR / "alerts_test.yml"
DASHBOARD_JSON = ROOT / "deploy" / "grafana" / "quantum-pipeline.json"

# Metric names a query may use without any daemon exposing them: Prometheus makes `up` itself.
BUILT_IN_METRICS = frozenset({"up"})

# Grafana's interval variables, replaced by a plain duration where PromQL must parse.
GRAFANA_INTERVALS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


PROMTOOL_MISSING = "promtool not found on PATH: install Prometheus's promtool (Debian: apt-get install prometheus)"


def promtool_path() -> str | None:
    return shutil.which("promtool")


def run_promtool(binary: str, *args: str, stdin: str | None = None, cwd: Path | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60)


# --- PromQL ---------------------------------------------------------------------------------

_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
                       "offset", "bool", "inf", "nan", "atan2"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords or labels."""
    text = _STRINGS.sub('""', expr)
    text = _VARIABLES.sub("1", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _GROUPING.sub("", text)
    return {name for name, call in _IDENTIFIER.findall(text) if not call and name not in _KEYWORDS}


_SELECTOR = re.compile(r"(?<![\w:])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_EXACT_MATCHER = re.compile(r'(\w+)\s*(?:!=|=)(?!~)\s*"((?:[^"\\]|\\.)*)"')


def selected_label_values(expr: str) -> set[tuple[str, str, str]]:
    """(metric, label, value) of every exact matcher (= or !=) in a selector with a metric name; regex matchers
    are left out. A != value is counted too: a value that never exists makes the matcher match everything."""
    found: set[tuple[str, str, str]] = set()
    for name, matchers in _SELECTOR.findall(expr):
        found.update((name, label, value) for label, value in _EXACT_MATCHER.findall(matchers))
    return found


def with_grafana_intervals(expr: str) -> str:
    for variable, duration in GRAFANA_INTERVALS.items():
        expr = expr.replace(variable, duration)
    return expr


# --- alerts.yml -----------------------------------------------------------------------------

_EXPR_KEY = re.compile(r"^(?P<indent>\s*)(?:-\s+)?expr:\s*(?P<value>.*)$")
_RULE_KEY = re.compile(r"^\s*(?:-\s+)?(?:alert|record):\s*\S")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rule_exprs(text: str) -> list[str]:
    """The `expr:` of every rule, from the YAML subset alerts.yml uses."""
    lines = text.splitlines()
    found: list[str] = []
    index = 0
    while index < len(lines):
        match = _EXPR_KEY.match(lines[index])
        index += 1
        if match is None:
            continue
        value = match["value"].strip()
        if value[:1] in ("|", ">"):  # block scalar: the more-indented lines that follow
            block: list[str] = []
            while index < len(lines) and (not lines[index].strip() or _indent(lines[index]) > len(match["indent"])):
                block.append(lines[index].strip())
                index += 1
            found.append(" ".join(part for part in block if part))
        elif value[:1] == "'":
            found.append(value[1:value.rindex("'")].replace("''", "'"))
        elif value[:1] == '"':
            found.append(json.loads(value[: value.rindex('"') + 1]))
        else:
            found.append(re.sub(r"\s+#.*$", "", value))
    return found


def rule_count(text: str) -> int:
    return sum(1 for line in text.splitlines() if _RULE_KEY.match(line))


# --- the dashboard ------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_JSON.read_text())


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in the dashboard, nested ones included (rows' panels, targets, annotations)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def dashboard_exprs(model: dict[str, Any]) -> list[str]:
    return [obj["expr"] for obj in walk(model) if isinstance(obj.get("expr"), str)]


def panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [obj for obj in walk(model.get("panels", [])) if "gridPos" in obj and "type" in obj]


# --- expositions ----------------------------------------------------------------------------

_TYPE_LINE = re.compile(r"^# TYPE (?P<name>\S+) (?P<kind>\w+)$")
_SAMPLE_LINE = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)[{ ]")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count"),
             "gaugehistogram": ("_bucket", "_gsum", "_gcount")}


_SAMPLE_LABELS = re.compile(r"^(?P<name>[A-Za-z_:][\w:]*)\{(?P<labels>.*)\}\s\S+")
_LABEL_PAIR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def exposed_label_values(exposition: str) -> set[tuple[str, str, str]]:
    """(series name, label, value) of every labelled sample an exposition holds."""
    found: set[tuple[str, str, str]] = set()
    for line in exposition.splitlines():
        sample = _SAMPLE_LABELS.match(line)
        if sample:
            found.update((sample["name"], label, value) for label, value in _LABEL_PAIR.findall(sample["labels"]))
    return found


def exposed_names(exposition: str) -> set[str]:
    """Every series name an exposition declares or samples: a labelled family without samples yet counts."""
    names: set[str] = set()
    for line in exposition.splitlines():
        declared = _TYPE_LINE.match(line)
        if declared:
            name, kind = declared["name"], declared["kind"]
            if kind == "counter":
                names.add(name if name.endswith("_total") else name + "_total")
            elif kind in ("histogram", "gaugehistogram"):
                names.update(name + suffix for suffix in _SUFFIXES[kind])
            else:  # gauge, summary (its quantiles carry the bare name), untyped
                names.add(name)
                names.update(name + suffix for suffix in _SUFFIXES.get(kind, ()))
            continue
        sample = _SAMPLE_LINE.match(line)
        if sample:
            names.add(sample["name"])
    return names
