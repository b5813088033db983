"""`quantum status`, `tail` and `flatten` read the fleet's keys as the daemons do, and a garbled key shows as
such in its own line instead of ending the command (found in a review of the CLI)."""

from __future__ import annotations

import argparse
import time

import pytest

from shared import keys
from shared.cli import flatten, status, tail
from shared.cli.common import CommandError
from shared.cli.up import format_result


def state_of(r) -> str:
    return "\n".join(status.trading_state(r))


@pytest.mark.parametrize(("write", "shown"), [
    (lambda r: r.set(keys.KILL, "true"), "kill switch      ON (halted)"),
    (lambda r: r.set(keys.KILL, "maybe"), "ON (halted) (unreadable value 'maybe': counts as on)"),
    (lambda r: r.hset(keys.KILL, "on", "1"), "ON (halted) (unreadable value '(not a string)': counts as on)"),
    (lambda r: r.set(keys.KILL, "0"), "kill switch      off"),
    (lambda r: r.set(keys.GOVERNOR_EXECUTION, "disabled"), "execution        DISABLED (reduce-only)"),
    (lambda r: r.set(keys.GOVERNOR_EXECUTION, "paused"), "DISABLED (reduce-only) (unreadable value 'paused'"),
    (lambda r: r.set(keys.FORCE_DRY_RUN, "yes"), "(dry run FORCED by quantum:apply:dry_run='yes')"),
    (lambda r: r.hset(keys.FORCE_DRY_RUN, "a", "b"), "dry run FORCED"),
])
def test_status_shows_the_switches_as_the_fleet_reads_them(r, write, shown) -> None:
    """Before: `quantum:kill=true` halted the fleet while status said 'kill switch off'."""
    write(r)
    assert shown in state_of(r)


@pytest.mark.parametrize("off", ["0", "false", "off", ""])
def test_status_does_not_call_an_explicit_off_forced_dry_run(r, off) -> None:
    """Before: `quantum:apply:dry_run=0` showed 'dry run FORCED' while the executor sent real orders."""
    r.set(keys.FORCE_DRY_RUN, off)
    assert "FORCED" not in state_of(r)


def test_status_shows_garbled_keys_in_their_own_line(r) -> None:
    r.set(keys.EXCHANGE_POSITIONS, '{"fetched_at_ms": 1, "positions": {"BTCUSDT": ["0.002", "88000", 1]}, '
                                   '"marks": {"BTCUSDT": "88100"}}')
    r.hset(keys.position_ledger("BTCUSDT"), "position_amt", "abc")
    r.set(keys.heartbeat("governor@h#0"), "x")
    r.hset(keys.heartbeat("governor@h#1"), mapping={"daemon": "governor", "ts_ms": "soon", "pid": "7"})
    r.xadd(keys.Stream.APPLY_RESULT, {"ts_ms": "abc", "p32_permit": "nope", "plan_id": "p"})

    shown = "\n".join(line for section in (status.daemons(r), status.positions(r), status.results(r, 8))
                      for line in section)

    assert "BTCUSDT       0.002" in shown and "unreadable (" in shown
    assert "governor                ?         7        unreadable beat" in shown
    assert "??:??:?? REFUSED" in shown

    r.set(keys.EXCHANGE_POSITIONS, "{bad")
    assert "exchange snapshot unreadable (JSONDecodeError)" in status.positions(r)[0]
    r.delete(keys.EXCHANGE_POSITIONS)
    r.hset(keys.EXCHANGE_POSITIONS, "a", "b")
    assert "unreadable" in status.positions(r)[0]


@pytest.mark.parametrize("raw", ["nope", "1", "[]", '{"allow": "false", "reason": "x"}'])
def test_tail_shows_a_result_with_unreadable_permits(raw) -> None:
    line = tail.describe(keys.Stream.APPLY_RESULT, {"ts_ms": "1", "p32_permit": raw, "plan_id": "p"})
    assert "P32 unreadable" in line or "P32 DENY" in line  # a string "false" is not an allow


def test_tail_starts_each_stream_where_it_stands_once(r) -> None:
    """Before: a stream that had delivered nothing kept the '$' cursor, taken again at each XREAD, so an entry
    added between two reads was never shown."""
    first = r.xadd(keys.Stream.APPLY_PLAN, {"plan_id": "old"})
    assert tail._last_id(r, keys.Stream.APPLY_PLAN) == first
    assert tail._last_id(r, keys.Stream.DEAD_LETTER) == "0-0"  # not there yet: all it will hold is new
    assert "??:??:??" not in format_result({"ts_ms": "1700000000000"})


@pytest.mark.parametrize("kill", [lambda r: r.set(keys.KILL, "true"), lambda r: r.hset(keys.KILL, "a", "b")])
def test_flatten_refuses_when_the_fleet_reads_the_kill_switch_as_on(r, redis_url, kill) -> None:
    """Before: `true` sent every close to be refused, and a hash there ended flatten with a traceback."""
    kill(r)
    args = argparse.Namespace(redis_url=redis_url, all=True, symbol=None, timeout=1.0)

    with pytest.raises(CommandError, match="halted"):
        flatten._flatten(args)
    assert r.xlen(keys.Stream.APPLY_PLAN) == 0


def test_status_names_streams_and_groups_not_there_yet_and_a_capped_lag(r) -> None:
    r.xgroup_create(keys.Stream.APPLY_PLAN, keys.Group.GOVERNOR, id="0", mkstream=True)
    r.xadd(keys.Stream.APPLY_PLAN, {"plan_id": "p"})

    shown = {line.split("  ")[1].strip(): line for line in status.streams(r)[2:]}

    assert shown["trade.intent / intent-bridge"].endswith("no stream yet")
    assert "no group yet" in shown["apply.plan / intent-executor"]
    assert shown["apply.plan / governor"].split()[-2:] == ["1", "0"]


def snapshot_json(fetched_at_ms: int, **amounts: str) -> str:
    import json
    return json.dumps({"fetched_at_ms": fetched_at_ms, "marks": {},
                       "positions": {symbol: [amount, "100", 1] for symbol, amount in amounts.items()}})


def test_flatten_counts_a_position_closed_only_when_the_exchange_shows_it_flat(r, capsys) -> None:
    """Found in a review: 'N/N positions closed' came from the results, so a position that grew after the snapshot
    the closes were sized on (or one opened meanwhile, with --all) was reported closed while still open."""
    r.set(keys.EXCHANGE_POSITIONS, snapshot_json(2_000, ETHUSDT="0.01", TRXUSDT="5"))

    code = flatten._confirm(r, ["BTCUSDT", "ETHUSDT"], True, after_ms=1_000, wait_s=0.5)

    out = capsys.readouterr().out
    assert code == 1 and "1/2 positions closed, 2 still open" in out
    assert "still open: ETHUSDT 0.01" in out and "still open: TRXUSDT 5" in out

    r.set(keys.EXCHANGE_POSITIONS, snapshot_json(2_000))
    assert flatten._confirm(r, ["BTCUSDT", "ETHUSDT"], True, after_ms=1_000, wait_s=0.5) == 0
    assert "2/2 positions closed\n" in capsys.readouterr().out


def test_flatten_does_not_confirm_on_a_snapshot_older_than_its_results(r, capsys) -> None:
    r.set(keys.EXCHANGE_POSITIONS, snapshot_json(500))

    assert flatten._confirm(r, ["BTCUSDT"], False, after_ms=1_000, wait_s=0.3) == 1
    assert "could not confirm" in capsys.readouterr().out


@pytest.mark.parametrize("after, rounds", [
    ("SELL:0.100", 2),    # the close was cut and the same long is left: the next round closes it
    ("BUY:0.100", 1),     # flipped (someone else's order): reported, not chased
    ("SELL:0.300", 1),    # grew: not the position being closed
])
def test_flatten_goes_on_only_for_a_close_cut_short_of_the_same_position(r, redis_url, monkeypatch, after, rounds) -> None:
    """From a review: the rounds went on whenever a round executed and the symbol was still open, so a position
    someone opened, flipped or grew meanwhile was closed round after round. Only an order cut short of its plan
    (the executor's maxQty cut) leaves a rest that is the same position, smaller."""
    from decimal import Decimal

    from shared import snapshot as snap

    now = int(time.time() * 1000)
    snap.publish(r, snap.ExchangeSnapshot(now, {"BTCUSDT": snap.PositionState("BTCUSDT", Decimal("0.250"), Decimal(1))},
                                          {}))
    side, amount = after.split(":")
    later = snap.ExchangeSnapshot(now + 5_000, {"BTCUSDT": snap.PositionState(
        "BTCUSDT", Decimal(amount) * (1 if side == "SELL" else -1), Decimal(1))}, {})
    sent: list = []

    def send(_client, plans, _timeout):
        sent.append(plans)
        return {p.plan_id: {"executed": "true", "qty": "0.150"} for p in plans}

    monkeypatch.setattr(flatten, "_send", send)
    monkeypatch.setattr(flatten, "_snapshot_after", lambda *_a: later)
    monkeypatch.setattr(flatten, "_confirm", lambda *_a, **_k: 0)

    flatten._flatten(argparse.Namespace(redis_url=redis_url, all=False, symbol="BTCUSDT", timeout=1.0))

    assert len(sent) == rounds
    if rounds == 2:
        [again] = sent[1]
        assert (again.side.value, again.qty) == ("SELL", Decimal("0.100"))
