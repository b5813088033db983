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


def test_a_group_left_behind_is_released_once_it_leaves_entries_unread_for_minutes(r: redis.Redis) -> None:
    """Found in review: after a P26_MODE change the apply layer's group on the stream it no longer reads stayed, and
    held back every trim of that stream for good. A later review: who reads a group cannot be told from XINFO's idle
    time (before Redis 7.2, since the last entry delivered) nor from heartbeats (a process starting has none): a
    group that leaves entries unread for ten minutes has no reader, since a blocked reader wakes on each entry."""
    now_ms = 1_800_000_000_000
    for minutes_ago in (30, 20, 12):
        r.xadd(STREAM, {"n": "1"}, id=f"{now_ms - minutes_ago * 60_000}-0")
    r.xgroup_create(STREAM, "apply-layer", id="0")
    r.xgroup_create(STREAM, "gate", id="$")
    r.xreadgroup("apply-layer", "apply-layer@h#0", {STREAM: ">"}, count=1)  # read, not acked
    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms) == "pending"
    r.xack(STREAM, "apply-layer", f"{now_ms - 30 * 60_000}-0")
    r.xreadgroup("apply-layer", "apply-layer@h#0", {STREAM: ">"}, count=2)
    r.xack(STREAM, "apply-layer", f"{now_ms - 20 * 60_000}-0", f"{now_ms - 12 * 60_000}-0")
    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms) == "read"  # caught up: holds nothing
    r.xadd(STREAM, {"n": "2"}, id=f"{now_ms - 9 * 60_000}-0")
    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms) == "read"  # unread for 9 minutes only

    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms + 2 * 60_000) == "released"
    assert [g["name"] for g in r.xinfo_groups(STREAM)] == ["gate"]
    assert maintenance.trim(r, STREAM, retention_ms=0, now_ms=10**13) == 2  # all before where the gate stands
    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms) == "absent"


def test_a_group_a_running_process_says_it_reads_is_kept(r: redis.Redis) -> None:
    now_ms = 1_800_000_000_000
    r.xadd(STREAM, {"n": "1"}, id=f"{now_ms - 30 * 60_000}-0")
    r.xgroup_create(STREAM, "apply-layer", id="$")
    r.xadd(STREAM, {"n": "2"}, id=f"{now_ms - 20 * 60_000}-0")

    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms, others_read=lambda: True) == "in_use"
    assert maintenance.release_left_group(r, STREAM, "apply-layer", now_ms, others_read=lambda: False) == "released"
