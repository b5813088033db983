"""The readers the monitoring tests rely on: metric names in PromQL, rule expressions in YAML, expositions."""

from __future__ import annotations

import pytest

from tests.monitoring.monitoring import exposed_names, metric_names, rule_count, rule_exprs, with_grafana_intervals


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up == 0", {"up"}),
        ('up{job="quantum"} == 0', {"up"}),
        ("time() - quantum_loop_heartbeat_timestamp_seconds > 60", {"quantum_loop_heartbeat_timestamp_seconds"}),
        ('sum by (stream, group) (rate(a_total{group="x", reason=~"b|c"}[5m]))', {"a_total"}),
        ("sum(rate(a_total[5m])) by (job) > 0", {"a_total"}),
        ("a unless on (job, instance) b == 1", {"a", "b"}),
        ("a * on (x) group_left (y) b", {"a", "b"}),
        ("a offset 10m", {"a"}),
        ("a > bool 0", {"a"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
        ('absent(up{job="quantum"})', {"up"}),
        ('label_replace(a, "dst", "$1", "src", "(.*)")', {"a"}),
        ("a:recorded:rate5m / 1e3", {"a:recorded:rate5m"}),
        ("max_over_time(a[1h:5m])", {"a"}),
        ('sum(increase(a_total{reason="dry_run"}[15m])) > bool 0', {"a_total"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_intervals_become_durations() -> None:
    expr = "rate(a[$__rate_interval]) + increase(b[$__range])"

    assert with_grafana_intervals(expr) == "rate(a[5m]) + increase(b[1h])"


RULES = """\
groups:
  - name: g
    rules:
      - alert: One
        expr: up == 0  # a comment
        for: 1m
      - alert: Two
        expr: >-
          sum(rate(a_total[5m]))
          > 0
        for: 1m
      - alert: Three
        expr: |
          b
          unless c
        for: 1m
      - record: four:sum
        expr: 'sum(d{x="y"})'
"""


def test_rule_exprs_reads_plain_folded_literal_and_quoted_values() -> None:
    assert rule_exprs(RULES) == ["up == 0", "sum(rate(a_total[5m])) > 0", "b unless c", 'sum(d{x="y"})']
    assert rule_count(RULES) == 4


EXPOSITION = """\
# HELP a_total Things
# TYPE a_total counter
a_total{x="1"} 1.0
a_created{x="1"} 1.7e9
# HELP b Labelled, no sample yet
# TYPE b counter
# HELP h Latency
# TYPE h histogram
h_bucket{le="+Inf"} 1.0
# HELP g A gauge
# TYPE g gauge
"""


@pytest.mark.parametrize("name", ["a_total", "a_created", "b_total", "h_bucket", "h_sum", "h_count", "g"])
def test_exposed_names_include(name: str) -> None:
    assert name in exposed_names(EXPOSITION)


@pytest.mark.parametrize("name", ["a", "b", "h", "h_total", "g_total"])
def test_exposed_names_exclude(name: str) -> None:
    assert name not in exposed_names(EXPOSITION)
