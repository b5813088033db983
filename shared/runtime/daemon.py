"""What every daemon's main does: settings, logging, metrics, a checked Redis, signals, the loop.

SIGTERM (and Ctrl-C) finish the entry in hand and exit 0; while idle in XREADGROUP the wait
is interrupted at once. A daemon that cannot reach Redis at start waits REDIS_STARTUP_WAIT_S for it, then
says so in one line and exits 1; one that loses it later waits for it, feeding systemd's watchdog meanwhile.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TypeVar

import redis

from shared import logging as qlog
from shared import metrics
from shared.redis_conn import OnConnect, RedisUnavailable, connect_checked, unavailable
from shared.runtime.consumer import ConsumerConfig, Shutdown, StreamConsumer
from shared.runtime.liveness import QUIET_MAX_S, ConsumerOwner, Liveness
from shared.settings import EXIT_CONFIG, CommonSettings

EXIT_UNAVAILABLE = 1
T = TypeVar("T")


@dataclass
class DaemonContext:
    name: str
    settings: CommonSettings
    redis: redis.Redis
    log: Any
    # What the daemon's heartbeat says of it besides liveness (the exchange it trades on: shared.runtime.exchange).
    facts: dict[str, str] = field(default_factory=dict)
    owner: ConsumerOwner | None = None  # its consumer name, held from start (shared.runtime.liveness)


SOCKET_MARGIN_S = 3.0  # a blocked read's reply, past its BLOCK, on a busy host
DAEMON_RETRIES = 2
DAEMON_CALL_BUDGET_S = 25.0  # under WatchdogSec (30 s, shared.deploy): tests/deploy/test_units.py ties them


def fail(message: str, code: int = EXIT_UNAVAILABLE) -> None:
    print(qlog.redact_text(message), file=sys.stderr)
    raise SystemExit(code)


def start(name: str, settings: CommonSettings, extra_secrets: tuple[str, ...] = (),
          on_connect: OnConnect | None = None) -> DaemonContext:
    # A crash in native code (a C extension) still leaves each thread's Python stack on stderr (the journal):
    # file and function names only, no values, so nothing secret.
    faulthandler.enable()
    redis_url = settings.redis_url.get_secret_value()
    qlog.register_secrets([redis_url, *extra_secrets])
    qlog.register_url_password(redis_url)
    log = qlog.configure(name, settings.log_level)
    # A stalled Redis (it accepts, never answers) must not starve systemd's watchdog: one command, all its attempts
    # timing out, returns its error within DAEMON_CALL_BUDGET_S, and the loop then waits for Redis feeding the
    # watchdog. A blocked read waits STREAM_BLOCK_MS (at most 5 s) plus a margin; a Redis restart is waited out by
    # the loops, not by retrying one command for long.
    socket_timeout = settings.stream_block_ms / 1000 + SOCKET_MARGIN_S
    # A daemon talks to Redis from its loop's thread only: one dedicated connection for direct commands. Down or
    # restarting, Redis is waited for (REDIS_STARTUP_WAIT_S), so an outage longer than systemd's few quick restarts
    # (StartLimitBurst) does not leave the unit failed for good; refused credentials fail at once.
    client = retry_at_start(
        name, lambda: connect_checked(redis_url, socket_timeout=socket_timeout, single_connection=True,
                                      on_connect=on_connect, retries=DAEMON_RETRIES),
        RedisUnavailable, settings.redis_startup_wait_s, log, "redis_unavailable_at_start")
    # Before anything it writes (P3.3's instance key, the executor's quantum:mode): a second process under this
    # consumer name exits here, naming the first, and changes nothing.
    owner = ConsumerOwner(client, settings.consumer_name(name), name)
    owner.hold(first=True)
    _serve_metrics(name, settings)
    log.info("daemon_started", metrics=f"{settings.metrics_host}:{settings.metrics_port}")
    return DaemonContext(name=name, settings=settings, redis=client, log=log, owner=owner)


def retry_at_start(name: str, attempt: Callable[[], T], failure: type[Exception], patience_s: float, log, event: str,
                   wait: Callable[[float], object] = time.sleep) -> T:
    """attempt() until it succeeds. A `failure` that says it is retryable (down, busy, restarting) is tried again
    with a backoff (1 s doubling to 10 s) for up to patience_s, then exits 1 (EXIT_UNAVAILABLE: systemd restarts the
    unit); so does any other failure, at once. One that says it is `misconfigured` (refused credentials, a user
    without a command it needs, a hedge-mode account) exits 2 (EXIT_CONFIG): it fails the same way until an
    operator changes something, and the units do not restart on 2 (RestartPreventExitStatus=2), where five
    restarts would only spend the exchange's request weight."""
    deadline = time.monotonic() + patience_s
    delay = 1.0
    while True:
        try:
            return attempt()
        except failure as exc:
            left = deadline - time.monotonic()
            if getattr(exc, "misconfigured", False):
                fail(f"{name}: {exc}", code=EXIT_CONFIG)
            if not getattr(exc, "retryable", False) or left <= 0:
                fail(f"{name}: {exc}")
            pause = min(delay, left)  # the last attempt comes at the deadline, not a backoff step before it
            log.warning(event, error=str(exc), retry_in_s=round(pause, 3))
            wait(pause)  # deliberate: start-up backoff; nothing to block on while the service is not there
            delay = min(delay * 2, 10.0)


def _serve_metrics(name: str, settings: CommonSettings) -> None:
    if not settings.metrics_enabled:
        return
    try:
        metrics.serve(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        fail(f"{name}: cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: {exc.strerror}")


def consumer_config(settings: CommonSettings, daemon: str, stream: str, group: str, **overrides: Any) -> ConsumerConfig:
    values: dict[str, Any] = {
        "stream": stream,
        "group": group,
        "consumer": settings.consumer_name(daemon),
        "batch": settings.stream_batch,
        "block_ms": settings.stream_block_ms,
        "claim_idle_ms": settings.stream_claim_idle_ms,
        "max_deliveries": settings.stream_max_deliveries,
        "start_id": settings.stream_group_start_id,
        "retention_ms": int(settings.stream_retention_hours * 3600 * 1000),
    }
    values.update(overrides)
    return ConsumerConfig(**values)


def install_signal_handlers(consumer: StreamConsumer) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        consumer.request_stop()
        if consumer.idle:
            raise Shutdown(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def run_timer(ctx: DaemonContext, interval_s: float, tick: Callable[[], None]) -> int:
    """A timer-driven daemon's loop: tick every interval until SIGTERM; liveness after each tick.

    A Redis outage skips ticks (logged) rather than ending the daemon; the next tick starts afresh.
    Any other error of a tick is logged (tick_failed) and counted (quantum_stream_handler_errors_total,
    stream="timer"), and the next tick runs: a restart would meet the same data. Meanwhile the heartbeat
    goes stale and systemd's watchdog is still fed, as while Redis is down.
    """
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    liveness = Liveness(ctx.redis, ctx.name, ctx.settings.consumer_name(ctx.name), ctx.facts, ctx.owner)
    liveness.ready()
    due, healthy = time.monotonic() + interval_s, True
    while not stopping.wait(min(max(due - time.monotonic(), 0.0), QUIET_MAX_S)):
        if time.monotonic() < due:  # a long interval (HARVEST_POLL_SEC up to 60 s) is waited in beats
            _between_ticks(ctx, liveness, healthy)
            continue
        healthy = False
        try:
            tick()
            liveness.beat()
            metrics.LOOP_HEARTBEAT.labels(stream="timer", group=ctx.name).set(time.time())
            healthy = True
        except Shutdown:
            raise
        except Exception as exc:
            if unavailable(exc):  # unreachable, or refusing (READONLY, OOM, ...): skip the tick, uncounted
                ctx.log.warning("redis_unavailable", error=exc.__class__.__name__)
            else:
                metrics.HANDLER_ERRORS.labels(stream="timer", group=ctx.name).inc()
                ctx.log.exception("tick_failed")
            liveness.waiting()
        due = time.monotonic() + interval_s  # a full pause after each tick, however long it took
    liveness.stopping()
    ctx.log.info("daemon_stopped")
    return 0


def _between_ticks(ctx: DaemonContext, liveness: Liveness, healthy: bool) -> None:
    """Alive while waiting for the next tick: the heartbeat too if the last tick went well (a failing one leaves it
    stale, as said above), systemd's watchdog in any case."""
    if not healthy:
        liveness.waiting()
        return
    try:
        liveness.beat()
    except redis.RedisError as exc:  # down, read-only after a failover, out of memory: alive all the same
        ctx.log.warning("heartbeat_not_written", error=exc.__class__.__name__)
        liveness.waiting()


def run(ctx: DaemonContext, consumer: StreamConsumer) -> int:
    """Run the loop until SIGTERM; systemd hears READY now and WATCHDOG while the loop progresses."""
    owner = ctx.owner if ctx.owner is not None and ctx.owner.consumer == consumer.config.consumer else None
    liveness = Liveness(ctx.redis, ctx.name, consumer.config.consumer, ctx.facts, owner)
    consumer.on_progress = liveness.beat
    consumer.on_redis_wait = liveness.waiting
    install_signal_handlers(consumer)
    liveness.ready()
    processed = consumer.run()
    liveness.stopping()
    ctx.log.info("daemon_stopped", processed=processed)
    return 0
