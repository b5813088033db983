import copy
import json
import time
from decimal import Decimal
from pathlib import Path

import fakeredis
import pytest

from shared import keys
from shared.exchange.errors import ExchangeUnavailable, UnknownSymbol
from shared.exchange.filter_cache import FilterCache, encode_snapshot
from shared.exchange.filters import parse_exchange_info

SAMPLE = json.loads((Path(__file__).parent / "exchange_info_sample.json").read_text())


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Fetcher:
    """Returns the queued payloads in turn; an Exception instance in the queue is raised instead."""

    def __init__(self, *results) -> None:
        self.results = list(results)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        result = self.results.pop(0) if len(self.results) > 1 else self.results[0]
        if isinstance(result, Exception):
            raise result
        return result


def with_btc_min_notional(value: str) -> dict:
    payload = copy.deepcopy(SAMPLE)
    btc = next(s for s in payload["symbols"] if s["symbol"] == "BTCUSDT")
    next(f for f in btc["filters"] if f["filterType"] == "MIN_NOTIONAL")["notional"] = value
    return payload


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def clock():
    return FakeClock()


def test_refresh_loads_rules_and_publishes_them(redis, clock):
    cache = FilterCache(Fetcher(SAMPLE), redis, clock)

    assert cache.refresh() is True

    assert cache.get("BTCUSDT").min_notional == Decimal("100")
    stored = json.loads(redis.get(keys.EXCHANGE_FILTERS))
    assert stored["fetched_at"] == clock.now
    assert stored["symbols"]["TRXUSDT"]["step_size"] == "1"


def test_refresh_failure_keeps_the_previous_rules(redis, clock):
    fetcher = Fetcher(SAMPLE, ExchangeUnavailable("exchangeInfo: connection refused"))
    cache = FilterCache(fetcher, redis, clock)
    cache.refresh()

    ok = cache.refresh()

    assert ok is False
    assert cache.refresh_failures == 1
    assert cache.get("BTCUSDT").min_notional == Decimal("100")


def test_refresh_failure_on_a_malformed_payload_keeps_the_previous_rules(redis, clock):
    cache = FilterCache(Fetcher(SAMPLE, {"symbols": [{"symbol": "X"}]}), redis, clock)
    cache.refresh()

    assert cache.refresh() is False
    assert "BTCUSDT" in cache.symbols


def test_second_cache_loads_the_shared_copy_without_fetching(redis, clock):
    FilterCache(Fetcher(SAMPLE), redis, clock).refresh()
    second_fetcher = Fetcher(RuntimeError("must not be called"))
    second = FilterCache(second_fetcher, redis, clock)
    clock.now += 100

    assert second.load() is True

    assert second_fetcher.calls == 0
    assert second.get("TRXUSDT").market_step_size == Decimal("1")


def test_load_fetches_when_the_shared_copy_is_older_than_the_interval(redis, clock):
    FilterCache(Fetcher(SAMPLE), redis, clock, refresh_interval_s=300).refresh()
    clock.now += 301
    fetcher = Fetcher(with_btc_min_notional("50"))
    cache = FilterCache(fetcher, redis, clock, refresh_interval_s=300)

    cache.load()

    assert fetcher.calls == 1
    assert cache.get("BTCUSDT").min_notional == Decimal("50")


def test_load_falls_back_to_a_stale_shared_copy_when_the_fetch_fails(redis, clock):
    FilterCache(Fetcher(SAMPLE), redis, clock).refresh()
    clock.now += 10_000
    cache = FilterCache(Fetcher(ExchangeUnavailable("down")), redis, clock)

    assert cache.load() is True
    assert cache.get("BTCUSDT").min_notional == Decimal("100")
    assert cache.refresh_failures == 1


def test_load_without_redis_or_exchange_has_no_rules(clock):
    cache = FilterCache(Fetcher(ExchangeUnavailable("down")), None, clock)

    assert cache.load() is False
    assert len(cache) == 0


def test_corrupt_shared_copy_costs_one_fetch(redis, clock):
    redis.set(keys.EXCHANGE_FILTERS, "{not json")
    fetcher = Fetcher(SAMPLE)

    assert FilterCache(fetcher, redis, clock).load() is True
    assert fetcher.calls == 1


@pytest.mark.parametrize(
    ("elapsed", "expect_fetch"),
    [(0, False), (299, False), (300, True), (1000, True)],
)
def test_maybe_refresh_follows_the_interval(redis, clock, elapsed, expect_fetch):
    fetcher = Fetcher(SAMPLE)
    cache = FilterCache(fetcher, redis, clock, refresh_interval_s=300)
    cache.refresh()
    clock.now += elapsed

    cache.maybe_refresh(clock.now)

    assert fetcher.calls == (2 if expect_fetch else 1)


def test_maybe_refresh_adopts_a_fresher_shared_copy_instead_of_fetching(redis, clock):
    slow_fetcher = Fetcher(SAMPLE)
    slow = FilterCache(slow_fetcher, redis, clock, refresh_interval_s=300)
    slow.refresh()
    clock.now += 200
    FilterCache(Fetcher(with_btc_min_notional("50")), redis, clock).refresh()
    clock.now += 150

    assert slow.maybe_refresh() is True

    assert slow_fetcher.calls == 1
    assert slow.get("BTCUSDT").min_notional == Decimal("50")


def test_maybe_refresh_waits_before_retrying_a_failed_fetch(redis, clock):
    fetcher = Fetcher(SAMPLE, ExchangeUnavailable("down"))
    cache = FilterCache(fetcher, redis, clock, refresh_interval_s=300, retry_after_failure_s=30)
    cache.refresh()
    clock.now += 300
    cache.maybe_refresh()

    clock.now += 10
    cache.maybe_refresh()
    calls_during_backoff = fetcher.calls
    clock.now += 20
    cache.maybe_refresh()

    assert (calls_during_backoff, fetcher.calls) == (2, 3)


def test_get_unknown_symbol_is_typed(redis, clock):
    cache = FilterCache(Fetcher(SAMPLE), redis, clock)
    cache.refresh()

    with pytest.raises(UnknownSymbol) as caught:
        cache.get("NOPEUSDT")

    assert caught.value.symbol == "NOPEUSDT"
    assert cache.find("NOPEUSDT") is None


def test_redis_write_failure_still_keeps_the_local_copy(clock):
    class BrokenRedis:
        def get(self, key):
            raise ConnectionError("redis down")

        def set(self, key, value):
            raise ConnectionError("redis down")

    cache = FilterCache(Fetcher(SAMPLE), BrokenRedis(), clock)

    assert cache.load() is True
    assert "ETHUSDT" in cache.symbols


def test_works_with_a_decoding_redis_client(clock):
    redis = fakeredis.FakeRedis(decode_responses=True)
    FilterCache(Fetcher(SAMPLE), redis, clock).refresh()

    second = FilterCache(Fetcher(RuntimeError("unused")), redis, clock)

    assert second.load() is True



def test_a_cache_without_a_fetcher_catches_up_with_the_shared_copy_on_a_miss() -> None:
    shared_redis = fakeredis.FakeRedis(decode_responses=True)
    follower = FilterCache(None, redis=shared_redis)
    assert follower.load() is False and follower.find("BTCUSDT") is None
    rules = parse_exchange_info(json.loads((Path(__file__).parent / "exchange_info_sample.json").read_text()))
    shared_redis.set(keys.EXCHANGE_FILTERS, encode_snapshot(time.time(), rules))

    assert follower.find("BTCUSDT") is not None


def test_a_shared_copy_from_another_exchange_is_never_adopted(clock):
    """Found in a review: after EXCHANGE_TARGET was switched (simulator to testnet), load() adopted the simulator's
    rules from Redis while they were under FILTERS_REFRESH_S old: step sizes and minimums of another exchange."""
    redis = fakeredis.FakeRedis(decode_responses=True)
    FilterCache(Fetcher(SAMPLE), redis, clock, source="simulator http://127.0.0.1:8090").refresh()
    fetcher = Fetcher(SAMPLE)

    testnet = FilterCache(fetcher, redis, clock, source="testnet https://testnet.binancefuture.com")

    assert testnet.load() is True and fetcher.calls == 1  # fetched its own, then shared it
    assert json.loads(redis.get(keys.EXCHANGE_FILTERS))["source"] == "testnet https://testnet.binancefuture.com"
    same = Fetcher(RuntimeError("unused"))
    assert FilterCache(same, redis, clock, source="testnet https://testnet.binancefuture.com").load() is True
    assert FilterCache(None, redis=redis).load() is True  # no exchange access (the governor): the fleet's copy
