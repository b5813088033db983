"""When heat cannot be read, the exit is still published on harvest.calibrated, as proposed
(calibration_reason=heat_unavailable, never downgraded), instead of being retried into the dead letters."""

from __future__ import annotations

import time
from decimal import Decimal as D
from decimal import InvalidOperation

import pytest
import redis
import structlog
from structlog.testing import capture_logs

from microservices.portfolio_heat_gate.account import AccountCache, HeatSource
from microservices.portfolio_heat_gate.gate import HeatGate
from microservices.portfolio_heat_gate.main import log_initial_heat
from microservices.portfolio_heat_gate.settings import HeatGateSettings
from shared import keys, snapshot
from shared.exchange.errors import ExchangeUnavailable
from shared.runtime.consumer import ConsumerConfig, Entry, StreamConsumer
from shared.schema import Action, CalibratedProposal, HarvestProposal
from shared.snapshot import ExchangeSnapshot, PositionState

PROPOSAL = {
    "proposal_id": "c0ffee00b6ae5386c0ffee00b6ae5386", "symbol": "BTCUSDT", "action": "PARTIAL_75",
    "kill_score": "0.1", "r_multiple": "1.7", "reason": "tp_ladder_1.0R", "position_amt": "0.01",
    "entry_price": "88000", "mark_price": "89500", "state": "BTCUSDT:LONG:88000", "ts_ms": "1769000000000",
}


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FlakyAccount:
    """The account endpoint: answers with the simulator's account until told to fail."""

    def __init__(self, real) -> None:
        self.real = real
        self.failing = False

    def account(self):
        if self.failing:
            raise ExchangeUnavailable("down")
        return self.real.account()


def publish_snapshot(r) -> None:
    """A cold portfolio (0.176x of 10,000 equity over two positions): a calibration would downgrade."""
    positions = {s: PositionState(s, D("0.88"), D("1000")) for s in ("BTCUSDT", "ETHUSDT")}
    snapshot.publish(r, ExchangeSnapshot(int(time.time() * 1000), positions, {s: D("1000") for s in positions}))


def run_gate(r, cache: AccountCache, settings: HeatGateSettings) -> None:
    gate = HeatGate(r, HeatSource(r, cache, settings), settings)
    config = ConsumerConfig(stream=keys.Stream.HARVEST_PROPOSAL, group=keys.Group.PORTFOLIO_HEAT_GATE, consumer="t",
                            block_ms=50, claim_idle_ms=60_000, max_deliveries=settings.stream_max_deliveries)
    StreamConsumer(r, config, HarvestProposal.from_fields, gate.handle).run(burst=True)


def calibrated(r) -> list[CalibratedProposal]:
    return [CalibratedProposal.from_fields(fields) for _, fields in r.xrange(keys.Stream.HARVEST_CALIBRATED)]


def account_down_for(access, seconds: float | None) -> AccountCache:
    """An account cache whose endpoint has failed for `seconds` (None: it never answered)."""
    exchange, clock = FlakyAccount(access.client), Monotonic()
    cache = AccountCache(exchange, max_age_s=2.0, stale_s=30.0, monotonic=clock)
    if seconds is not None:
        cache.equity()
        clock.now += seconds
    exchange.failing = True
    return cache


@pytest.mark.parametrize("action", ["PARTIAL_25", "PARTIAL_50", "PARTIAL_75", "FULL_CLOSE_PROPOSED"])
@pytest.mark.parametrize("down_s", [None, 31.0, 600.0])
def test_an_exit_is_published_uncalibrated_when_the_account_is_unavailable(r, access, action, down_s) -> None:
    publish_snapshot(r)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {**PROPOSAL, "action": action})

    with capture_logs() as logs:
        run_gate(r, account_down_for(access, down_s), HeatGateSettings(p26_mode="enforce"))

    [out] = calibrated(r)
    assert (out.proposal_id, out.action, out.original_action) == (PROPOSAL["proposal_id"], Action(action), Action(action))
    assert (out.downgraded, out.calibration_reason) == (False, "heat_unavailable")
    assert r.xpending(keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE)["pending"] == 0
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0
    [warning] = [line for line in logs if line["event"] == "HEAT_UNAVAILABLE"]
    assert (warning["proposal_id"], warning["published"]) == (PROPOSAL["proposal_id"], "uncalibrated")


def test_a_stale_account_within_the_stand_in_window_still_calibrates(r, access) -> None:
    publish_snapshot(r)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    run_gate(r, account_down_for(access, 29.0), HeatGateSettings(p26_mode="enforce"))

    [out] = calibrated(r)
    assert (out.action, out.calibration_reason) == (Action.PARTIAL_50, "cold_downgrade")


def test_without_a_snapshot_the_last_delivery_publishes_uncalibrated_instead_of_dead_lettering(r, access) -> None:
    settings = HeatGateSettings(p26_mode="enforce", stream_max_deliveries=3)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)
    cache = account_down_for(access, 0.0)

    seen = []
    for _ in range(settings.stream_max_deliveries):  # each run re-delivers the consumer's own pending entry
        run_gate(r, cache, settings)
        seen.append(len(calibrated(r)))

    assert seen == [0, 0, 1]
    [out] = calibrated(r)
    assert (out.action, out.calibration_reason) == (Action.PARTIAL_75, "heat_unavailable")
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0


class BrokenHeat:
    """A heat source whose reading fails in a way nobody foresaw."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def reading(self):
        raise self.error


def run_gate_on(r, heat, settings: HeatGateSettings) -> None:
    gate = HeatGate(r, heat, settings)
    config = ConsumerConfig(stream=keys.Stream.HARVEST_PROPOSAL, group=keys.Group.PORTFOLIO_HEAT_GATE, consumer="t",
                            block_ms=50, claim_idle_ms=60_000, max_deliveries=settings.stream_max_deliveries)
    StreamConsumer(r, config, HarvestProposal.from_fields, gate.handle).run(burst=True)


@pytest.mark.parametrize("stored", ["12,500", "NaN", "Infinity", "garbage"])
def test_a_garbled_equity_high_water_mark_publishes_the_exit_uncalibrated_at_once(r, access, stored) -> None:
    """Seen by review: a garbled quantum:p26:equity_hwm raised InvalidOperation, the proposal was retried and
    dead-lettered, and in enforce mode the exit never reached the apply layer."""
    publish_snapshot(r)
    r.set(keys.P26_EQUITY_HWM, stored)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {**PROPOSAL, "action": "FULL_CLOSE_PROPOSED"})
    settings = HeatGateSettings(p26_mode="enforce")

    with capture_logs() as logs:
        run_gate(r, AccountCache(access.client, 2.0, 30.0), settings)

    [out] = calibrated(r)
    assert (out.action, out.downgraded, out.calibration_reason) == (Action.FULL_CLOSE_PROPOSED, False,
                                                                    "heat_unavailable")
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0
    assert r.xpending(keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE)["pending"] == 0
    [warning] = [line for line in logs if line["event"] == "HEAT_UNAVAILABLE"]
    assert warning["error"] == "HighWaterUnreadable" and keys.P26_EQUITY_HWM in warning["detail"]


@pytest.mark.parametrize("error", [InvalidOperation(), ZeroDivisionError("x"), KeyError("equity"),
                                   redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")])
def test_any_unexpected_heat_error_publishes_uncalibrated_naming_its_class(r, error) -> None:
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    with capture_logs() as logs:
        run_gate_on(r, BrokenHeat(error), HeatGateSettings(p26_mode="enforce"))

    [out] = calibrated(r)
    assert (out.action, out.calibration_reason) == (Action.PARTIAL_75, "heat_unavailable")
    assert r.xlen(keys.Stream.DEAD_LETTER) == 0
    [warning] = [line for line in logs if line["event"] == "HEAT_UNAVAILABLE"]
    assert warning["error"] == error.__class__.__name__


@pytest.mark.parametrize("error", [redis.ConnectionError("gone"), redis.TimeoutError("slow")])
def test_a_lost_redis_connection_while_reading_heat_is_left_to_the_runtime(r, error) -> None:
    gate = HeatGate(r, BrokenHeat(error), HeatGateSettings(p26_mode="enforce"))
    proposal = HarvestProposal.from_fields(PROPOSAL)

    with pytest.raises(type(error)):
        gate.handle(proposal, Entry(keys.Stream.HARVEST_PROPOSAL, "1-0", PROPOSAL, 1))

    assert calibrated(r) == []


def test_a_garbled_high_water_mark_does_not_stop_the_gate_at_start(r, access) -> None:
    publish_snapshot(r)
    r.set(keys.P26_EQUITY_HWM, "12,500")
    heat = HeatSource(r, AccountCache(access.client, 2.0, 30.0), HeatGateSettings())

    with capture_logs() as logs:
        log_initial_heat(structlog.get_logger(), heat)

    [warning] = [line for line in logs if line["event"] == "initial_heat_unavailable"]
    assert warning["error"] == "HighWaterUnreadable"
