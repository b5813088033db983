"""Which Redis, since when: learnt on every connection, kept across a client's restart, new after a server's."""

from __future__ import annotations

from shared import keys
from shared.incarnation import RedisIncarnation
from shared.redis_conn import connect
from shared.redis_server import EmbeddedRedis


def connected(url: str) -> RedisIncarnation:
    incarnation = RedisIncarnation()
    client = connect(url, on_connect=incarnation.on_connect)
    client.ping()
    client.close()
    return incarnation


def test_nothing_is_trusted_before_the_first_connection() -> None:
    assert RedisIncarnation().predates("1-0")


def test_entries_written_after_the_server_was_first_seen_are_trusted() -> None:
    with EmbeddedRedis() as server:
        incarnation = connected(server.url)
        client = connect(server.url)
        entry_id = client.xadd("s", {"a": "1"})

        assert not incarnation.predates(entry_id)
        assert incarnation.predates(f"{incarnation.since_ms - 1}-0")
        assert client.hget(keys.REDIS_INCARNATION, "run_id") == incarnation.run_id


def test_a_restarted_client_keeps_the_time_a_restarted_server_does_not() -> None:
    with EmbeddedRedis() as server:
        first = connected(server.url)
        again = connected(server.url)  # the executor restarted; the same server
        assert again.since_ms == first.since_ms

        server.restart()  # a new process: what it holds may end before what the old one had
        after = connected(server.url)

        assert after.run_id != first.run_id and after.since_ms > first.since_ms


def test_a_client_learns_of_a_restart_when_it_reconnects() -> None:
    with EmbeddedRedis() as server:
        incarnation = RedisIncarnation()
        client = connect(server.url, on_connect=incarnation.on_connect)
        client.ping()
        before = incarnation.since_ms

        server.restart()
        client.ping()  # redis-py reconnects (and retries) on its own: the hook runs on the new connection

        assert incarnation.since_ms > before


def test_entries_stamped_by_a_clock_ahead_of_the_new_servers_still_predate_it() -> None:
    """After a failover to another host: the old master's clock ran 60 s ahead of the new one's, so its
    last plans carry ids later than the new server's TIME; they were still written before it came up."""
    with EmbeddedRedis() as server:
        client = connect(server.url)
        seconds, micros = client.time()
        ahead_id = f"{seconds * 1000 + micros // 1000 + 60_000}-0"
        client.xadd(keys.Stream.APPLY_PLAN, {"plan_id": "written-by-the-old-master"}, id=ahead_id)

        incarnation = connected(server.url)
        later = client.xadd(keys.Stream.APPLY_PLAN, {"plan_id": "written-after"})

        assert incarnation.predates(ahead_id)
        assert incarnation.predates(later)  # the same millisecond or later: looked up first, which is safe


def test_a_redis_that_may_evict_keys_is_refused_as_a_setting_to_change(redis_url) -> None:
    """Found in review: the guard against sending twice is a set of keys with a TTL; under maxmemory with a
    volatile-* or allkeys-* policy Redis may evict one, and a redelivered plan could be sent again."""
    import pytest

    from shared.redis_conn import RedisUnavailable, connect_checked

    admin = connect(redis_url)
    admin.config_set("maxmemory", "1gb")
    try:
        for policy, refused in (("volatile-lru", True), ("allkeys-lfu", True), ("noeviction", False)):
            admin.config_set("maxmemory-policy", policy)
            if refused:
                with pytest.raises(RedisUnavailable) as caught:
                    connect_checked(redis_url, on_connect=RedisIncarnation().on_connect, retries=0)
                assert caught.value.misconfigured and not caught.value.retryable
                assert f"maxmemory-policy {policy}" in str(caught.value) and "noeviction" in str(caught.value)
            else:
                connect_checked(redis_url, on_connect=RedisIncarnation().on_connect, retries=0).close()
        admin.config_set("maxmemory", "0")  # no limit: nothing is evicted whatever the policy
        admin.config_set("maxmemory-policy", "allkeys-lru")
        connect_checked(redis_url, on_connect=RedisIncarnation().on_connect, retries=0).close()
    finally:
        admin.config_set("maxmemory", "0")
        admin.config_set("maxmemory-policy", "noeviction")
