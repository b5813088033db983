"""Liveness, shown only while the loop makes progress: a heartbeat in Redis and systemd's watchdog.

A hung handler stops both, so `quantum status` shows the daemon stale and systemd restarts it.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable

import redis

from shared import keys
from shared.lua import LuaScript
from shared.redis_conn import unavailable

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


_watchdog_fed_at = float("-inf")


def watchdog_alive(monotonic: Callable[[], float] = time.monotonic) -> bool:
    """Feed systemd's watchdog (no heartbeat in Redis), at most once per BEAT_EVERY_S: for the loop's beats and for
    steps that make progress between them, such as each exchange request of a tick. Under systemd each feed is a
    socket and a datagram; the order path makes two requests' worth of calls per plan. True when it fed."""
    global _watchdog_fed_at
    now = monotonic()
    if now - _watchdog_fed_at < BEAT_EVERY_S:
        return False
    _watchdog_fed_at = now
    return sd_notify("WATCHDOG=1")


class ConsumerNameInUse(SystemExit):
    """Another live process runs under this consumer name: this one exits (status 1, the message on stderr). A
    SystemExit, so that no handler's `except Exception` takes it for one plan's failure and carries on."""


class AnotherInstance(SystemExit):
    """Another instance of a daemon that runs once per Redis holds its key (SoleInstance): this one exits (status 1,
    the message on stderr), a SystemExit for the same reason."""


def running(client: redis.Redis, daemon: str, within_s: float = 25.0) -> dict[str, dict[str, str]]:
    """The heartbeats (key -> fields) of `daemon`'s processes that beat within the last `within_s`: a heartbeat is
    deleted at a clean stop, and a crashed process's stays until it expires (HEARTBEAT_TTL_S), which its remaining TTL
    tells. A daemon beats about once a second between batches; an executor on a slow exchange (a lookup, a send, their
    timeouts) may not for several seconds, hence 25 by default. One SCAN, then one round trip for all of them."""
    found = list(client.scan_iter(match=keys.heartbeat_pattern(), count=1000, _type="hash"))
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.hgetall(key)
        pipe.pttl(key)
    replies = pipe.execute(raise_on_error=False) if found else []
    fresh_ms = (HEARTBEAT_TTL_S - within_s) * 1000
    return {key: beat for key, beat, ttl_ms in zip(found, replies[0::2], replies[1::2])
            if isinstance(beat, dict) and beat.get("daemon") == daemon and isinstance(ttl_ms, int) and ttl_ms > fresh_ms}


class Liveness:
    def __init__(self, client: redis.Redis, daemon: str, consumer: str, facts: dict[str, str] | None = None,
                 owner: "ConsumerOwner | None" = None):
        self.client = client
        self.daemon = daemon
        self.consumer = consumer
        self.facts = facts or {}  # written with each heartbeat (the exchange an exchange daemon trades on)
        self.key = keys.heartbeat(consumer)
        self.owner = owner or ConsumerOwner(client, consumer, daemon)  # taken in daemon.start, normally
        self._last = 0.0

    def ready(self) -> None:
        """Hold the consumer name (ConsumerNameInUse when a live process has it), then tell systemd."""
        self.owner.hold(first=True)
        sd_notify("READY=1")
        self.beat(force=True)

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < BEAT_EVERY_S:
            return
        self._last = now
        watchdog_alive()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key, mapping={**self.facts, "daemon": self.daemon, "pid": str(os.getpid()),
                                     "ts_ms": str(int(time.time() * 1000))})
        pipe.expire(self.key, HEARTBEAT_TTL_S)
        try:
            self.owner.hold()  # lost only if this process stalled past its TTL and another took the name
            pipe.execute()
        except redis.ResponseError as exc:  # Redis refuses writes (OOM, READONLY): alive all the same; the beat
            if not unavailable(exc):       # in Redis goes stale, which says so
                raise

    def waiting(self) -> None:
        """Redis is down and the loop waits for it: alive, not hung, so systemd's watchdog is fed (else it would
        kill and restart the daemon every WatchdogSec until the start limit leaves the unit failed); the heartbeat
        in Redis cannot be written and goes stale, which `quantum status` shows."""
        watchdog_alive()

    def stopping(self) -> None:
        sd_notify("STOPPING=1")
        self.owner.let_go(self.key)  # the heartbeat too, unless another process holds the name (and writes it) now


# KEYS: the instance key; ARGV: consumer ttl-s. Reply: the other holder, or nil when this one holds it now (taken or
# renewed). A value of another type is no holder.
_CLAIM = LuaScript("""
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'string' and holder ~= ARGV[1] then return holder end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
""")
_LET_GO = LuaScript("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end return 1")
# KEYS: the owner key, then keys of the holder's (its heartbeat); ARGV: token. Deletes them all when the name is this
# process's or nobody's (its key expired while it stalled); nothing when another process holds it now.
_LET_GO_WITH = LuaScript("""
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'string' and holder ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
if holder == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
""")


class SoleInstance:
    """For a daemon of which one instance only may run against a Redis (P3.3 keeps the opens it permitted in
    memory: a second instance would permit an open on a symbol the first just permitted one on). A key names the
    running instance; taken at start, renewed about once a second, let go at stop, and gone HEARTBEAT_TTL_S after a
    crash, so the same instance restarting (same consumer name) takes it back at once."""

    def __init__(self, client: redis.Redis, key: str, consumer: str, ttl_s: int = HEARTBEAT_TTL_S,
                 monotonic=time.monotonic, why: str = "only one may run"):
        self.client, self.key, self.consumer, self.ttl_s, self.monotonic = client, key, consumer, ttl_s, monotonic
        self.why = why  # said when another instance holds the key
        self._renewed = float("-inf")

    def hold(self) -> None:
        """claim(), or exit (AnotherInstance) naming the instance that holds the key."""
        self._refuse(self.claim())

    def keep(self) -> None:
        """renew(), or exit the same way: the key was lost (a Redis restart) and taken by another meanwhile."""
        self._refuse(self.renew())

    def _refuse(self, other: str | None) -> None:
        if other is not None:
            daemon = self.consumer.split("@", 1)[0]
            raise AnotherInstance(f"another {daemon} ({other}) runs against this Redis: {self.why}")

    def claim(self) -> str | None:
        """None when this instance holds the key now; else the instance that does."""
        self._renewed = self.monotonic()
        return _CLAIM(self.client, [self.key], [self.consumer, self.ttl_s])

    def renew(self) -> str | None:
        """claim() at most once a second (called after every batch)."""
        if self.monotonic() - self._renewed < BEAT_EVERY_S:
            return None
        return self.claim()

    def let_go(self) -> None:
        try:
            _LET_GO(self.client, [self.key], [self.consumer])
        except redis.RedisError:  # stopping during an outage: the key expires by itself
            pass


# KEYS: the owner key; ARGV: the dead holder's token, this process's token, ttl-s. Reply: nil when taken over, else the
# holder now (another process came first).
_TAKE_OVER = LuaScript("""
local holder = redis.pcall('GET', KEYS[1])
if type(holder) == 'string' and holder ~= ARGV[1] and holder ~= ARGV[2] then return holder end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return false
""")


class ConsumerOwner:
    """One process per consumer name. Two processes under one name (a copy started by hand beside the unit, two
    units with the same QUANTUM_INSTANCE) share the group's pending entries and the executor's plan claims, which are
    held by name: each takes the other's work (one took a plan's permits and sent its order while the other found
    them used and ended the plan as permit_timeout, so the fill went unrecorded). A key names the process holding the
    name (`<host> <pid> <random>`): taken at start, renewed with each heartbeat, let go at stop, and gone
    HEARTBEAT_TTL_S after a crash. A holder on this host whose pid no longer runs (or is this process's own pid: a
    restart in a fresh PID namespace) is a crashed predecessor: taken over at once."""

    def __init__(self, client: redis.Redis, consumer: str, daemon: str = "daemon", ttl_s: int = HEARTBEAT_TTL_S,
                 host: str | None = None, pid: int | None = None):
        self.client, self.consumer, self.daemon = client, consumer, daemon
        self.key, self.ttl_s = keys.consumer_owner(consumer), ttl_s
        self.host, self.pid = host or socket.gethostname(), pid if pid is not None else os.getpid()
        self.token = f"{self.host} {self.pid} {secrets.token_hex(4)}"

    def hold(self, first: bool = False) -> None:
        """Take (first) or renew the name; ConsumerNameInUse when another live process has it. A Redis that refuses
        writes (read-only after a failover, out of memory) lets nothing be held and nothing taken: this process goes
        on, and its next beat holds the name again."""
        try:
            holder = self.take() if first else self.renew()
        except redis.ResponseError as exc:
            if unavailable(exc):
                return
            raise
        if holder is not None:
            host, pid = (holder.split(" ") + ["?", "?"])[:2]
            raise ConsumerNameInUse(
                f"{self.daemon}: the consumer name {self.consumer} is in use by pid {pid} on {host}: two processes "
                "under one name would take each other's entries and claims (give each its own QUANTUM_INSTANCE)")

    def take(self) -> str | None:
        """None when this process holds the name now; else the live process that does."""
        holder = self.renew()
        if holder is not None and self._gone(holder):
            holder = _TAKE_OVER(self.client, [self.key], [holder, self.token, self.ttl_s])
        return holder

    def renew(self) -> str | None:
        return _CLAIM(self.client, [self.key], [self.token, self.ttl_s])

    def let_go(self, *with_keys: str) -> None:
        """Let the name go, and delete `with_keys` (the heartbeat) unless another process holds the name now."""
        try:
            _LET_GO_WITH(self.client, [self.key, *with_keys], [self.token])
        except redis.RedisError:  # stopping during an outage: the keys expire by themselves
            pass

    def _gone(self, holder: str) -> bool:
        host, _, rest = holder.partition(" ")
        pid = rest.partition(" ")[0]
        if host != self.host or not pid.isdigit():
            return False  # another host's process (or an unreadable holder): only its key's expiry says it is gone
        if int(pid) == self.pid:
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # runs, as another user
        return False
