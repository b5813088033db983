"""Fleet-wide cache of exchange trading rules, shared through Redis so exchangeInfo is fetched once."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from shared import keys
from shared.exchange.errors import UnknownSymbol, sanitize
from shared.exchange.filters import SymbolRules, parse_exchange_info

DEFAULT_REFRESH_INTERVAL_S = 300.0
DEFAULT_RETRY_AFTER_FAILURE_S = 30.0

Fetcher = Callable[[], Mapping[str, Any]]
Clock = Callable[[], float]

log = structlog.get_logger(__name__)


def encode_snapshot(fetched_at: float, rules: Mapping[str, SymbolRules], source: str | None = None) -> str:
    """The JSON stored at keys.EXCHANGE_FILTERS: {fetched_at, source, symbols: {SYMBOL: rules}}; source names the
    exchange the rules came from (shared.runtime.exchange.exchange_identity)."""
    symbols = {name: r.to_json_dict() for name, r in rules.items()}
    return json.dumps({"fetched_at": fetched_at, "source": source, "symbols": symbols}, separators=(",", ":"))


def decode_snapshot(raw: str | bytes) -> tuple[float, dict[str, SymbolRules], str | None]:
    data = json.loads(raw)
    rules = {name: SymbolRules.from_json_dict(v) for name, v in data["symbols"].items()}
    source = data.get("source")
    return float(data["fetched_at"]), rules, source if isinstance(source, str) else None


class FilterCache:
    """Holds the rules; refresh() fetches, load() prefers the fleet's shared copy when it is fresh."""

    def __init__(
        self,
        fetcher: Fetcher | None,
        redis: Any | None = None,
        clock: Clock = time.time,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
        retry_after_failure_s: float = DEFAULT_RETRY_AFTER_FAILURE_S,
        source: str | None = None,
    ) -> None:
        self._fetcher = fetcher
        # The exchange this cache fetches from: a shared copy from another (written before EXCHANGE_TARGET was
        # switched) is never adopted. None (no exchange access): the fleet's copy, whichever.
        self._source = source
        self._redis = redis
        self._clock = clock
        self.refresh_interval_s = refresh_interval_s
        self.retry_after_failure_s = retry_after_failure_s
        self._rules: dict[str, SymbolRules] = {}
        self.fetched_at: float | None = None
        self._last_failed_at: float | None = None
        self.refresh_failures = 0
        self.fetch_count = 0

    def __len__(self) -> int:
        return len(self._rules)

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(self._rules)

    def find(self, symbol: str) -> SymbolRules | None:
        """The symbol's rules; a miss first tries a (rate-limited) refresh, so a cache that started
        before the fleet's shared copy existed catches up on the first plan that needs it."""
        rules = self._rules.get(symbol)
        if rules is None and self.maybe_refresh():
            rules = self._rules.get(symbol)
        return rules

    def get(self, symbol: str) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            raise UnknownSymbol(symbol)
        return rules

    def age_s(self, now: float | None = None) -> float | None:
        if self.fetched_at is None:
            return None
        return (self._clock() if now is None else now) - self.fetched_at

    def refresh(self) -> bool:
        """Fetch exchangeInfo; on failure keep the last good rules, count it, and return False."""
        if self._fetcher is None:
            return self._adopt_shared()
        self.fetch_count += 1
        try:
            rules = parse_exchange_info(self._fetcher())
        except Exception as exc:  # any fetcher failure must leave the last good copy in place
            self._note_failure(exc)
            return False
        self._last_failed_at = None
        self._adopt(self._clock(), rules)
        self._publish()
        return True

    def load(self) -> bool:
        """Adopt the shared copy if younger than the refresh interval, else fetch; True when rules exist."""
        shared = self._read_shared()
        if shared is not None and self._is_fresh(shared[0]):
            self._adopt(*shared)
            return True
        if self.refresh():
            return True
        return self._fall_back_to_stale(shared)

    def maybe_refresh(self, now: float | None = None) -> bool:
        """Refresh when the rules are older than the interval; a fresher shared copy wins over a fetch."""
        now = self._clock() if now is None else now
        if not self._due(now):
            return False
        shared = self._read_shared()
        if shared is not None and self._is_fresh(shared[0], now):
            self._adopt(*shared)
            return True
        return self.refresh()

    def _adopt_shared(self) -> bool:
        """A cache without a fetcher (no exchange access) follows the fleet's shared copy only."""
        shared = self._read_shared()
        if shared is not None:
            self._adopt(*shared)
        return shared is not None

    def _due(self, now: float) -> bool:
        if self.fetched_at is not None and now - self.fetched_at < self.refresh_interval_s:
            return False
        # After a failure wait a little, so a down exchange is not hammered every loop tick.
        if self._last_failed_at is None:
            return True
        return now - self._last_failed_at >= self.retry_after_failure_s

    def _is_fresh(self, fetched_at: float, now: float | None = None) -> bool:
        now = self._clock() if now is None else now
        return now - fetched_at < self.refresh_interval_s

    def _adopt(self, fetched_at: float, rules: dict[str, SymbolRules]) -> None:
        self._rules = rules
        self.fetched_at = fetched_at

    def _note_failure(self, exc: Exception) -> None:
        self.refresh_failures += 1
        self._last_failed_at = self._clock()
        log.warning(
            "exchange_filters_refresh_failed",
            error=type(exc).__name__,
            detail=sanitize(str(exc)),
            failures=self.refresh_failures,
            kept_symbols=len(self._rules),
        )

    def _fall_back_to_stale(self, shared: tuple[float, dict[str, SymbolRules]] | None) -> bool:
        if not self._rules and shared is not None:
            # Stale exchange rules beat none: they change rarely and the exchange still enforces them.
            self._adopt(*shared)
            log.warning("exchange_filters_using_stale_shared_copy", age_s=self.age_s())
        return bool(self._rules)

    def _read_shared(self) -> tuple[float, dict[str, SymbolRules]] | None:
        if self._redis is None:
            return None
        try:
            raw = self._redis.get(keys.EXCHANGE_FILTERS)
            if raw is None:
                return None
            fetched_at, rules, source = decode_snapshot(raw)
        except Exception as exc:  # a broken shared copy only costs one fetch
            log.warning("exchange_filters_shared_read_failed", error=type(exc).__name__,
                        detail=sanitize(str(exc)))
            return None
        if self._source is not None and source != self._source:
            return None  # another exchange's rules (or an unlabelled copy): fetched from ours instead
        return fetched_at, rules

    def _publish(self) -> None:
        if self._redis is None or self.fetched_at is None:
            return
        try:
            self._redis.set(keys.EXCHANGE_FILTERS, encode_snapshot(self.fetched_at, self._rules, self._source))
        except Exception as exc:  # the local copy is good; other daemons will fetch their own
            log.warning("exchange_filters_shared_write_failed", error=type(exc).__name__,
                        detail=sanitize(str(exc)))
