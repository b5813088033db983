"""Redis scripts called by their SHA: one round trip and one reply, however many commands they run.
Sent through shared.redis_wire, so replies are as Redis gives them (no redis-py response callbacks)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import redis

from shared import redis_wire
from shared.redis_conn import wrong_type


NOT_TEXT = "(not a string)"
# Lua reads of keys an operator may have written with the wrong type (HSET where a string belongs, SET over a
# hash): such a key is an unreadable value, not a failed script (after writes it cannot undo, or for every plan
# of a batch). `text_of(key)` is GET, NOT_TEXT for another type; readers take it as any unreadable value (the
# kill switch as on, execution as DISABLED, forced dry run as on, a cooldown or snapshot as unreadable).
# `fields_of(key)` is HGETALL, false (nil to the caller) for another type.
SAFE_READS = """
local function text_of(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then return 'NOT_TEXT' end
  return value
end
local function fields_of(key)
  local flat = redis.pcall('HGETALL', key)
  if flat.err then return false end
  return flat
end
""".replace("NOT_TEXT", NOT_TEXT)


class LuaScript:
    """A script sent once per server (EVAL on NOSCRIPT) and by SHA afterwards."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[object] = (),
                 on_retry: Callable[[Exception], object] | None = None):
        """`on_retry`: as redis_wire.send's."""
        reply = redis_wire.send(client, [self.command(keys, args)], on_retry)[0]
        if isinstance(reply, redis.exceptions.NoScriptError):  # a restarted Redis lost its scripts
            return redis_wire.call(client, "EVAL", self.source, len(keys), *keys, *args, on_retry=on_retry)
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    def command(self, keys: Sequence[str], args: Sequence[object] = ()) -> tuple:
        """The EVALSHA of this script, for shared.redis_wire."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)

    def many(self, client: redis.Redis, calls: Sequence[tuple[Sequence[str], Sequence[object]]]) -> list:
        """Each call's reply, all sent in one round trip (each call atomic on its own)."""
        replies = self._pipelined(client, calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if missing:  # a restarted Redis lost its scripts: load once, send again only what did not run
            client.script_load(self.source)
            for i, reply in zip(missing, self._pipelined(client, [calls[i] for i in missing])):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def after_blpop(self, client: redis.Redis, list_key: str, timeout_s: float, keys: Sequence[str],
                    args: Sequence[object] = ()) -> tuple[list | None, object]:
        """BLPOP on `list_key`, and this script run the moment it returns, in one round trip: Redis runs a
        blocked client's next pipelined command as soon as the block ends. (popped or None, script reply)"""
        popped, reply = redis_wire.send(client, [("BLPOP", list_key, timeout_s), self.command(keys, args)])
        if isinstance(reply, redis.exceptions.NoScriptError):  # a restarted Redis lost its scripts
            reply = self(client, keys, args)
        elif isinstance(reply, Exception):
            raise reply
        if isinstance(popped, Exception):  # e.g. -UNBLOCKED: the script still ran, and what it did stands
            if not reply:
                raise popped
            popped = None
        return popped, reply

    def _pipelined(self, client: redis.Redis, calls: Sequence[tuple[Sequence[str], Sequence[object]]]) -> list:
        return redis_wire.send(client, [self.command(keys, args) for keys, args in calls])


def text_reply(value: object) -> object:
    """A pipelined GET's reply read as text_of reads it in a script: WRONGTYPE (a key of another type) is NOT_TEXT,
    any other error is raised."""
    if wrong_type(value):
        return NOT_TEXT
    if isinstance(value, redis.ResponseError):
        raise value
    return value


def texts(client: redis.Redis, names: Sequence[str]) -> list[str | None]:
    """String keys an operator may have mistyped, read outside the scripts (status, flatten, the executor's idle
    gauge): each value, None when absent, NOT_TEXT for a key of another type; one round trip."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return [text_reply(value) for value in pipe.execute(raise_on_error=False)]  # type: ignore[misc]
