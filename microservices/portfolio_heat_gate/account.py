"""The inputs of the heat formula: account equity (cached), its high-water mark, and the snapshot.

The account is read from the exchange at most once per P26_ACCOUNT_MAX_AGE_SEC, so a burst of
proposals costs one request. When the exchange fails, the last good account stands in for up to
P26_ACCOUNT_STALE_SEC; after that the account is unavailable and the gate publishes the proposal
uncalibrated (gate.py), as it does when the stored high-water mark is garbled. Without a fresh
snapshot heat is unavailable too, and the proposal is retried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Protocol

import redis

from microservices.portfolio_heat_gate.heat import HeatReading, exposure_from, portfolio_heat
from microservices.portfolio_heat_gate.settings import HeatGateSettings
from shared import freshness, keys, snapshot
from shared.exchange.errors import ExchangeError
from shared.exchange.models import AccountSummary
from shared.logging import get_logger
from shared.schema import format_decimal


class HeatUnavailable(Exception):
    """Heat cannot be computed now (no account, no fresh snapshot)."""


class AccountUnavailable(HeatUnavailable):
    """The account cannot be read and the last good one is too old; orders may still work."""


class AccountSource(Protocol):
    def account(self) -> AccountSummary: ...


class AccountCache:
    def __init__(self, exchange: AccountSource, max_age_s: float, stale_s: float,
                 monotonic: Callable[[], float] = time.monotonic):
        self.exchange = exchange
        self.max_age_s = max_age_s
        self.stale_s = stale_s
        self.monotonic = monotonic
        self.log = get_logger(component="p26_account")
        self._account: AccountSummary | None = None
        self._fetched_at = float("-inf")

    def equity(self) -> Decimal:
        return self.current().total_margin_balance

    def current(self) -> AccountSummary:
        now = self.monotonic()
        if self._account is not None and now - self._fetched_at < self.max_age_s:
            return self._account
        try:
            self._account, self._fetched_at = self.exchange.account(), now
        except ExchangeError as exc:
            return self._stand_in(now, exc)
        return self._account

    def _stand_in(self, now: float, exc: ExchangeError) -> AccountSummary:
        age_s = now - self._fetched_at
        if self._account is None or age_s > self.stale_s:
            raise AccountUnavailable(f"account unavailable: {exc.__class__.__name__}") from None
        self.log.warning("account_stale", error=exc.__class__.__name__, age_s=round(age_s, 3))
        return self._account


class HighWaterUnreadable(ValueError):
    """The stored equity high-water mark is not a finite decimal: heat cannot be read until it is fixed."""


def stored_high_water(stored: str | None) -> Decimal | None:
    if not stored:
        return None
    try:
        high = Decimal(stored)
    except InvalidOperation:
        high = None
    if high is None or not high.is_finite():
        raise HighWaterUnreadable(f"{keys.P26_EQUITY_HWM} is not a finite decimal: fix or delete it")
    return high


def raise_high_water(client: redis.Redis, equity: Decimal) -> Decimal:
    """The equity high-water mark after seeing `equity`; raised atomically against other gates."""
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(keys.P26_EQUITY_HWM)
                high = stored_high_water(pipe.get(keys.P26_EQUITY_HWM))
                if high is not None and high >= equity:
                    pipe.unwatch()
                    return high
                pipe.multi()
                pipe.set(keys.P26_EQUITY_HWM, format_decimal(equity))
                pipe.execute()
                return equity
            except redis.WatchError:
                continue


class HeatSource:
    """Reads snapshot and account and returns the portfolio heat now."""

    def __init__(self, client: redis.Redis, account: AccountCache, settings: HeatGateSettings,
                 wall_ms: Callable[[], int] = freshness.wall_ms):
        self.r = client
        self.account = account
        self.settings = settings
        self.wall_ms = wall_ms

    def reading(self) -> HeatReading:
        seen = snapshot.read(self.r)
        if seen is None:
            raise HeatUnavailable("no exchange snapshot")
        age_s = seen.age_s(self.wall_ms())
        if age_s > self.settings.p26_snapshot_max_age_sec:
            raise HeatUnavailable(f"exchange snapshot is {age_s:.1f}s old")
        equity = self.account.equity()
        return portfolio_heat(exposure_from(seen, equity, raise_high_water(self.r, equity)), self.settings)
