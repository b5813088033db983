from decimal import Decimal

import pytest

from microservices.exchange_sim.engine import Engine
from microservices.exchange_sim.prices import PriceBook, PricePath
from microservices.exchange_sim.replay import load_replay
from microservices.exchange_sim.settings import SimSettings

WIDTH = Decimal("0.00015")


def _path(seed: int, ticks: int = 600, symbol: str = "BTCUSDT") -> list[Decimal]:
    path = PricePath(symbol, Decimal("88000"), seed, WIDTH)
    return [path.price(k) for k in range(ticks)]


class FakeClock:
    def __init__(self, start: int = 1_700_000_000_000):
        self.now = start

    def __call__(self) -> int:
        return self.now


def test_same_seed_same_path_different_seed_different_path():
    assert _path(42) == _path(42)
    assert _path(42) != _path(7)
    assert _path(42, symbol="ETHUSDT") != _path(42)


def test_price_is_a_function_of_tick_index_regardless_of_query_order():
    forward = PricePath("BTCUSDT", Decimal("88000"), 42, WIDTH)
    backward = PricePath("BTCUSDT", Decimal("88000"), 42, WIDTH)
    ticks = [0, 1, 257, 1000, 999, 5, 4096]
    assert [forward.price(k) for k in sorted(ticks)] == sorted_by([backward.price(k) for k in ticks], ticks)


def sorted_by(values, keys):
    return [v for _, v in sorted(zip(keys, values, strict=True))]


def test_walk_is_lazy_and_driven_by_the_clock():
    clock = FakeClock()
    book = PriceBook(42, 1000, Decimal("1.5"), clock)
    first = book.mark("BTCUSDT")
    assert book.mark("BTCUSDT") == first == Decimal("88000.00000000")
    clock.now += 5_000
    assert book.tick() == 5
    assert book.mark("BTCUSDT") == _path(42, 6)[5].quantize(Decimal("1E-8"))


def test_set_price_freezes_and_resume_continues_from_there():
    clock = FakeClock()
    book = PriceBook(42, 1000, Decimal("1.5"), clock)
    book.set_price("BTCUSDT", Decimal("90000"))
    clock.now += 10_000
    assert book.mark("BTCUSDT") == Decimal("90000")
    book.set_frozen("BTCUSDT", False)
    clock.now += 3_000
    assert book.mark("BTCUSDT") != Decimal("90000")
    assert abs(book.mark("BTCUSDT") - 90000) < 90000 * Decimal("0.001")


def test_resting_limit_fills_when_walk_crossed_between_observations():
    clock = FakeClock()
    engine = Engine(SimSettings(seed=42), clock)
    path = _path(42, 61)
    low = min(path[1:61])
    limit = (low // Decimal("0.1")) * Decimal("0.1") + Decimal("0.1")
    assert limit < path[60]  # the final price is above the limit: only the path in between crosses it
    order, _ = engine.place({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
                             "quantity": "0.01", "price": str(limit)})
    assert order.status == "NEW"
    clock.now += 60_000
    engine.sync()
    assert order.status == "FILLED"
    assert order.avg_price == limit


def test_klines_csv_replay(tmp_path):
    csv = tmp_path / "ETHUSDT-1m-2025-01.csv"
    csv.write_text("open_time,open,high,low,close,volume\n1,3000,3010,2990,3001.5,1\n2,3001,3010,2990,3002.25,1\n")
    replay = load_replay(csv)
    assert replay == {"ETHUSDT": [Decimal("3001.5"), Decimal("3002.25")]}
    clock = FakeClock()
    book = PriceBook(42, 1000, Decimal("1.5"), clock, replay)
    assert book.mark("ETHUSDT") == Decimal("3001.5")
    clock.now += 1000
    assert book.mark("ETHUSDT") == Decimal("3002.25")
    clock.now += 5000
    assert book.mark("ETHUSDT") == Decimal("3002.25")


@pytest.mark.parametrize("seed", [1, 2])
def test_simulators_with_same_seed_quote_the_same_klines(seed):
    from microservices.exchange_sim.klines import klines

    clock = FakeClock()
    books = [PriceBook(seed, 1000, Decimal("1.5"), clock) for _ in range(2)]
    clock.now += 120_000
    query = {"symbol": "BTCUSDT", "interval": "1m", "limit": "5"}
    assert klines(books[0], query, clock.now) == klines(books[1], query, clock.now)


def test_mark_read_earlier_in_a_tick_gives_way_to_an_admin_price_set_in_that_tick():
    # PricePath remembers the latest tick's mark; every change of its segments must forget it
    clock = FakeClock()
    book = PriceBook(42, 1000, Decimal("1.5"), clock)
    clock.now += 2_000
    walked = book.mark("BTCUSDT")
    assert book.marks_now()("BTCUSDT") == walked
    book.set_price("BTCUSDT", Decimal("90000"))
    assert book.mark("BTCUSDT") == book.marks_now()("BTCUSDT") == Decimal("90000")
    book.set_price("BTCUSDT", Decimal("91000.5"))  # the same tick again
    assert book.mark("BTCUSDT") == book.marks_now()("BTCUSDT") == Decimal("91000.5")
    book.set_frozen("BTCUSDT", False)
    assert book.mark("BTCUSDT") == Decimal("91000.5")
    clock.now += 1_000
    assert book.mark("BTCUSDT") == book.marks_now()("BTCUSDT") != Decimal("91000.5")


def test_margin_snapshot_follows_a_price_set_in_the_same_tick():
    clock = FakeClock()
    engine = Engine(SimSettings(seed=42), clock)
    engine.place({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"})
    engine.place({"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.1"})
    before = engine.snapshot()
    engine.set_price("BTCUSDT", engine.mark("BTCUSDT") - 1000)
    after = engine.snapshot()
    assert after.unrealized == before.unrealized - Decimal("10")
    assert after.position_margin < before.position_margin
