"""The daemons' Redis client: one dedicated connection for direct commands, surviving restarts."""

from __future__ import annotations

from shared.lua import LuaScript
from shared.redis_conn import connect
from shared.redis_server import EmbeddedRedis

COUNT = LuaScript("return redis.call('INCR', KEYS[1])")


def test_a_single_connection_client_survives_a_redis_restart(tmp_path) -> None:
    """Daemons use one dedicated connection for direct commands (shared.runtime.daemon); it must come
    back after Redis restarts, like the pooled client, and scripts must be sent again."""
    with EmbeddedRedis(data_dir=str(tmp_path)) as server:
        client = connect(server.url, single_connection=True)
        assert COUNT(client, ["n"]) == 1
        server.restart()
        assert COUNT(client, ["n"]) in (1, 2)  # persisted or not; the call itself goes through
        assert client.ping()


def test_the_embedded_server_answers_on_its_unix_socket_too(tmp_path) -> None:
    """The bench (and any fleet on Redis' host) connects over the unix socket: the daemons' client works there."""
    short = tmp_path / "r"
    short.mkdir()
    with EmbeddedRedis(data_dir=str(short)) as server:
        client = connect(server.unix_url, single_connection=True)
        assert COUNT(client, ["n"]) == 1 and client.pipeline().incr("n").get("n").execute() == [2, "2"]


def test_a_data_dir_too_long_for_a_unix_socket_serves_tcp_only(tmp_path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    with EmbeddedRedis(data_dir=str(deep)) as server:
        assert server.unix_url is None and connect(server.url).ping()
