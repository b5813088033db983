"""Request weight and order counters over fixed windows, as in X-MBX-USED-WEIGHT-1M, X-MBX-ORDER-COUNT-1M and
X-MBX-ORDER-COUNT-10S."""

from __future__ import annotations

from collections.abc import Callable

MINUTE_MS = 60_000
TEN_SECONDS_MS = 10_000


class MinuteCounter:
    """A counter that resets at each wall-clock window boundary (a minute unless told), like Binance's fixed
    windows."""

    def __init__(self, clock: Callable[[], int], window_ms: int = MINUTE_MS):
        self.clock = clock
        self.window_ms = window_ms
        self.window = -1
        self.used = 0

    def current(self) -> int:
        self._roll()
        return self.used

    def add(self, amount: int) -> int:
        self._roll()
        self.used += amount
        return self.used

    def reset(self) -> None:
        self.window, self.used = -1, 0

    def seconds_left(self) -> int:
        """Whole seconds until the current window ends (at least 1)."""
        return max(1, -(-(self.window_ms - self.clock() % self.window_ms) // 1000))

    def _roll(self) -> None:
        window = self.clock() // self.window_ms
        if window != self.window:
            self.window, self.used = window, 0
