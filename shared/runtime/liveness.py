"""Liveness, shown only while the loop makes progress: a heartbeat in Redis and systemd's watchdog.

A hung handler stops both, so `quantum status` shows the daemon stale and systemd restarts it.
"""

from __future__ import annotations

import os
import socket
import time

import redis

from shared import keys

HEARTBEAT_TTL_S = 30
BEAT_EVERY_S = 1.0
# The longest any loop waits (a blocked read, a timer's pause) before it beats again: well inside the heartbeat's
# TTL, systemd's WatchdogSec (30 s, shared.deploy) and the 10 s after which `quantum status` calls a beat stale.
QUIET_MAX_S = 5.0


def sd_notify(message: str) -> bool:
    """Send one datagram to systemd's NOTIFY_SOCKET; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


class Liveness:
    def __init__(self, client: redis.Redis, daemon: str, consumer: str):
        self.client = client
        self.daemon = daemon
        self.key = keys.heartbeat(consumer)
        self._last = 0.0

    def ready(self) -> None:
        sd_notify("READY=1")
        self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < BEAT_EVERY_S:
            return
        self._last = now
        sd_notify("WATCHDOG=1")
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key, mapping={"daemon": self.daemon, "pid": str(os.getpid()), "ts_ms": str(int(time.time() * 1000))})
        pipe.expire(self.key, HEARTBEAT_TTL_S)
        pipe.execute()

    def waiting(self) -> None:
        """Redis is down and the loop waits for it: alive, not hung, so systemd's watchdog is fed (else it would
        kill and restart the daemon every WatchdogSec until the start limit leaves the unit failed); the heartbeat
        in Redis cannot be written and goes stale, which `quantum status` shows."""
        sd_notify("WATCHDOG=1")

    def stopping(self) -> None:
        sd_notify("STOPPING=1")
        try:
            self.client.delete(self.key)
        except redis.RedisError:  # stopping during an outage: the heartbeat expires by itself
            pass
