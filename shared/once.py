"""Write-once to a stream: a marker key guards the XADD, atomically against concurrent writers."""

from __future__ import annotations

from collections.abc import Callable

import redis

MARKER_TTL_S = 7 * 24 * 3600


def xadd_once(
    client: redis.Redis,
    marker: str,
    stream: str,
    fields: dict[str, str],
    ttl_s: int = MARKER_TTL_S,
    always: Callable[[redis.client.Pipeline], object] | None = None,
    value: str = "1",
) -> bool:
    """XADD unless the marker exists (written with `value`); True when this call wrote the entry.

    `always` queues writes that belong to the same transaction whether or not the entry is new.
    """
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(marker)
                fresh = not pipe.exists(marker)
                pipe.multi()
                if fresh:
                    pipe.set(marker, value, ex=ttl_s)
                    pipe.xadd(stream, fields)
                if always is not None:
                    always(pipe)
                pipe.execute()
                return fresh
            except redis.WatchError:
                continue
