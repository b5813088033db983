"""Per-minute request weight and order counters, as in X-MBX-USED-WEIGHT-1M / X-MBX-ORDER-COUNT-1M."""

from __future__ import annotations

from collections.abc import Callable

MINUTE_MS = 60_000


class MinuteCounter:
    """A counter that resets at each wall-clock minute boundary, like Binance's fixed windows."""

    def __init__(self, clock: Callable[[], int]):
        self.clock = clock
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
        return max(1, -(-(MINUTE_MS - self.clock() % MINUTE_MS) // 1000))

    def _roll(self) -> None:
        window = self.clock() // MINUTE_MS
        if window != self.window:
            self.window, self.used = window, 0
