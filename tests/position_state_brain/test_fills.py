"""P3.3's exchange view between snapshots: the snapshot plus the fills the exchange confirmed since."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from microservices.position_state_brain.fills import ConfirmedFills, fill_from, reflected
from shared.snapshot import ExchangeSnapshot, PositionState

SNAPSHOT_MS = 1_000_000
SNAPSHOT = ExchangeSnapshot(SNAPSHOT_MS, {"BTCUSDT": PositionState("BTCUSDT", D("0.002"), D("88000"), SNAPSHOT_MS - 50)}, {})


def result(side: str, qty: str, exchange_ts: int, symbol: str = "BTCUSDT", executed: str = "true",
           reduce_only: str = "false") -> dict[str, str]:
    return {"executed": executed, "symbol": symbol, "side": side, "filled_qty": qty, "exchange_ts_ms": str(exchange_ts),
            "reduceOnly": reduce_only}


@pytest.mark.parametrize(
    ("written_ms", "fields", "is_reflected"),
    [
        (SNAPSHOT_MS + 5, result("BUY", "0.001", SNAPSHOT_MS - 50), True),  # the position's last update is this fill
        (SNAPSHOT_MS + 5, result("BUY", "0.001", SNAPSHOT_MS - 49), False),  # newer than the position: not in it
        (SNAPSHOT_MS - 5, result("BUY", "5", 0, symbol="ETHUSDT"), True),  # flat symbol, written before the snapshot
        (SNAPSHOT_MS + 5, result("BUY", "5", 0, symbol="ETHUSDT"), False),  # flat symbol, written after
    ],
)
def test_a_fill_counts_unless_the_snapshot_reflects_it(written_ms, fields, is_reflected) -> None:
    fill = fill_from(f"{written_ms}-0", fields)

    assert reflected(fill, SNAPSHOT) is is_reflected


def test_a_fill_written_well_before_the_snapshot_is_in_it_whatever_the_update_times_say() -> None:
    """Were an order's updateTime ever later than its position's for the same fill, the fill would count on top
    of every later snapshot until the position changed again: double the position, for good."""
    later_than_the_position = result("BUY", "0.001", SNAPSHOT_MS - 49)

    assert reflected(fill_from(f"{SNAPSHOT_MS - 1_001}-0", later_than_the_position), SNAPSHOT) is True
    assert reflected(fill_from(f"{SNAPSHOT_MS - 999}-0", later_than_the_position), SNAPSHOT) is False


def test_results_that_did_not_execute_or_do_not_parse_are_no_fills() -> None:
    assert fill_from("1-0", result("BUY", "1", 5, executed="false")) is None
    assert fill_from("1-0", {"executed": "true", "filled_qty": "lots"}) is None


def test_the_view_moves_only_the_plans_symbol_and_a_flat_result_drops_the_position() -> None:
    fills = ConfirmedFills()
    fills.absorb([(f"{SNAPSHOT_MS + 1}-0", result("SELL", "0.002", SNAPSHOT_MS + 1)),
                  (f"{SNAPSHOT_MS + 2}-0", result("BUY", "5", SNAPSHOT_MS + 2, symbol="ETHUSDT"))], SNAPSHOT)

    btc = fills.view(SNAPSHOT, "BTCUSDT")
    eth = fills.view(SNAPSHOT, "ETHUSDT")

    assert "BTCUSDT" not in btc.positions and btc.amount("ETHUSDT") == 0
    assert eth.amount("ETHUSDT") == D("5") and eth.amount("BTCUSDT") == D("0.002")
    assert fills.start_id(SNAPSHOT) == f"({SNAPSHOT_MS + 2}-0"


def test_a_newer_snapshot_retires_the_fills_it_reflects() -> None:
    fills = ConfirmedFills()
    fills.absorb([(f"{SNAPSHOT_MS + 1}-0", result("BUY", "0.001", SNAPSHOT_MS + 1))], SNAPSHOT)
    newer = ExchangeSnapshot(SNAPSHOT_MS + 500, {"BTCUSDT": PositionState("BTCUSDT", D("0.003"), D("88000"), SNAPSHOT_MS + 1)}, {})

    fills.absorb([], newer)

    assert fills.view(newer, "BTCUSDT").amount("BTCUSDT") == D("0.003")


def test_a_close_the_snapshot_already_shows_flat_is_not_counted_again() -> None:
    """The close's result was written while the snapshot was being fetched (after its fetched_at) and the
    exchange had already flattened the position: a flat symbol has no update time to tell, so the fill is kept.
    A reduce-only fill never takes a position past flat, so it changes nothing rather than show a short."""
    flat = ExchangeSnapshot(SNAPSHOT_MS, {}, {})
    fills = ConfirmedFills()
    fills.absorb([(f"{SNAPSHOT_MS + 3}-0", result("SELL", "0.002", SNAPSHOT_MS + 1, reduce_only="true"))], flat)

    assert "BTCUSDT" not in fills.view(flat, "BTCUSDT").positions

    fills.absorb([(f"{SNAPSHOT_MS + 9}-0", result("BUY", "0.001", SNAPSHOT_MS + 8))], flat)  # a new open after it
    assert fills.view(flat, "BTCUSDT").amount("BTCUSDT") == D("0.001")


@pytest.mark.parametrize(("held", "side", "qty", "after"), [
    ("0.002", "SELL", "0.001", "0.001"),  # a partial close
    ("0.002", "SELL", "0.003", "0"),  # more than the view holds: stops at flat
    ("-0.002", "BUY", "0.002", "0"),  # a short's close
    ("0.002", "BUY", "0.001", "0.002"),  # reduce-only the same way as the position: the view is behind, unchanged
])
def test_a_reduce_only_fill_moves_the_position_toward_flat_and_never_past(held, side, qty, after) -> None:
    snapshot = ExchangeSnapshot(SNAPSHOT_MS, {"BTCUSDT": PositionState("BTCUSDT", D(held), D("88000"), SNAPSHOT_MS - 50)}, {})
    fills = ConfirmedFills()
    fills.absorb([(f"{SNAPSHOT_MS + 1}-0", result(side, qty, SNAPSHOT_MS + 1, reduce_only="true"))], snapshot)

    assert fills.view(snapshot, "BTCUSDT").amount("BTCUSDT") == D(after)


def test_the_view_kept_up_as_fills_arrive_equals_folding_them_all_again() -> None:
    """view() reads the amount folded as each fill was kept (a plan walks no list); for another snapshot it folds."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        held = D(rng.choice(["0", "0.003", "-0.002"]))
        snapshot = ExchangeSnapshot(SNAPSHOT_MS, {"BTCUSDT": PositionState("BTCUSDT", held, D("88000"), 1)} if held else {}, {})
        fills = ConfirmedFills()
        entries = [(f"{SNAPSHOT_MS + i}-0", result(rng.choice(["BUY", "SELL"]), rng.choice(["0.001", "0.002"]), SNAPSHOT_MS + i,
                                                   reduce_only=rng.choice(["true", "false"]))) for i in range(1, 8)]
        for entry in entries:
            fills.absorb([entry], snapshot)
        same_content = ExchangeSnapshot(snapshot.fetched_at_ms, dict(snapshot.positions), {})

        assert fills.view(snapshot, "BTCUSDT").amount("BTCUSDT") == fills.view(same_content, "BTCUSDT").amount("BTCUSDT")


@pytest.mark.parametrize("qty", ["NaN", "sNaN", "Infinity", "-0.001", "1e999999999", "lots"])
def test_a_result_whose_filled_qty_is_not_a_quantity_is_no_fill(qty) -> None:
    """Found in review: Decimal() took NaN and Infinity from a result XADDed by hand, and every comparison on the
    symbol then raised until the next snapshot."""
    assert fill_from(f"{SNAPSHOT_MS + 5}-0", result("BUY", qty, SNAPSHOT_MS)) is None


def test_a_hand_written_result_s_side_is_read_as_the_schema_reads_it() -> None:
    """Found in review: any side but exactly BUY was a sell, so a hand-written "buy" counted the wrong way."""
    assert fill_from(f"{SNAPSHOT_MS + 5}-0", result("buy", "0.001", SNAPSHOT_MS)).signed_qty == D("0.001")
    assert fill_from(f"{SNAPSHOT_MS + 5}-0", result("sideways", "0.001", SNAPSHOT_MS)) is None
    assert fill_from(f"{SNAPSHOT_MS + 5}-0", result("SELL", "0.001", SNAPSHOT_MS, reduce_only="True")).reduce_only
