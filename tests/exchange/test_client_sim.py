"""ExchangeClient against the local exchange simulator (microservices.exchange_sim)."""

import os
import socket
import subprocess
import sys
from decimal import Decimal

import pytest

from shared.exchange.client import ExchangeClient, open_exchange
from shared.exchange.errors import (
    ExchangeError,
    ExchangeRejected,
    ExchangeStartupError,
    ExchangeUnavailable,
    OutcomeUnknown,
    RateLimited,
)
from shared.exchange.filters import parse_exchange_info, round_qty_down, validate_order
from shared.exchange.models import Side
from shared.exchange.target import ExchangeSettings
from tests.e2e.fleet import ROOT

D = Decimal
SECRET = "SECRETVALUE9d8c7b6a5f4e"
NO_FAULTS = dict(unknown_after_execute=0.0, unavailable_no_execute=0.0, drop_connection=0.0, rate_limited=0.0)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith(("EXCHANGE_", "BINANCE_")) or name.upper() in {"TESTNET", "USE_TESTNET",
                                                                                  "PAPER_TRADING",
                                                                                  "CREDENTIALS_DIRECTORY"}:
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def sim():
    testing = pytest.importorskip("microservices.exchange_sim.testing")
    with testing.running_simulator() as running:
        yield running


@pytest.fixture
def client(sim):
    sim.reset()
    sim.set_faults(**NO_FAULTS)
    sim.set_price("BTCUSDT", D("88000"))
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=sim.base_url,
                                EXCHANGE_SIM_API_KEY=sim.api_key, EXCHANGE_SIM_API_SECRET=sim.api_secret)
    yield ExchangeClient(settings)
    sim.set_faults(**NO_FAULTS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_requests(client: ExchangeClient) -> list[str]:
    session = client._client.session
    seen: list[str] = []
    original = session.request

    def counting(method, url, *args, **kwargs):
        seen.append(f"{method.upper()} {url.split('?')[0]}")
        return original(method, url, *args, **kwargs)

    session.request = counting
    return seen


def test_self_test_passes(client):
    report = client.self_test()

    assert report.target == "simulator"
    assert report.symbol_count > 0
    assert report.wallet_balance > 0


def test_open_exchange_returns_a_self_tested_client(client):
    opened, report = open_exchange(client._settings)

    assert opened.target.value == report.target == "simulator"


def test_rejection_keeps_the_binance_code(client):
    with pytest.raises(ExchangeRejected) as caught:
        client.create_market_order("BTCUSDT", "BUY", D("0.001"), False, "t-small-1")

    assert caught.value.code == -4164


def test_a_drifted_clock_costs_one_refused_request_not_every_one_until_a_restart(client):
    """Found in a review (simulator fidelity): the offset to the exchange's time was taken only at start, so after
    the host's clock stepped every signed request was refused -1021 until the daemon restarted."""
    client.sync_clock()
    client._client.timestamp_offset -= 120_000  # as if the host's clock jumped two minutes ahead

    with pytest.raises(ExchangeRejected) as caught:
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-drift-1")
    order = client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-drift-2")

    assert caught.value.code == -1021 and order.filled
    assert client.get_order("BTCUSDT", "t-drift-1") is None  # refused means not executed


def test_open_query_and_reduce_only_close(client):
    rules = parse_exchange_info(client.exchange_info())["BTCUSDT"]
    qty = round_qty_down(rules, D("0.0023"))
    assert validate_order(rules, qty, client.mark_price("BTCUSDT").mark_price, reduce_only=False) is None

    opened = client.create_market_order("BTCUSDT", Side.BUY, qty, False, "t-open-1")
    found = client.get_order("BTCUSDT", "t-open-1")
    held = {p.symbol: p.amount for p in client.positions()}
    closed = client.create_market_order("BTCUSDT", Side.SELL, qty, True, "t-close-1")

    assert opened.filled and opened.executed_qty == D("0.002") and opened.avg_price > 0
    assert found is not None and found.order_id == opened.order_id and found.filled
    assert held["BTCUSDT"] == D("0.002")
    assert closed.filled and closed.reduce_only
    assert "BTCUSDT" not in {p.symbol for p in client.positions()}


def test_mark_prices_for_all_symbols_in_one_request(client, sim):
    sim.set_price("ETHUSDT", D("3100.5"))
    seen = count_requests(client)

    prices = client.mark_prices()

    assert len(seen) == 1 and seen[0].endswith("/fapi/v1/premiumIndex")
    assert prices["BTCUSDT"].mark_price == D("88000")
    assert prices["ETHUSDT"].mark_price == D("3100.5")


def test_unknown_error_after_execute_raises_outcome_unknown_and_the_order_is_found(client, sim):
    sim.set_faults(unknown_after_execute=1.0)

    with pytest.raises(OutcomeUnknown):
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-unknown-1")
    sim.set_faults(**NO_FAULTS)
    found = client.get_order("BTCUSDT", "t-unknown-1")

    assert found is not None and found.filled


def test_unavailable_raises_exchange_unavailable_and_no_order_exists(client, sim):
    sim.set_faults(unavailable_no_execute=1.0)

    with pytest.raises(ExchangeUnavailable) as caught:
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-unavail-1")
    sim.set_faults(**NO_FAULTS)

    assert caught.value.retryable
    assert client.get_order("BTCUSDT", "t-unavail-1") is None


def test_dropped_connection_after_execute_is_outcome_unknown(client, sim):
    sim.set_faults(drop_connection=1.0)

    with pytest.raises(OutcomeUnknown):
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-drop-1")
    sim.set_faults(**NO_FAULTS)

    assert client.get_order("BTCUSDT", "t-drop-1") is not None


def test_rate_limited_is_retryable(client, sim):
    sim.set_faults(rate_limited=1.0)

    with pytest.raises(RateLimited) as caught:
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-limited-1")

    assert caught.value.retryable


def test_after_a_rate_limit_nothing_is_sent_until_its_retry_after_is_over(sim):
    """Binance bans the IP (418, minutes to days) of a client that keeps sending after a 429; the executor's
    order lookups used to go on at 0.1, 0.3, 0.9, 2 s whatever Retry-After said."""
    sim.reset()
    sim.set_price("BTCUSDT", D("88000"))
    sim.set_faults(**{**NO_FAULTS, "rate_limited": 1.0, "rate_limited_retry_after_s": 3})
    now = [1000.0]
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=sim.base_url,
                                EXCHANGE_SIM_API_KEY=sim.api_key, EXCHANGE_SIM_API_SECRET=sim.api_secret)
    client = ExchangeClient(settings, monotonic=lambda: now[0])
    with pytest.raises(RateLimited) as caught:
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-limited-2")
    assert caught.value.retry_after_s == 3
    sim.set_faults(**NO_FAULTS)
    sent = count_requests(client)

    now[0] += 2.5
    with pytest.raises(RateLimited) as held:
        client.get_order("BTCUSDT", "t-limited-2")
    assert sent == [] and "not sent" in held.value.message and held.value.retry_after_s == pytest.approx(0.5)

    now[0] += 0.6
    assert client.get_order("BTCUSDT", "t-limited-2") is None  # never placed: the 429 refused it
    assert sent == ["GET " + sim.base_url + "/fapi/v1/order"]


def test_a_short_retry_after_is_waited_out_rather_than_refused(sim):
    sim.reset()
    sim.set_faults(**{**NO_FAULTS, "rate_limited": 1.0, "rate_limited_retry_after_s": 1})
    now, slept = [1000.0], []
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=sim.base_url,
                                EXCHANGE_SIM_API_KEY=sim.api_key, EXCHANGE_SIM_API_SECRET=sim.api_secret)

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    client = ExchangeClient(settings, monotonic=lambda: now[0], sleep=sleep)
    with pytest.raises(RateLimited):
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-limited-3")
    sim.set_faults(**NO_FAULTS)
    now[0] += 0.25

    with pytest.raises(RateLimited) as refused:  # an order never waits: lookups rely on it being signed when sent
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-limited-4")
    assert "not sent" in refused.value.message and slept == []

    assert client.get_order("BTCUSDT", "t-limited-3") is None  # a read: sent after the rest of the second
    assert slept == [pytest.approx(0.75)]
    assert [order["clientOrderId"] for order in sim.orders()] == []


def test_unreachable_target_fails_self_test_naming_target_and_step():
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=f"http://127.0.0.1:{free_port()}",
                                EXCHANGE_SIM_API_SECRET=SECRET)

    with pytest.raises(ExchangeStartupError) as caught:
        ExchangeClient(settings).self_test()

    line = str(caught.value)
    assert "target=simulator" in line and "step=server_time" in line
    assert SECRET not in line and "\n" not in line
    assert caught.value.__context__ is None


def fake_clock_client(sim) -> tuple[ExchangeClient, list[float]]:
    now = [1000.0]
    settings = ExchangeSettings(EXCHANGE_TARGET="simulator", EXCHANGE_SIM_URL=sim.base_url,
                                EXCHANGE_SIM_API_KEY=sim.api_key, EXCHANGE_SIM_API_SECRET=sim.api_secret)
    # The wall clock too (the exchange's minute, a ban's end): 1,000.0 s is 40 s into a minute.
    return ExchangeClient(settings, monotonic=lambda: now[0], sleep=lambda _s: None, wall=lambda: now[0]), now


@pytest.mark.parametrize("kind, read_error", [
    ("service_unavailable", ExchangeUnavailable),
    ("rate_limited", RateLimited),
    ("ip_banned", RateLimited),
    ("waf_blocked", RateLimited),
])
def test_each_outage_on_the_wire_reads_as_its_error(client, sim, kind, read_error):
    """The simulator answers as Binance does (503 -1001 / 503 -1008 / 429 / 418 / the firewall's 403 page);
    the client tells "not served, try later" (and for limits, "stop sending") from a rejection."""
    sim.set_faults(outages={"GET /fapi/v1/premiumIndex": kind})

    with pytest.raises(ExchangeError) as caught:
        client.mark_price("BTCUSDT")

    assert type(caught.value) is read_error and caught.value.retryable
    assert not isinstance(caught.value, ExchangeRejected)


def test_an_order_answered_overloaded_is_looked_up_not_believed_unsent(client, sim):
    """503 with -1008 is documented as "not executed", yet an order did execute after one (banbox/banbot#114,
    2025-09): only Binance's own "Service Unavailable." is read as unsent; this one is an unknown outcome, looked
    up before the plan ends."""
    sim.set_faults(outages={"POST /fapi/v1/order": "overloaded"})

    with pytest.raises(OutcomeUnknown):
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-overloaded-1")
    sim.set_faults(outages={})

    assert client.get_order("BTCUSDT", "t-overloaded-1") is None


@pytest.mark.parametrize("kind, quiet_s", [("ip_banned", 120), ("waf_blocked", 20.0)])
def test_after_a_ban_or_the_firewall_nothing_is_sent_until_it_is_over(sim, kind, quiet_s):
    """A 418 says how long in Retry-After; the firewall's 403 page says nothing, so the pause lasts to the end of the
    exchange's minute. Meanwhile no request leaves, whatever its endpoint: sending during a ban lengthens it."""
    sim.reset()
    sim.set_faults(outages={"GET /fapi/v1/premiumIndex": kind}, rate_limited_retry_after_s=120)
    client, now = fake_clock_client(sim)
    with pytest.raises(RateLimited) as caught:
        client.mark_price("BTCUSDT")
    assert caught.value.retry_after_s == (120 if kind == "ip_banned" else None)
    sim.set_faults(outages={})
    sent = count_requests(client)

    with pytest.raises(RateLimited, match="not sent"):
        client.create_market_order("BTCUSDT", "BUY", D("0.002"), False, "t-banned-1")
    now[0] += quiet_s - 0.1
    with pytest.raises(RateLimited, match="not sent"):
        client.account()
    assert sent == [] and sim.orders() == []

    now[0] += 0.2
    assert client.mark_price("BTCUSDT").mark_price == D("88000")
    assert sent == ["GET " + sim.base_url + "/fapi/v1/premiumIndex"]


@pytest.mark.parametrize("kind, quiet_s", [("rate_limited", 20.0), ("ip_banned", 300.0)])
def test_a_limit_without_retry_after_holds_to_the_minutes_end_or_the_bans(sim, kind, quiet_s):
    """Found in review: Binance's futures docs promise no Retry-After; without one the client paused a second and
    then met the same limit again, request after request, the way to an IP ban (which stops closes too). A 429 now
    holds to the end of the exchange's minute, a 418 to the end its message names."""
    sim.reset()
    sim.set_faults(outages={"GET /fapi/v1/premiumIndex": kind}, rate_limited_retry_after_s=0)
    client, now = fake_clock_client(sim)
    if kind == "ip_banned":  # its end is on the simulator's clock: the client's exchange time must be that one
        client._client.timestamp_offset = sim.binance_client().futures_time()["serverTime"] - int(now[0] * 1000)
    with pytest.raises(RateLimited) as caught:
        client.mark_price("BTCUSDT")
    assert caught.value.retry_after_s is None and caught.value.banned == (kind == "ip_banned")
    sim.set_faults(outages={})
    sent = count_requests(client)

    now[0] += quiet_s - 1
    with pytest.raises(RateLimited, match="not sent"):
        client.account()
    now[0] += 2
    assert client.mark_price("BTCUSDT").mark_price == D("88000") and len(sent) == 1


def test_an_account_in_hedge_mode_fails_the_self_test_naming_it(client, sim):
    """From a review: in hedge mode every one-way close is refused (-4061) and the snapshot nets the two legs, so a
    fleet started on such an account could never close anything. Said at start, naming the setting to change."""
    assert client.hedge_mode() is False
    sim.binance_client().futures_change_position_mode(dualSidePosition="true")

    with pytest.raises(ExchangeStartupError) as caught:
        client.self_test()

    assert caught.value.step == "position_mode" and not caught.value.retryable
    assert "hedge mode" in str(caught.value) and "one-way" in str(caught.value)
    sim.reset()
    assert client.self_test().symbol_count > 0


def test_the_fleets_client_backs_off_after_a_429_so_the_ip_is_never_banned():
    """The simulator bans (418) a client that goes on sending past the weight limit (here after 2 more 429s); the
    fleet's client sends nothing until the 429's Retry-After is over, so it meets one 429 and no ban."""
    testing = pytest.importorskip("microservices.exchange_sim.testing")
    with testing.running_simulator(weight_limit_per_minute=5, ban_after_429s=2) as small:
        client, _now = fake_clock_client(small)
        sent = count_requests(client)
        errors = []
        for _ in range(20):
            try:
                client.mark_price("BTCUSDT")
            except RateLimited as exc:
                errors.append(exc.message)

        assert len(sent) == 6 and sum("not sent" in e for e in errors) == 14  # one 429, then nothing sent
        raw = small.binance_client()
        with pytest.raises(Exception) as still:
            raw.futures_mark_price(symbol="BTCUSDT")
        assert getattr(still.value, "status_code", None) == 429  # limited, not banned


def test_an_exchange_daemon_on_a_hedge_mode_account_exits_2_in_one_line(sim, exchange_env, redis_url):
    """A refusal that repeats on every start is a setting to fix (exit 2, which the units do not restart), not an
    outage to wait out (exit 1)."""
    sim.binance_client().futures_change_position_mode(dualSidePosition="true")
    env = {**os.environ, **exchange_env, "PYTHONPATH": str(ROOT), "METRICS_PORT": "0", "APPLY_MODE": "dry_run",
           "REDIS_URL": redis_url}

    done = subprocess.run([sys.executable, "-m", "microservices.apply_layer"], env=env, capture_output=True,
                          text=True, timeout=60)

    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "position_mode" in done.stderr and "hedge mode" in done.stderr


def test_the_weight_a_request_reported_counts_for_its_minute_only(sim, monkeypatch):
    """Found in review: reconcile, which rarely asks, kept the used weight of a busy minute and, with nothing to
    refresh it, refused itself every own fetch for the life of the process."""
    client, now = fake_clock_client(sim)
    client.server_time()
    limit = client._settings.weight_limit_1m
    monkeypatch.setattr(client, "_used_weight", limit - 1)  # as a busy minute's header said

    busy_now = client.can_spend(5)
    now[0] += 61
    later = client.can_spend(5)

    assert (busy_now, later) == (False, True)
