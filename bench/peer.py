"""Helper processes of the bench, each a separate process so it never shares the driver's GIL.

    python -m bench.peer hop   <redis_url>   blocks in XREADGROUP on bench:hop and reports each wake-up
    python -m bench.peer watch <redis_url>   records when each permit key is SET (keyspace notifications)

Times are time.monotonic_ns(): CLOCK_MONOTONIC, one clock for every process on the host, so a time
taken here can be subtracted from one taken in the driver.
"""

from __future__ import annotations

import json
import sys
import time

import redis

HOP_STREAM = "bench:hop"
HOP_GROUP = "bench"
HOP_ACK = "bench:hop:ack"
READY = "bench:peer:ready"
CTL = "bench:ctl"
CTL_ACK = "bench:ctl:ack"
CALIB_PREFIX = "bench:calib:"
CALIB_ACK = "bench:calib:ack"
PERMIT_PATTERN = "__keyspace@0__:quantum:permit:p3*"
CALIB_PATTERN = "__keyspace@0__:" + CALIB_PREFIX + "*"
KEYSPACE = "__keyspace@0__:"


def hop(url: str) -> None:
    """Process B of the stream hop: woken by XREADGROUP BLOCK, it stamps the wake-up and replies."""
    r = redis.Redis.from_url(url, decode_responses=True)
    try:
        r.xgroup_create(HOP_STREAM, HOP_GROUP, id="$", mkstream=True)
    except redis.ResponseError:
        pass
    r.rpush(READY, "hop")
    while True:
        response = r.xreadgroup(HOP_GROUP, "b", {HOP_STREAM: ">"}, count=1, block=0)
        woke = time.monotonic_ns()
        for _stream, entries in response:
            for entry_id, fields in entries:
                r.xack(HOP_STREAM, HOP_GROUP, entry_id)
                if "quit" in fields:
                    return
                r.rpush(HOP_ACK, str(woke))


def watch(url: str) -> None:
    """Stamps the first SET of every quantum:permit:p32|p33:<plan_id> key as Redis announces it."""
    r = redis.Redis.from_url(url, decode_responses=True)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.psubscribe(PERMIT_PATTERN, CALIB_PATTERN)
    sub.subscribe(CTL)
    seen: dict[str, list[int | None]] = {}
    r.rpush(READY, "watch")
    for message in sub.listen():
        now = time.monotonic_ns()
        channel = message["channel"]
        if message["type"] == "pmessage":
            if message["data"] != "set":
                continue
            key = channel[len(KEYSPACE):]
            if key.startswith(CALIB_PREFIX):
                r.rpush(CALIB_ACK, str(now))
                continue
            # quantum:permit:p32:<plan_id>
            kind, plan_id = key[len("quantum:permit:"):].split(":", 1)
            slot = seen.setdefault(plan_id, [None, None])
            index = 0 if kind == "p32" else 1
            if slot[index] is None:
                slot[index] = now
        elif message["type"] == "message" and channel == CTL:
            command, _, arg = message["data"].partition(" ")
            if command == "dump":
                with open(arg, "w") as out:
                    json.dump(seen, out)
                seen = {}
                r.rpush(CTL_ACK, "ok")
            elif command == "quit":
                return


if __name__ == "__main__":
    {"hop": hop, "watch": watch}[sys.argv[1]](sys.argv[2])
