"""The exchange snapshot in memory: refreshed on a schedule, published for the fleet.

One refresh is exactly two exchange requests (positionRisk and premiumIndex for all symbols),
whatever the number of symbols. A failed refresh keeps the last good snapshot; the stale gate
then denies plans once it is older than the threshold.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis

from microservices.position_state_brain import metrics
from shared import snapshot as exchange_snapshot
from shared.exchange.errors import sanitize
from shared.exchange.models import MarkPrice, Position
from shared.logging import get_logger
from shared.snapshot import ExchangeSnapshot


FULL_REFRESH_WEIGHT = 15  # positionRisk (5) + premiumIndex for all symbols (10)


class PositionSource(Protocol):
    def positions(self) -> list[Position]: ...

    def mark_prices(self) -> dict[str, MarkPrice]: ...


class SnapshotKeeper:
    def __init__(
        self,
        exchange: PositionSource,
        client: redis.Redis,
        poll_s: float,
        clock: Callable[[], float] = time.time,
        perf_counter: Callable[[], float] = time.perf_counter,
        must_refresh_after_s: float = math.inf,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.exchange = exchange
        self.r = client
        self.poll_s = poll_s
        self.must_refresh_after_s = must_refresh_after_s
        self.clock = clock
        self.perf_counter = perf_counter
        self.monotonic = monotonic  # schedules refreshes: a wall clock stepped back would make none due for that long
        self.log = get_logger(component="p33_snapshot")
        self._snapshot: ExchangeSnapshot | None = None
        self._last_attempt_s: float | None = None

    @property
    def snapshot(self) -> ExchangeSnapshot | None:
        return self._snapshot

    def age_s(self) -> float:
        """Seconds since the snapshot was fetched; +Inf when there is none."""
        if self._snapshot is None:
            return math.inf
        return self._snapshot.age_s(self._now_ms())

    def maybe_refresh(self) -> bool:
        """Refresh when the poll interval has passed since the last attempt (the consumer's on_tick)."""
        now = self.monotonic()
        due = self._last_attempt_s is None or now - self._last_attempt_s >= self.poll_s
        refreshed = self.refresh() if due and self._affordable() else False
        metrics.SNAPSHOT_AGE.set(self.age_s())
        return refreshed

    def _affordable(self) -> bool:
        """A scheduled refresh yields to orders when the exchange's weight budget runs low,
        unless the snapshot is getting old enough that plans would soon be denied as stale."""
        can_spend = getattr(self.exchange, "can_spend", None)
        if can_spend is None or can_spend(FULL_REFRESH_WEIGHT) or self.age_s() >= self.must_refresh_after_s:
            return True
        metrics.REFRESH_SKIPPED.inc()
        return False

    def refresh(self) -> bool:
        self._last_attempt_s = self.monotonic()
        fetched = self._fetch()
        if fetched is None:
            return False
        self._snapshot = fetched
        self._publish(fetched)
        metrics.SNAPSHOT_AGE.set(self.age_s())
        return True

    def _fetch(self) -> ExchangeSnapshot | None:
        # Stamped before the requests: the data is at least this fresh, never fresher.
        started_ms = self._now_ms()
        started = self.perf_counter()
        try:
            positions = self.exchange.positions()
            marks = self.exchange.mark_prices()
        except Exception as exc:  # any failure must keep the last good snapshot and the loop running
            self._note_failure(exc)
            return None
        finally:
            metrics.REFRESH_SECONDS.observe(self.perf_counter() - started)
        return exchange_snapshot.from_exchange(positions, marks, started_ms)

    def _note_failure(self, exc: Exception) -> None:
        metrics.REFRESH_FAILURES.inc()
        self.log.warning("snapshot_refresh_failed", error=type(exc).__name__, detail=sanitize(str(exc)),
                         kept_age_s=_rounded(self.age_s()))

    def _publish(self, fetched: ExchangeSnapshot) -> None:
        try:
            exchange_snapshot.publish(self.r, fetched)
        except redis.RedisError as exc:  # the copy in memory still serves this daemon's decisions
            self.log.warning("snapshot_publish_failed", error=type(exc).__name__)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def _rounded(seconds: float) -> Any:
    return None if math.isinf(seconds) else round(seconds, 3)
