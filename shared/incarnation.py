"""Which Redis the fleet talks to, and since when: what was written before it came up may be lost.

Redis persists asynchronously (the AOF is synced once a second, replicas lag their master), so after
a crash, a restart from an older file or a failover, the data can end a little before the old server
stopped. The order marker that says "an order may have been sent for this plan" can then be gone
while the plan's stream entry, written earlier, is not: its consumer group delivers it again. The
executor's guard against sending twice is that marker, so for an entry older than the Redis it now
talks to it asks the exchange first (shared.exchange: the order's client id derives from the plan).

Every connection also checks that the server cannot evict keys (check_no_eviction).

Every connection the client opens reads the server's run_id (a new process, or another server after
a failover, has a new one). The first time a run_id is seen its time is recorded in Redis
(`keys.REDIS_INCARNATION`), so a restarted executor that finds the same run_id keeps the earlier
time, and one that finds another run_id (or no record, as after losing everything) starts anew.
That time is the server's clock, or just past the newest entry of apply.plan if that is later: entry
ids carry the clock of the server that wrote them, and after a failover to another host an old
master's clock may have run ahead of the new one's.
"""

from __future__ import annotations

import threading

import redis

from shared import keys
from shared.redis_conn import RedisMisconfigured


class RedisIncarnation:
    """Hand `on_connect` to redis-py (redis_connect_func): it runs on every new connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since_ms: int | None = None  # Redis time from which entries were written to this server
        self.run_id: str | None = None

    @property
    def since_ms(self) -> int | None:
        return self._since_ms

    def predates(self, entry_id: str) -> bool:
        """Whether a stream entry was written before this server's data can be trusted to hold what
        followed it. Unknown (no connection yet) counts as yes."""
        since = self._since_ms
        return since is None or _entry_ms(entry_id) < since

    def on_connect(self, connection: redis.connection.AbstractConnection) -> None:
        connection.on_connect()  # what redis-py does when no hook is given: AUTH, SELECT, HELLO
        try:
            info = _command(connection, "INFO", "server")
        except redis.exceptions.NoPermissionError as exc:
            raise redis.exceptions.NoPermissionError(
                f"{exc} (the executor reads INFO server to tell when Redis restarted: give its user +info)") from None
        run_id = _info_field(info, "run_id")
        check_no_eviction(_command(connection, "INFO", "memory"))
        seconds, micros = _command(connection, "TIME")
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        record = _pairs(_command(connection, "HGETALL", keys.REDIS_INCARNATION))
        since_ms = _known_since(record, run_id)
        if since_ms is None:
            newest = _command(connection, "XREVRANGE", keys.Stream.APPLY_PLAN, "+", "-", "COUNT", "1")
            since_ms = max(now_ms, _entry_ms(_text(newest[0][0])) + 1) if newest else now_ms
            _command(connection, "HSET", keys.REDIS_INCARNATION, "run_id", run_id, "since_ms", str(since_ms))
        with self._lock:
            self.run_id = run_id
            self._since_ms = since_ms if self._since_ms is None else max(self._since_ms, since_ms)


def check_no_eviction(memory_info: str | bytes) -> None:
    """Refuse a Redis that may evict keys: the guard against sending an order twice is a set of keys with a TTL
    (the order marker, the permits' used markers, the claim, the result marker), and a `volatile-*` or `allkeys-*`
    policy under maxmemory may drop one; a redelivered plan could then be sent again (Binance accepts a client
    order id again once its order is filled)."""
    limit, policy = _info_field(memory_info, "maxmemory"), _info_field(memory_info, "maxmemory_policy")
    if limit not in ("", "0") and policy != "noeviction":
        raise RedisMisconfigured(f"Redis may evict keys (maxmemory {limit}, maxmemory-policy {policy}): the executor "
                                 "needs maxmemory-policy noeviction (or no maxmemory) so that no order marker is lost")


def _command(connection: redis.connection.AbstractConnection, *args: str):
    connection.send_command(*args)
    return connection.read_response()


def _known_since(record: dict[str, str], run_id: str) -> int | None:
    if record.get("run_id") != run_id:
        return None
    since = record.get("since_ms", "")
    return int(since) if since.isdigit() else None


def _info_field(info: str | bytes, name: str) -> str:
    text = info.decode() if isinstance(info, bytes) else info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise redis.ResponseError(f"INFO has no {name}")


def _pairs(flat) -> dict[str, str]:
    if isinstance(flat, dict):
        items = flat.items()
    else:
        items = zip(flat[0::2], flat[1::2])
    return {_text(k): _text(v) for k, v in items}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])
