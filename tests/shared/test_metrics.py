"""The runtime's metrics are recorded and their exposition passes `promtool check metrics`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis
from prometheus_client import REGISTRY, generate_latest

from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.runtime.maintenance import LAG_COUNT_CAP

STREAM = "quantum:stream:metrics-test"


def exposition_after_some_work(r: redis.Redis) -> str:
    r.xadd(STREAM, {"n": "1"})
    StreamConsumer(r, ConsumerConfig(stream=STREAM, group="g", consumer="c", housekeeping_every_s=0), dict, lambda *_: None).run(burst=True)
    return generate_latest(REGISTRY).decode()


def test_the_runtime_records_reads_acks_latency_and_lag(r: redis.Redis) -> None:
    text = exposition_after_some_work(r)

    labels = f'group="g",stream="{STREAM}"'
    for name in ("quantum_stream_entries_read_total", "quantum_stream_entries_acked_total",
                 "quantum_stream_group_lag_entries", "quantum_stream_group_pending_entries"):
        assert f"{name}{{{labels}}}" in text, name
    assert 'quantum_stream_handler_seconds_bucket{group="g",le="0.0001"' in text


def test_metric_names_pass_promtool(r: redis.Redis) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'; .ci/run installs it when it can)")
    text = exposition_after_some_work(r)

    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_lag_gauge_says_its_count_stops_at_the_cap_on_redis_before_7(r: redis.Redis) -> None:
    """Redis 6.2 has no lag field: the lag is counted by reading, up to LAG_COUNT_CAP, and the gauge's help says
    that the cap there means at least that many (a dashboard reader cannot tell otherwise)."""
    text = exposition_after_some_work(r)

    help_line = next(line for line in text.splitlines() if line.startswith("# HELP quantum_stream_group_lag_entries "))
    assert f"counted up to {LAG_COUNT_CAP}" in help_line and "at least" in help_line
