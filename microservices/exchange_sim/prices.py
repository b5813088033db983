"""Mark prices: a seeded random walk per symbol (or a replayed klines CSV), evaluated lazily.

The walk is a pure function of (seed, symbol, tick index): tick k multiplies the previous
price by 1 + r_k, r_k uniform in [-w, w] drawn from a hash of (seed, symbol, k). The tick
index is derived from elapsed clock time, so nothing runs in the background.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .symbols import SYMBOLS

Clock = Callable[[], int]
TWO64 = Decimal(2**64)
INTERNAL = Decimal("1E-12")
MARK = Decimal("1E-8")
CHECKPOINT_EVERY = 256
MAX_SCAN_TICKS = 200_000
HOUR_MS = 3_600_000
MAX_HISTORY_HOURS = 24 * 366 * 5


def unit(seed: int, symbol: str, index: int, salt: str = "walk") -> Decimal:
    """Deterministic uniform draw in [0, 1) for (seed, symbol, index)."""
    digest = hashlib.blake2b(f"{seed}|{symbol}|{salt}|{index}".encode(), digest_size=8).digest()
    return Decimal(int.from_bytes(digest, "big")) / TWO64


@dataclass
class Segment:
    start: int
    base: Decimal
    frozen: bool
    checkpoints: list[Decimal] = field(default_factory=list)


class PricePath:
    """Price of one symbol per tick index, honouring admin overrides (segments)."""

    def __init__(self, symbol: str, start: Decimal, seed: int, half_width: Decimal,
                 replay: Sequence[Decimal] | None = None):
        self.symbol = symbol
        self.seed = seed
        self.half_width = half_width
        self.replay = list(replay) if replay else None
        first = self.replay[0] if self.replay else start
        self.segments = [Segment(0, first, False, [first])]
        # (index, price) and (index, mark) last computed: both are pure functions of the index and
        # self.segments, so set(), the only code that changes segments, clears them
        self._memo: tuple[int, Decimal] | None = None
        self._mark_memo: tuple[int, Decimal] | None = None

    def step(self, price: Decimal, index: int) -> Decimal:
        move = (unit(self.seed, self.symbol, index) * 2 - 1) * self.half_width
        return (price * (1 + move)).quantize(INTERNAL)

    def price(self, index: int) -> Decimal:
        segment = self._segment(index)
        memo = self._memo
        # requests mostly move forward a few ticks at a time, so continue from the last answer
        if memo and segment.start <= memo[0] <= index < memo[0] + CHECKPOINT_EVERY and not segment.frozen \
                and self.replay is None:
            price = memo[1]
            for tick in range(memo[0] + 1, index + 1):
                price = self.step(price, tick)
        else:
            price = self._in_segment(segment, index)
        self._memo = (index, price)
        return price

    def mark(self, index: int) -> Decimal:
        """price(index) at mark precision; every position's margin asks for it, many times per tick."""
        memo = self._mark_memo
        if memo is not None and memo[0] == index:
            return memo[1]
        mark = self.price(index).quantize(MARK)
        self._mark_memo = (index, mark)
        return mark

    def frozen(self) -> bool:
        return self.segments[-1].frozen

    def set(self, index: int, price: Decimal, frozen: bool) -> None:
        self._memo = self._mark_memo = None
        segment = Segment(index, price, frozen, [price])
        # a clock that did not advance means the last override is simply replaced
        while self.segments and self.segments[-1].start >= index and len(self.segments) > 1:
            self.segments.pop()
        if self.segments[-1].start >= index:
            self.segments[-1] = segment
        else:
            self.segments.append(segment)

    def extremes(self, first: int, last: int) -> tuple[Decimal, Decimal]:
        """Lowest and highest price over ticks first..last inclusive."""
        first = max(first, last - MAX_SCAN_TICKS)
        low = high = self.price(first)
        for segment_first, segment_last, segment in self._pieces(first, last):
            for price in self._walk(segment, segment_first, segment_last):
                low, high = min(low, price), max(high, price)
        return low, high

    def _segment(self, index: int) -> Segment:
        for segment in reversed(self.segments):
            if segment.start <= index:
                return segment
        return self.segments[0]

    def _pieces(self, first: int, last: int):
        for position, segment in enumerate(self.segments):
            end = self.segments[position + 1].start - 1 if position + 1 < len(self.segments) else last
            lo, hi = max(first, segment.start), min(last, end)
            if lo <= hi:
                yield lo, hi, segment

    def _walk(self, segment: Segment, first: int, last: int):
        if segment.frozen:
            yield segment.base
            return
        if self.replay is not None:
            for index in range(first, last + 1):
                yield self._replayed(index)
            return
        price = self._in_segment(segment, first)
        yield price
        for index in range(first + 1, last + 1):
            price = self.step(price, index)
            yield price

    def _replayed(self, index: int) -> Decimal:
        return self.replay[min(index, len(self.replay) - 1)]

    def _in_segment(self, segment: Segment, index: int) -> Decimal:
        if segment.frozen:
            return segment.base
        if self.replay is not None:
            return self._replayed(index)
        offset = max(0, index - segment.start)
        slot = offset // CHECKPOINT_EVERY
        self._extend(segment, slot)
        price = segment.checkpoints[slot]
        origin = segment.start + slot * CHECKPOINT_EVERY
        for tick in range(origin + 1, origin + offset % CHECKPOINT_EVERY + 1):
            price = self.step(price, tick)
        return price

    def _extend(self, segment: Segment, slot: int) -> None:
        while len(segment.checkpoints) <= slot:
            origin = segment.start + (len(segment.checkpoints) - 1) * CHECKPOINT_EVERY
            price = segment.checkpoints[-1]
            for tick in range(origin + 1, origin + CHECKPOINT_EVERY + 1):
                price = self.step(price, tick)
            segment.checkpoints.append(price)


class PriceBook:
    """All symbols' mark prices on a shared clock."""

    def __init__(self, seed: int, tick_ms: int, bps_per_tick: Decimal, clock: Clock,
                 replay: dict[str, list[Decimal]] | None = None):
        self.seed = seed
        self.tick_ms = tick_ms
        self.clock = clock
        self.half_width = bps_per_tick / Decimal(10_000)
        self.t0 = clock()
        replay = replay or {}
        self.paths = {
            name: PricePath(name, spec.start_price, seed, self.half_width, replay.get(name))
            for name, spec in SYMBOLS.items()
        }
        self._history: dict[str, list[Decimal]] = {}

    def tick(self, at_ms: int | None = None) -> int:
        now = self.clock() if at_ms is None else at_ms
        return max(0, (now - self.t0) // self.tick_ms)

    def mark(self, symbol: str) -> Decimal:
        return self.paths[symbol].mark(self.tick())

    def marks_now(self) -> Callable[[str], Decimal]:
        """mark() of any symbol at one tick, read from the clock once: an account snapshot prices
        every position, so it asks for many marks in a row."""
        index, paths = self.tick(), self.paths
        return lambda symbol: paths[symbol].mark(index)

    def set_price(self, symbol: str, price: Decimal) -> None:
        self.paths[symbol].set(self.tick(), price, frozen=True)

    def set_frozen(self, symbol: str, frozen: bool) -> None:
        path = self.paths[symbol]
        index = self.tick()
        path.set(index, path.price(index), frozen=frozen)

    def is_frozen(self, symbol: str) -> bool:
        return self.paths[symbol].frozen()

    def extremes(self, symbol: str, first_tick: int, last_tick: int) -> tuple[Decimal, Decimal]:
        return self.paths[symbol].extremes(first_tick, last_tick)

    def price_at(self, symbol: str, at_ms: int) -> Decimal:
        """Price at any wall time; before the simulator started a coarse hourly history is used."""
        if at_ms >= self.t0:
            return self.paths[symbol].price(self.tick(at_ms)).quantize(MARK)
        return self._history_price(symbol, at_ms).quantize(MARK)

    def _history_price(self, symbol: str, at_ms: int) -> Decimal:
        hours_back = (self.t0 - at_ms) / Decimal(HOUR_MS)
        whole = min(int(hours_back), MAX_HISTORY_HOURS - 1)
        series = self._history_series(symbol, whole + 1)
        fraction = min(Decimal(1), hours_back - whole)
        return series[whole] + (series[whole + 1] - series[whole]) * fraction

    def _history_series(self, symbol: str, hours: int) -> list[Decimal]:
        series = self._history.setdefault(symbol, [self.paths[symbol].price(0)])
        path = self.paths[symbol]
        if path.replay is not None:
            series.extend([series[0]] * (hours + 1 - len(series)))
            return series
        hourly = self.half_width * Decimal(HOUR_MS // self.tick_ms).sqrt()
        while len(series) <= hours:
            move = (unit(self.seed, symbol, len(series), "history") * 2 - 1) * min(hourly, Decimal("0.05"))
            series.append((series[-1] / (1 + move)).quantize(INTERNAL))
        return series
