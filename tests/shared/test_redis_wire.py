"""shared.redis_wire on a real Redis: commands back to back on one connection, replies as Redis gave them."""

from __future__ import annotations

import pytest
import redis

from shared import redis_wire
from shared.redis_conn import connect
from shared.redis_server import EmbeddedRedis


@pytest.fixture(params=["dedicated", "pooled", "resp2"])
def client(request, redis_url: str) -> redis.Redis:
    if request.param == "resp2":
        built = redis.Redis.from_url(redis_url, decode_responses=True, protocol=2)
    else:
        built = connect(redis_url, single_connection=request.param == "dedicated")
    built.flushdb()
    yield built
    built.close()


def test_replies_come_in_order_with_an_error_in_its_place(client: redis.Redis) -> None:
    replies = redis_wire.send(client, [("SET", "k", "v"), ("INCR", "k"), ("GET", "k"), ("RPUSH", "l", 1, 2.5)])

    assert replies[0] == "OK" and replies[2] == "v" and replies[3] == 2
    assert isinstance(replies[1], redis.ResponseError) and "not an integer" in str(replies[1])


def test_call_raises_an_error_reply(client: redis.Redis) -> None:
    client.set("k", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        redis_wire.call(client, "LPUSH", "k", "x")


def test_entries_read_new_and_pending_entries_in_either_protocol(client: redis.Redis) -> None:
    client.xgroup_create("s", "g", id="0", mkstream=True)
    first, second = client.xadd("s", {"a": "1", "b": "2"}), client.xadd("s", {"c": "3"})

    new = redis_wire.entries(redis_wire.call(client, *redis_wire.xreadgroup("g", "c1", "s", 10, block_ms=10)))
    client.xdel("s", first)
    pending = redis_wire.entries(redis_wire.call(client, *redis_wire.xreadgroup("g", "c1", "s", 10, after="0")))

    assert new == [(first, {"a": "1", "b": "2"}), (second, {"c": "3"})]
    assert pending == [(first, None), (second, {"c": "3"})]  # deleted while pending: no fields
    assert redis_wire.entries(redis_wire.call(client, *redis_wire.xreadgroup("g", "c1", "s", 10, block_ms=10))) == []


def test_a_pooled_client_gets_its_connection_back(redis_url: str) -> None:
    client = connect(redis_url)
    redis_wire.send(client, [("PING",)])
    redis_wire.send(client, [("PING",)])

    assert len(client.connection_pool._in_use_connections) == 0
    assert len(client.connection_pool._available_connections) == 1


def test_the_commands_are_sent_again_after_redis_restarts(tmp_path) -> None:
    with EmbeddedRedis(data_dir=str(tmp_path)) as server:
        client = connect(server.url, single_connection=True)
        assert redis_wire.send(client, [("SET", "k", "1"), ("GET", "k")]) == ["OK", "1"]
        server.restart()
        assert redis_wire.send(client, [("SET", "k", "2"), ("GET", "k")]) == ["OK", "2"]


def test_replies_left_unread_by_an_interruption_never_answer_later_commands(redis_url: str, monkeypatch) -> None:
    client = connect(redis_url, single_connection=True)
    client.set("a", "first")
    read = client.connection.read_response
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. a signal between the first reply and the second
        return read(*args, **kwargs)

    monkeypatch.setattr(client.connection, "read_response", interrupted)
    with pytest.raises(KeyboardInterrupt):
        redis_wire.send(client, [("GET", "a"), ("GET", "a")])
    monkeypatch.undo()

    assert redis_wire.call(client, "ECHO", "mine") == "mine"


def test_an_xautoclaim_reply_names_what_redis_6_left_nil_and_what_redis_7_dropped() -> None:
    # Redis 6.2: [next, [[id, fields] | nil...]]; Redis 7: a third element, the ids of deleted entries it dropped.
    assert redis_wire.claimed(["0-0", [["1-0", ["a", "1"]], None]]) == ("0-0", [("1-0", {"a": "1"})], 1, [])
    assert redis_wire.claimed(["0-0", [["1-0", ["a", "1"]]], ["2-0", "3-0"]]) == ("0-0", [("1-0", {"a": "1"})], 0,
                                                                                 ["2-0", "3-0"])
    assert redis_wire.claimed(["0-0", [], []]) == ("0-0", [], 0, [])


def test_on_retry_hears_a_failure_after_sending_not_one_before(redis_url, monkeypatch) -> None:
    """A failure while connecting or checking the connection sent nothing: nothing can have run in Redis, and the
    consumer need not read back its pending entries (each read-back counts a delivery)."""
    client = connect(redis_url, single_connection=True)
    heard: list = []
    client.ping()
    conn = client.connection
    real_check, checks = conn.check_health, []

    def fails_once() -> None:
        if not checks:
            checks.append(1)
            raise redis.ConnectionError("health check failed")
        real_check()

    monkeypatch.setattr(conn, "check_health", fails_once)
    assert redis_wire.send(client, [("PING",)], on_retry=heard.append) == ["PONG"]
    assert heard == [] and checks == [1]

    real_exchange = redis_wire._exchange

    def reply_lost_once(conn_, commands, sent):
        replies = real_exchange(conn_, commands, sent)
        if len(heard) == 0:
            raise redis.ConnectionError("reply lost")
        return replies

    monkeypatch.setattr(redis_wire, "_exchange", reply_lost_once)
    redis_wire.send(client, [("PING",)], on_retry=heard.append)
    assert [type(error) for error in heard] == [redis.ConnectionError]
