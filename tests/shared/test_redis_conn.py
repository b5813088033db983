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
