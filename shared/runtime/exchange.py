"""Startup of a daemon that talks to the exchange: settings, self-test and filter cache, or exit.

There is no paper-trading fallback: the configured target answers, or the daemon exits 1
with one line naming the target and the failing step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.exchange.client import ExchangeClient
from shared.exchange.errors import ExchangeError, ExchangeSettingsError
from shared.exchange.filter_cache import FilterCache
from shared.exchange.target import ExchangeSettings, load_exchange_settings
from shared.logging import register_secrets
from shared import keys
from shared.runtime.daemon import DaemonContext, fail, retry_at_start
from shared.runtime.liveness import HEARTBEAT_TTL_S, QUIET_MAX_S, watchdog_alive
from shared.settings import EXIT_CONFIG


MIXED_FLEET_PATIENCE_S = HEARTBEAT_TTL_S + QUIET_MAX_S  # a stopped daemon's heartbeat is gone by then


@dataclass
class ExchangeAccess:
    settings: ExchangeSettings
    client: ExchangeClient
    filters: FilterCache


def exchange_settings_or_exit(name: str) -> ExchangeSettings:
    try:
        settings = load_exchange_settings()
    except ExchangeSettingsError as exc:
        fail(f"{name}: {exc}", code=EXIT_CONFIG)
    register_secrets([settings.api_key.get_secret_value(), settings.api_secret.get_secret_value()])
    return settings


def exchange_identity(settings: ExchangeSettings) -> str:
    """Which exchange a daemon trades on, as its heartbeat and the shared trading rules say it."""
    return f"{settings.target.value} {settings.root_url}"


def other_exchanges(client: redis.Redis, identity: str, own_consumer: str) -> list[str]:
    """`<consumer> (<exchange>)` of each daemon with a live heartbeat on this Redis that trades on another exchange."""
    own = keys.heartbeat(own_consumer)
    others = []
    for key in sorted(client.scan_iter(match=keys.heartbeat_pattern(), count=1000)):
        try:
            exchange = client.hget(key, "exchange")
        except redis.ResponseError:  # not a hash: no daemon's heartbeat
            continue
        if key != own and exchange is not None and exchange != identity:
            others.append(f"{key.removeprefix(keys.heartbeat(''))} ({exchange})")
    return others


def refuse_a_mixed_fleet(ctx: DaemonContext, identity: str, patience_s: float = MIXED_FLEET_PATIENCE_S,
                         wait: Callable[[float], object] = time.sleep) -> None:
    """The daemons on one Redis trade on one exchange: P3.3's snapshot and the trading rules they share, the permits,
    caps and ledger all describe one account. A daemon started on another target while others run (a partial restart
    after EXCHANGE_TARGET was changed) waits for them to stop, about a heartbeat's life (a crashed one's heartbeat
    expires), then exits naming them. Switching targets is a restart of all of them at once (quantum.target)."""
    consumer = ctx.settings.consumer_name(ctx.name)
    deadline = time.monotonic() + patience_s
    while others := other_exchanges(ctx.redis, identity, consumer):
        if time.monotonic() >= deadline:
            fail(f"{ctx.name}: daemons on this Redis trade on another exchange: {', '.join(others[:4])}; this one is "
                 f"configured for {identity}. One fleet trades on one exchange: stop them first (restarting "
                 "quantum.target switches every daemon at once)")
        ctx.log.warning("exchange_target_conflict", others=", ".join(others[:4]), own=identity)
        wait(min(1.0, max(deadline - time.monotonic(), 0.0)))  # deliberate: at start, until the others stop


def open_exchange_or_exit(ctx: DaemonContext, settings: ExchangeSettings | None = None,
                          wait: Callable[[float], object] = time.sleep,
                          conflict_patience_s: float = MIXED_FLEET_PATIENCE_S) -> ExchangeAccess:
    name, client, log = ctx.name, ctx.redis, ctx.log
    settings = settings or exchange_settings_or_exit(name)
    identity = exchange_identity(settings)
    refuse_a_mixed_fleet(ctx, identity, conflict_patience_s, wait)
    ctx.facts["exchange"] = identity
    exchange = ExchangeClient(settings, alive=watchdog_alive)
    # Retried while it may pass (429, 503, refused) for a bounded time; a wrong key or URL fails at once.
    report = retry_at_start(name, exchange.self_test, ExchangeError, settings.startup_wait_s, log,
                            "exchange_not_ready_retrying", wait)
    filters = FilterCache(exchange.exchange_info, redis=client, refresh_interval_s=settings.filters_refresh_s,
                          source=identity)
    if not filters.load() or not len(filters):
        fail(f"{name}: no exchange trading rules could be loaded from {settings.describe()}")
    log.info("exchange_ready", target=report.target, url=report.root_url, symbols=report.symbol_count,
             available_balance=str(report.available_balance))
    return ExchangeAccess(settings, exchange, filters)
