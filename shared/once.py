"""Write-once to a stream: a marker key guards the XADD, atomically against concurrent writers."""

from __future__ import annotations

import redis

MARKER_TTL_S = 7 * 24 * 3600


def xadd_once(client: redis.Redis, marker: str, stream: str, fields: dict[str, str]) -> bool:
    """XADD unless the marker exists; True when this call wrote the entry."""
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(marker)
                if pipe.exists(marker):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.set(marker, "1", ex=MARKER_TTL_S)
                pipe.xadd(stream, fields)
                pipe.execute()
                return True
            except redis.WatchError:
                continue
