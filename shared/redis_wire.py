"""Commands sent back to back on one connection, and their replies as Redis gave them.

The calls every plan makes (a consumer's ack-and-wait, each script call, a batch of script calls,
the executor's wait for its permits) go through here rather than through redis-py's Pipeline and
command layer. Those take a connection from the pool (a readiness poll() and bookkeeping), stack
each command with its options, time it for redis-py's observability hooks and run a response
callback on each reply: a consumer's XACK + XREADGROUP + arrival script cost 86 µs of client CPU
there and 43 µs here, one script call 41–51 µs there and 35 µs here (one process, 3,000 calls).

What stays as redis-py does it: the client's dedicated connection (or one from its pool) with its
packer (shared.redis_conn.CommandPacker), connection set-up, health checks and lock, and a failed
exchange retried as redis-py retries a command or a pipeline: the connection is dropped and every
command sent again, under the client's Retry (ConnectionError and TimeoutError).

Replies are RESP as the connection's parser reads it, decoded, with no response callbacks: an
XREADGROUP reply is {stream: [[id, [field, value, ...]], ...]} in RESP3, a list of [stream, entries]
in RESP2 (`entries` reads both), a BLPOP reply [list, value] or None. An error reply is the ResponseError (NoScriptError, ...) in its place,
never raised here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import redis

Command = Sequence[object]


def send(client: redis.Redis, commands: Sequence[Command],
         on_retry: Callable[[Exception], object] | None = None) -> list:
    """Each command's reply (or ResponseError), all sent in one write and read in order. `on_retry` hears each
    failed exchange whose commands were on their way to Redis, which may have run them with the replies lost (an
    XREADGROUP's entries then sit in the consumer's pending list, delivered to no one); not one that failed while
    connecting or checking the connection, before anything was sent."""
    conn = client.connection
    pool = client.connection_pool if conn is None else None
    if pool is not None:
        conn = pool.get_connection()
    lock = getattr(client, "single_connection_lock", None) if pool is None else None
    if lock is not None:
        lock.acquire()
    try:
        sent: list[bool] = []
        return conn.retry.call_with_retry(lambda: _exchange(conn, commands, sent),
                                          lambda error: _failed(conn, error, on_retry if sent else None))
    finally:
        if lock is not None:
            lock.release()
        if pool is not None:
            pool.release(conn)


def _failed(conn: redis.connection.AbstractConnection, error: Exception,
            on_retry: Callable[[Exception], object] | None) -> None:
    conn.disconnect()
    if on_retry is not None:
        on_retry(error)


def call(client: redis.Redis, *command: object, on_retry: Callable[[Exception], object] | None = None) -> object:
    """One command's reply; an error reply is raised."""
    reply = send(client, [command], on_retry)[0]
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def xreadgroup(group: str, consumer: str, stream: str, count: int, block_ms: int | None = None,
               after: str = ">") -> tuple:
    """XREADGROUP of one stream as a command for `send`: new entries (">"), or this consumer's pending
    entries after an id."""
    block = ("BLOCK", block_ms) if block_ms is not None else ()
    return ("XREADGROUP", "GROUP", group, consumer, "COUNT", count, *block, "STREAMS", stream, after)


def entries(reply: dict | list | None) -> list[tuple[str, dict[str, str] | None]]:
    """An XREAD/XREADGROUP reply's entries, oldest first: (id, fields), fields None for an entry deleted
    while pending. RESP3 (redis-py's default protocol since 6) answers a map of streams, RESP2 a list."""
    streams = reply.items() if isinstance(reply, dict) else reply or ()
    return [(entry_id, _fields(flat)) for _stream, stream_entries in streams for entry_id, flat in stream_entries]


def xrange(client: redis.Redis, stream: str, start: str, end: str, count: int) -> list[tuple[str, "Fields"]]:
    """XRANGE with each entry's fields as Fields (`duplicated` names a field given twice with different values,
    which redis-py's xrange hides by keeping the last)."""
    reply = call(client, "XRANGE", stream, start, end, "COUNT", count)
    listed: list = reply if isinstance(reply, list) else []
    return [(entry_id, fields) for entry_id, flat in listed if (fields := _fields(flat)) is not None]


def claimed(reply: list) -> tuple[str, list[tuple[str, dict[str, str] | None]], int, list[str]]:
    """An XAUTOCLAIM reply: (where the next call goes on, the entries claimed, how many it answered nil for, the ids
    of entries it dropped). Redis 6.2 answers an entry deleted while pending as nil and leaves it pending; 7 drops
    it from the pending list itself and names it in a third element."""
    listed = reply[1] or []
    claimed_entries = [(entry[0], _fields(entry[1])) for entry in listed if entry and entry[0] and entry[1] is not None]
    dropped = list(reply[2] or []) if len(reply) > 2 else []
    return reply[0], claimed_entries, len(listed) - len(claimed_entries), dropped


class Fields(dict):
    """An entry's fields. XADD keeps every pair it is given, a dict the last of each name: `duplicated` names
    those given more than once with different values (`XADD ... reduceOnly true ... reduceOnly false`)."""

    duplicated: tuple[str, ...] = ()


def _fields(flat: list[str] | None) -> Fields | None:
    if flat is None:
        return None
    fields = Fields(zip(flat[0::2], flat[1::2]))
    if 2 * len(fields) < len(flat):
        first: dict[str, str] = {}
        fields.duplicated = tuple(sorted({name for name, value in zip(flat[0::2], flat[1::2])
                                          if first.setdefault(name, value) != value}))
    return fields


def _exchange(conn: redis.connection.AbstractConnection, commands: Sequence[Command], sent: list[bool]) -> list:
    sent.clear()
    packed = conn.pack_commands(commands)
    conn.connect()  # a no-op when connected
    conn.check_health()
    sent.append(True)  # from here Redis may receive the commands, and run them
    conn.send_packed_command(packed, check_health=False)
    replies: list = []
    try:
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
    except BaseException:
        conn.disconnect()  # interrupted between replies: those left unread would answer the next commands
        raise
    return replies
