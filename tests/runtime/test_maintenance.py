"""Trimming never drops what a group has not read or acked; lag counts undelivered entries."""

from __future__ import annotations

import redis

from shared.runtime import maintenance

STREAM = "quantum:stream:test"


def add(r: redis.Redis, count: int) -> list[str]:
    return [r.xadd(STREAM, {"n": str(i)}) for i in range(count)]


def test_trim_keeps_entries_a_group_has_not_read(r: redis.Redis) -> None:
    ids = add(r, 10)
    r.xgroup_create(STREAM, "g", id="0")
    read = r.xreadgroup("g", "c", {STREAM: ">"}, count=4)[0][1]
    r.xack(STREAM, "g", *[entry_id for entry_id, _ in read])

    removed = maintenance.trim(r, STREAM, retention_ms=0, now_ms=10**13)

    assert removed == 3  # everything below the 4th entry, the group's last-delivered id
    assert [entry_id for entry_id, _ in r.xrange(STREAM)] == ids[3:]


def test_trim_keeps_entries_delivered_but_not_acked(r: redis.Redis) -> None:
    ids = add(r, 10)
    r.xgroup_create(STREAM, "g", id="0")
    r.xreadgroup("g", "c", {STREAM: ">"}, count=8)
    r.xack(STREAM, "g", *ids[2:8])

    maintenance.trim(r, STREAM, retention_ms=0, now_ms=10**13)

    assert r.xrange(STREAM)[0][0] == ids[0]


def test_trim_waits_for_the_slowest_group(r: redis.Redis) -> None:
    ids = add(r, 10)
    r.xgroup_create(STREAM, "fast", id="$")
    r.xgroup_create(STREAM, "slow", id="0")

    maintenance.trim(r, STREAM, retention_ms=0, now_ms=10**13)

    assert len(r.xrange(STREAM)) == 10 and ids


def test_trim_keeps_entries_younger_than_the_retention(r: redis.Redis) -> None:
    add(r, 5)
    r.xgroup_create(STREAM, "g", id="$")

    removed = maintenance.trim(r, STREAM, retention_ms=3_600_000, now_ms=int(r.time()[0]) * 1000)

    assert removed == 0


def test_lag_counts_entries_not_yet_delivered_to_the_group(r: redis.Redis) -> None:
    add(r, 7)
    r.xgroup_create(STREAM, "g", id="0")
    r.xreadgroup("g", "c", {STREAM: ">"}, count=2)

    state = maintenance.group_state(r, STREAM, "g")

    assert (state.lag, state.pending) == (5, 2)
    assert not state.lag_at_least or r.info("server")["redis_version"] >= "7"


def test_a_counted_lag_past_the_cap_says_it_is_at_least_that(r: redis.Redis) -> None:
    r.xgroup_create(STREAM, "g", id="0", mkstream=True)
    add(r, maintenance.LAG_COUNT_CAP + 5)

    state = maintenance.group_state(r, STREAM, "g")

    assert state.lag >= maintenance.LAG_COUNT_CAP
    assert state.lag_at_least == (state.lag == maintenance.LAG_COUNT_CAP)  # Redis 7 tells it exactly


def test_a_group_left_behind_is_released_and_trimming_goes_on(r: redis.Redis) -> None:
    """Found in review: after a P26_MODE change the apply layer's group on the stream it no longer reads stayed, and
    held back every trim of that stream for good. It is released when nothing there is pending (whether another
    process still reads it, the caller tells from heartbeats: microservices.apply_layer.apply.other_readers)."""
    add(r, 5)
    r.xgroup_create(STREAM, "apply-layer", id="0")
    r.xgroup_create(STREAM, "gate", id="$")
    r.xreadgroup("apply-layer", "apply-layer@h#0", {STREAM: ">"}, count=2)  # read, not acked
    assert maintenance.release_left_group(r, STREAM, "apply-layer") == "pending"
    r.xack(STREAM, "apply-layer", *[p["message_id"] for p in r.xpending_range(STREAM, "apply-layer", "-", "+", 10)])

    assert maintenance.release_left_group(r, STREAM, "apply-layer") == "released"
    assert [g["name"] for g in r.xinfo_groups(STREAM)] == ["gate"]
    assert maintenance.trim(r, STREAM, retention_ms=0, now_ms=10**13) == 4  # all but the last: where the gate stands
    assert maintenance.release_left_group(r, STREAM, "apply-layer") == "absent"
