"""P2.6 on a real Redis and the exchange simulator: one calibrated entry per proposal, SHADOW-COMPARE logged."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from decimal import Decimal as D

import pytest
from prometheus_client import REGISTRY, generate_latest
from structlog.testing import capture_logs

from microservices.portfolio_heat_gate.account import AccountCache, HeatSource, HeatUnavailable
from microservices.portfolio_heat_gate.gate import HeatGate, expose_settings
from microservices.portfolio_heat_gate.settings import HeatGateSettings, P26Mode
from shared import keys, snapshot
from shared.exchange.errors import ExchangeUnavailable
from shared.runtime.consumer import ConsumerConfig, StreamConsumer
from shared.schema import Action, CalibratedProposal, HarvestProposal, HeatBucket
from shared.snapshot import ExchangeSnapshot, PositionState

SEED_LINE = re.compile(
    r"^SHADOW-COMPARE: [0-9a-f]{8} \| proposal=[A-Z_0-9]+ vs calibrated=[A-Z_0-9]+ \| "
    r"heat=\d\.\d{4} (COLD|WARM|HOT) \| downgraded=(True|False) reason=[a-z_]+$"
)
PROPOSAL = {
    "proposal_id": "b6ae5386c0ffee00b6ae5386c0ffee00", "symbol": "BTCUSDT", "action": "PARTIAL_75",
    "kill_score": "0.539", "r_multiple": "1.7", "reason": "tp_ladder_1.0R", "position_amt": "0.01",
    "entry_price": "88000", "mark_price": "89500", "state": "BTCUSDT:LONG:88000", "ts_ms": "1769000000000",
}


def publish_snapshot(r, **notional_by_symbol: str) -> None:
    """Positions of the given notional at a mark of 1000, fetched now."""
    positions = {s: PositionState(s, D(n) / 1000, D("1000")) for s, n in notional_by_symbol.items()}
    snapshot.publish(r, ExchangeSnapshot(int(time.time() * 1000), positions, {s: D("1000") for s in positions}))


def run_gate(r, access, **settings) -> HeatGate:
    config = HeatGateSettings(**settings)
    heat = HeatSource(r, AccountCache(access.client, 2.0, 30.0), config)
    gate = HeatGate(r, heat, config)
    consumer_config = ConsumerConfig(stream=keys.Stream.HARVEST_PROPOSAL, group=keys.Group.PORTFOLIO_HEAT_GATE,
                                     consumer="t", block_ms=50, claim_idle_ms=60_000)
    StreamConsumer(r, consumer_config, HarvestProposal.from_fields, gate.handle).run(burst=True)
    return gate


def calibrated(r) -> list[CalibratedProposal]:
    return [CalibratedProposal.from_fields(fields) for _, fields in r.xrange(keys.Stream.HARVEST_CALIBRATED)]


def compares(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["event"] == "SHADOW-COMPARE"]


def test_a_proposal_in_gives_one_calibrated_entry_out_and_a_seed_format_compare(r, access) -> None:
    publish_snapshot(r, BTCUSDT="880", ETHUSDT="880")  # 0.176x of 10,000 equity, two equal positions: COLD
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    with capture_logs() as logs:
        run_gate(r, access)

    [out] = calibrated(r)
    assert (out.proposal_id, out.original_action, out.action) == (PROPOSAL["proposal_id"], Action.PARTIAL_75, Action.PARTIAL_50)
    assert (out.heat, out.heat_bucket, out.downgraded, out.calibration_reason) == (D("0.1176"), HeatBucket.COLD, True,
                                                                                    "cold_downgrade")
    assert (out.kill_score, out.reason, out.position_amt) == (D("0.539"), "tp_ladder_1.0R", D("0.01"))
    [line] = compares(logs)
    assert SEED_LINE.match(line["line"]), line["line"]
    assert line["line"] == ("SHADOW-COMPARE: b6ae5386 | proposal=PARTIAL_75 vs calibrated=PARTIAL_50 | "
                            "heat=0.1176 COLD | downgraded=True reason=cold_downgrade")
    assert (line["mode"], line["heat_bucket"], line["downgraded"]) == ("shadow", "COLD", True)


def test_replaying_the_same_proposal_still_gives_one_calibrated_entry(r, access) -> None:
    publish_snapshot(r, BTCUSDT="880")
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)
    run_gate(r, access)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {"payload": '{"proposal_id": "%s"}' % PROPOSAL["proposal_id"], **{
        k: v for k, v in PROPOSAL.items() if k != "proposal_id"}})

    with capture_logs() as logs:
        run_gate(r, access)

    assert len(calibrated(r)) == 1
    assert compares(logs) == []
    assert r.xpending(keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE)["pending"] == 0


def test_a_stop_loss_in_a_cold_portfolio_is_published_unchanged(r, access) -> None:
    publish_snapshot(r, BTCUSDT="880", ETHUSDT="880")
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {**PROPOSAL, "action": "FULL_CLOSE_PROPOSED", "reason": "stop_loss_hit",
                                          "kill_score": "0.8"})

    run_gate(r, access, p26_mode="enforce")

    [out] = calibrated(r)
    assert (out.action, out.downgraded, out.calibration_reason) == (Action.FULL_CLOSE_PROPOSED, False, "protected_stop_loss")


def test_drawdown_from_the_stored_high_water_mark_makes_the_portfolio_hot(r, access) -> None:
    r.set(keys.P26_EQUITY_HWM, "12500")  # simulator equity 10,000: 20% down, double the 10% budget
    publish_snapshot(r, BTCUSDT="30000")
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    run_gate(r, access)

    [out] = calibrated(r)
    assert (out.heat, out.heat_bucket, out.action) == (D("0.8"), HeatBucket.HOT, Action.FULL_CLOSE_PROPOSED)
    assert r.get(keys.P26_EQUITY_HWM) == "12500"


def test_without_a_snapshot_nothing_is_published_and_the_proposal_stays_pending(r, access) -> None:
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    run_gate(r, access)

    assert calibrated(r) == []
    assert r.xpending(keys.Stream.HARVEST_PROPOSAL, keys.Group.PORTFOLIO_HEAT_GATE)["pending"] == 1


def test_an_open_or_malformed_proposal_is_dead_lettered(r, access) -> None:
    publish_snapshot(r, BTCUSDT="880")
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {**PROPOSAL, "action": "OPEN"})
    r.xadd(keys.Stream.HARVEST_PROPOSAL, {**PROPOSAL, "kill_score": "1.5"})

    run_gate(r, access)

    assert calibrated(r) == []
    assert [f["reason"] for _, f in r.xrange(keys.Stream.DEAD_LETTER)] == ["not_a_close_action", "validation_error"]


class FakeExchange:
    def __init__(self, account):
        self.account_value = account
        self.calls = 0
        self.failing = False

    def account(self):
        self.calls += 1
        if self.failing:
            raise ExchangeUnavailable("down")
        return self.account_value


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_account_is_cached_and_a_failed_read_falls_back_only_while_recent(access) -> None:
    exchange, clock = FakeExchange(access.client.account()), Monotonic()
    cache = AccountCache(exchange, max_age_s=2.0, stale_s=30.0, monotonic=clock)

    equities = [cache.equity() for _ in range(50)]
    clock.now += 2.0
    cache.equity()
    exchange.failing = True
    clock.now += 29.0
    stand_in = cache.equity()
    clock.now += 2.0

    assert equities == [D("10000")] * 50 and stand_in == D("10000")
    with pytest.raises(HeatUnavailable):
        cache.equity()
    assert exchange.calls == 4


def calibrations(original: str, calibrated_action: str) -> float:
    labels = {"original": original, "calibrated": calibrated_action}
    return REGISTRY.get_sample_value("quantum_p26_calibrations_total", labels) or 0.0


def test_heat_mode_and_calibrations_are_exposed_and_pass_promtool(r, access) -> None:
    before = calibrations("PARTIAL_75", "PARTIAL_50")
    publish_snapshot(r, BTCUSDT="880", ETHUSDT="880")
    r.xadd(keys.Stream.HARVEST_PROPOSAL, PROPOSAL)

    expose_settings(HeatGateSettings(p26_mode=P26Mode.ENFORCE, p26_warm_max="0.7"))
    run_gate(r, access)

    assert calibrations("PARTIAL_75", "PARTIAL_50") == before + 1
    assert REGISTRY.get_sample_value("quantum_p26_heat") == pytest.approx(0.1176)
    assert REGISTRY.get_sample_value("quantum_p26_mode", {"mode": "enforce"}) == 1
    assert REGISTRY.get_sample_value("quantum_p26_mode", {"mode": "shadow"}) == 0
    assert REGISTRY.get_sample_value("quantum_p26_warm_max") == pytest.approx(0.7)  # QuantumPortfolioHeatHot's line
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    checked = subprocess.run([promtool, "check", "metrics"], input=generate_latest(REGISTRY).decode(),
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
