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
from shared.runtime.daemon import fail, retry_at_start
from shared.runtime.liveness import watchdog_alive
from shared.settings import EXIT_CONFIG


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


def open_exchange_or_exit(name: str, client: redis.Redis, log, settings: ExchangeSettings | None = None,
                          wait: Callable[[float], object] = time.sleep) -> ExchangeAccess:
    settings = settings or exchange_settings_or_exit(name)
    exchange = ExchangeClient(settings, alive=watchdog_alive)
    # Retried while it may pass (429, 503, refused) for a bounded time; a wrong key or URL fails at once.
    report = retry_at_start(name, exchange.self_test, ExchangeError, settings.startup_wait_s, log,
                            "exchange_not_ready_retrying", wait)
    filters = FilterCache(exchange.exchange_info, redis=client, refresh_interval_s=settings.filters_refresh_s)
    if not filters.load() or not len(filters):
        fail(f"{name}: no exchange trading rules could be loaded from {settings.describe()}")
    log.info("exchange_ready", target=report.target, url=report.root_url, symbols=report.symbol_count,
             available_balance=str(report.available_balance))
    return ExchangeAccess(settings, exchange, filters)
