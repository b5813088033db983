"""Redis connections: decoded strings, bounded retries with backoff, one clear error when unreachable."""

from __future__ import annotations

import re
from collections.abc import Callable

import redis
from redis._parsers.encoders import Encoder
from redis.backoff import ExponentialBackoff
from redis.connection import HiredisRespSerializer, PythonRespSerializer
from redis.retry import Retry

from shared.logging import redact_text

try:
    import hiredis
except ImportError:  # redis[hiredis] is a dependency; without it redis-py packs commands itself
    hiredis = None

ENCODING, ENCODING_ERRORS = "utf-8", "replace"


# Redis answered, but cannot serve writes (or anything) now: a replica after a failover, maxmemory with noeviction,
# a failed RDB save, a busy script, a cluster resharding, a server loading its data. Like a lost connection: wait
# and retry, never count it against the entry in hand (its deliveries) or end the daemon.
REFUSALS = ("READONLY", "OOM", "MISCONF", "BUSY", "TRYAGAIN", "MASTERDOWN", "NOREPLICAS", "LOADING")


def raised_in_script(exc: BaseException, codes: tuple[str, ...]) -> bool:
    """An error Redis 6.2 wrapped when a script's redis.call failed with one of these codes: "Error running script
    (...): @user_script:6: NOGROUP ..." (7 passes the code through, as a plain command's)."""
    return bool(re.search(r"@user_script:\d+:.*?-?\b(" + "|".join(codes) + r")\b", str(exc)))


def unavailable(exc: BaseException) -> bool:
    """Redis cannot serve us now: unreachable, or answering with one of REFUSALS (redis-py strips the code from
    the message and keeps it in the class or status_code; Redis 6.2 wraps one raised inside a script)."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    if not isinstance(exc, redis.ResponseError):
        return False
    if isinstance(exc, (redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError,
                        redis.exceptions.TryAgainError)):
        return True
    return getattr(exc, "status_code", None) in REFUSALS or raised_in_script(exc, REFUSALS)


def wrong_type(exc: BaseException) -> bool:
    """A command's reply for a key of another type than it works on (an operator's SET where a hash belongs):
    the value is unreadable, which the caller decides on; Redis itself is fine."""
    return isinstance(exc, redis.ResponseError) and str(exc).startswith("WRONGTYPE")


class RedisMisconfigured(redis.ResponseError):
    """A Redis set up so that the fleet must not run on it (raised by a connect hook): a setting to change."""


class RedisUnavailable(RuntimeError):
    """Redis cannot be reached or refused our credentials; the message carries no password. `retryable`: it
    could not be reached (down, restarting, loading its data) or refused to serve now (READONLY after a failover,
    OOM, MISCONF: `unavailable`), which waiting may cure. `misconfigured`: it refused our credentials or a
    command our user may not run, the same on every start until an operator changes them."""

    def __init__(self, message: str, retryable: bool = False, misconfigured: bool = False):
        super().__init__(message)
        self.retryable = retryable
        self.misconfigured = misconfigured


OnConnect = Callable[[redis.connection.AbstractConnection], None]


_NUMBERS = (int, float)  # exactly these (bool and other subclasses go to redis-py's packer, as before)


class CommandPacker:
    """Packs a command for the wire with hiredis.pack_command on the arguments as they are: it encodes str
    (UTF-8), int and float itself, byte for byte as redis-py does. What it refuses (bool, None, Decimal, a
    str that is not UTF-8, bytearray) goes through redis-py's own packer, which encodes it or raises
    DataError exactly as always. redis-py's packer runs its encoder in Python on every argument first:
    0.47 µs each here, and a plan costs the executor about 115 arguments (12 % of its Python CPU)."""

    def __init__(self, buffer_cutoff: int = 6000) -> None:
        encoder = Encoder(ENCODING, ENCODING_ERRORS, decode_responses=True)
        self._redis_py = HiredisRespSerializer(PythonRespSerializer(buffer_cutoff, encoder.encode).pack, encoder.encode)

    def pack(self, *args: object) -> list[bytes]:
        first = args[0]
        # As redis-py: a command name given with its subcommand ("CONFIG SET") is split into words.
        if isinstance(first, str) or isinstance(first, bytes) and b" " in first:
            words = first.split()
            if len(words) != 1:
                args = (*words, *args[1:])
        # Numbers become their text here: hiredis formats an int or float with PyObject_Repr, which first runs
        # the pending signal handlers, and does not check it for failure. A handler that raises there (SIGTERM
        # while a daemon waits) crashed the process with SIGSEGV. repr() is the text hiredis and redis-py write.
        args = tuple([repr(arg) if arg.__class__ in _NUMBERS else arg for arg in args])
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, UnicodeError):
            return self._redis_py.pack(*args)


PACKER = CommandPacker() if hiredis is not None else None


def connect(url: str, socket_timeout: float | None = 30.0, retries: int = 6,
            single_connection: bool = False, on_connect: OnConnect | None = None) -> redis.Redis:
    """A client that survives a Redis restart: commands retry with exponential backoff.

    `single_connection`: direct commands share one dedicated connection (behind redis-py's lock)
    instead of taking one from the pool each time: taking and returning one costs a readiness poll()
    and redis-py's pool bookkeeping, 13 of a GET's 57 µs of client CPU here (strace: 5 system calls
    per GET through the pool, 4 on the dedicated connection). For a process that uses the client
    from one thread at a time (a daemon's loop); pipelines still use the pool.
    `on_connect`: runs on every new connection in place of redis-py's own set-up, which it must call
    (connection.on_connect()); see shared.incarnation."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        encoding=ENCODING,
        encoding_errors=ENCODING_ERRORS,
        command_packer=PACKER,
        socket_timeout=socket_timeout,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        single_connection_client=single_connection,
        redis_connect_func=on_connect,
    )


CONNECT_TIMEOUT_S = 5.0


def worst_call_s(socket_timeout: float, retries: int) -> float:
    """The longest one command can take before its error reaches the caller: every attempt timing out (connecting
    or reading), with the backoff between them (ExponentialBackoff(cap=2.0, base=0.05))."""
    backoff = sum(min(2.0, 0.05 * 2 ** attempt) for attempt in range(retries))
    return (retries + 1) * max(socket_timeout, CONNECT_TIMEOUT_S) + backoff


def connect_checked(url: str, socket_timeout: float | None = 30.0, single_connection: bool = False,
                    on_connect: OnConnect | None = None, retries: int = 6) -> redis.Redis:
    """Connect and PING, translating failures into RedisUnavailable with a redacted URL."""
    try:
        # A single-connection client connects while it is built, so building it can fail too.
        client = connect(url, socket_timeout=socket_timeout, single_connection=single_connection,
                         on_connect=on_connect, retries=retries)
        client.ping()
    except redis.AuthenticationError:
        raise RedisUnavailable(f"Redis at {redact_text(url)} refused the credentials (check REDIS_URL)",
                               misconfigured=True) from None
    except redis.ResponseError as exc:
        raise RedisUnavailable(f"Redis at {redact_text(url)} answered an error: {redact_text(str(exc))}",
                               retryable=unavailable(exc),
                               misconfigured=isinstance(exc, (redis.exceptions.NoPermissionError,
                                                              RedisMisconfigured))) from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise RedisUnavailable(f"cannot reach Redis at {redact_text(url)}: {exc.__class__.__name__}",
                               retryable=True) from None
    return client
