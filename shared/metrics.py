"""Prometheus metrics of the stream runtime, and the /metrics server every daemon runs.

Names follow <app>_<noun>_<unit|total> with a few bounded labels (stream, group, reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from shared.runtime.maintenance import LAG_COUNT_CAP

# Handler latency buckets reach down to 100 µs: the plan path is expected to sit near 1 ms.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)

ENTRIES_READ = Counter(
    "quantum_stream_entries_read_total", "Stream entries delivered to this consumer", ["stream", "group"]
)
ENTRIES_ACKED = Counter(
    "quantum_stream_entries_acked_total", "Stream entries acknowledged after their handler succeeded", ["stream", "group"]
)
ENTRIES_DEAD_LETTERED = Counter(
    "quantum_stream_entries_dead_lettered_total",
    "Stream entries moved to the dead-letter stream",
    ["stream", "group", "reason"],
)
HANDLER_ERRORS = Counter(
    "quantum_stream_handler_errors_total", "Handler exceptions (the entry stays pending and is redelivered)", ["stream", "group"]
)
HANDLER_SECONDS = Histogram(
    "quantum_stream_handler_seconds", "Time spent in the handler per entry", ["stream", "group"], buckets=LATENCY_BUCKETS
)
GROUP_LAG = Gauge(
    "quantum_stream_group_lag_entries",
    f"Entries in the stream not yet delivered to the group (Redis < 7 has no lag field: counted up to {LAG_COUNT_CAP}, "
    f"so {LAG_COUNT_CAP} there means at least that many)",
    ["stream", "group"],
)
GROUP_PENDING = Gauge(
    "quantum_stream_group_pending_entries", "Entries delivered to the group but not yet acknowledged", ["stream", "group"]
)
REDIS_ERRORS = Counter(
    "quantum_redis_errors_total", "Redis connection errors survived by the runtime", ["stream", "group"]
)
LOOP_HEARTBEAT = Gauge(
    "quantum_loop_heartbeat_timestamp_seconds", "Unix time of the last completed loop iteration", ["stream", "group"]
)


def set_mode(gauge: Gauge, modes: Iterable[Enum], active: Enum) -> None:
    """A gauge labelled by mode: 1 for the active one, 0 for every other (so a selector on any mode matches)."""
    for mode in modes:
        gauge.labels(mode=mode.value).set(1 if mode is active else 0)


def serve(host: str, port: int) -> None:
    """Serve /metrics from a background thread. Port 0 disables it."""
    if port:
        start_http_server(port, addr=host)
