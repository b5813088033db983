"""Redis scripts called by their SHA: one round trip and one reply, however many commands they run."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import redis


class LuaScript:
    """A script sent once per server (EVAL on NOSCRIPT) and by SHA afterwards."""

    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[object] = ()):
        try:
            return client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return client.eval(self.source, len(keys), *keys, *args)
