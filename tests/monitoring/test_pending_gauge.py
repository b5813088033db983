"""quantum_stream_group_pending_entries, on a real Redis: what QuantumPendingStuck reads.

The consumer holds the acks of a handled batch back and sends them with its next read, and its
housekeeping runs between the two: the gauge must not count those entries, or steady traffic
keeps it above 0 and the alert fires with nothing stuck.
"""

from __future__ import annotations

import pytest
import redis
from prometheus_client import REGISTRY

from shared.runtime.consumer import ConsumerConfig, StreamConsumer

STREAM = "quantum:stream:pending-gauge-test"


def pending_gauge(group: str) -> float | None:
    return REGISTRY.get_sample_value("quantum_stream_group_pending_entries", {"stream": STREAM, "group": group})


@pytest.mark.parametrize(
    ("group", "entries", "failing", "gauge", "pending_in_redis"),
    [
        ("all-handled", 3, set(), 0, 3),  # handled, their XACK not sent yet
        ("one-failed", 3, {"1"}, 1, 3),  # the entry whose handler raised is really pending
        ("all-failed", 2, {"0", "1"}, 2, 2),
    ],
)
def test_the_pending_gauge_counts_only_entries_not_handled(
    r: redis.Redis, group: str, entries: int, failing: set[str], gauge: int, pending_in_redis: int
) -> None:
    for n in range(entries):
        r.xadd(STREAM, {"n": str(n)})

    def handler(item: dict, entry) -> None:
        if item["n"] in failing:
            raise RuntimeError("boom")

    consumer = StreamConsumer(r, ConsumerConfig(stream=STREAM, group=group, consumer="c1", housekeeping_every_s=0),
                              dict, handler)
    consumer.ensure_group()

    consumer._read_new(block_ms=None)  # one loop iteration: the read, then the tick with its housekeeping
    consumer._tick()

    assert r.xpending(STREAM, group)["pending"] == pending_in_redis
    assert pending_gauge(group) == gauge


def test_the_pending_gauge_is_zero_once_the_held_acks_are_sent(r: redis.Redis) -> None:
    r.xadd(STREAM, {"n": "0"})
    consumer = StreamConsumer(r, ConsumerConfig(stream=STREAM, group="acked", consumer="c1", housekeeping_every_s=0),
                              dict, lambda *_: None)
    consumer.ensure_group()
    consumer._read_new(block_ms=None)

    consumer._read_new(block_ms=None)  # sends the held XACK with the read
    consumer._tick()

    assert r.xpending(STREAM, "acked")["pending"] == 0
    assert pending_gauge("acked") == 0
