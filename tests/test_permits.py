"""The permit codec: round trip, TTL, single-use consume under contention, waiting without polling."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import redis

from shared import keys, permits
from shared.permits import PermitKind
from shared.redis_conn import connect
from shared.schema import P33Permit, Reason
from shared.schema.permit import PERMIT_JSON_MAX


def p33(plan_id: str = "plan-1", allow: bool = True) -> P33Permit:
    return P33Permit(
        plan_id=plan_id, allow=allow, symbol="BTCUSDT", reason=Reason.SANITY_CHECKS_PASSED,
        created_at=1769442764.52, safe_qty=Decimal("0.002"), exchange_position_amt=Decimal("0.002"),
        ledger_amt=Decimal("0.002"), context={"tolerance": "0.001"},
    )


def test_a_permit_round_trips_with_its_ttl(r: redis.Redis) -> None:
    permits.issue(r, p33(), ttl_seconds=60)

    stored = permits.peek(r, PermitKind.P33, "plan-1")

    assert stored == p33()
    assert 0 < r.ttl(keys.permit_p33("plan-1")) <= 60


def test_the_seed_permit_json_decodes() -> None:
    seed = ('{"allow": true, "symbol": "BTCUSDT", "safe_qty": 0, "exchange_position_amt": 0, "ledger_amt": 0, '
            '"created_at": 1769442764.5218134, "reason": "sanity_checks_passed", "plan_id": "test_open_005"}')

    permit = permits.decode(PermitKind.P33, seed)

    assert permit.allow is True and permit.safe_qty == 0


def test_a_decoded_permit_carries_the_text_it_was_read_from() -> None:
    """A result carries the permit as the gate wrote it, byte for byte, not a second serialisation; one built in
    code carries its own JSON. Neither text is a field: equality and dumps are the permit's alone."""
    written = p33().to_json()
    by_hand = '{"plan_id": "plan-1", "allow": true, "symbol": "BTCUSDT", "reason": "sanity_checks_passed", ' \
              '"created_at": 1769442764.52, "safe_qty": "0.002", "exchange_position_amt": "0.002", ' \
              '"ledger_amt": "0.002", "context": {"tolerance": "0.001"}, "note": "ops"}'

    for raw in (written, by_hand):
        decoded = permits.decode(PermitKind.P33, raw)
        assert decoded.wire_json == raw and decoded == p33() and "wire_json" not in decoded.model_dump()
    assert p33().wire_json == written


def test_a_permit_text_longer_than_a_result_carries_is_serialised_again() -> None:
    padded = p33().to_json()[:-1] + " " * PERMIT_JSON_MAX + "}"

    decoded = permits.decode(PermitKind.P33, padded)

    assert decoded.wire_json == p33().to_json()


@pytest.mark.parametrize("raw", ["not json", "[]", '{"allow": "maybe", "symbol": "BTCUSDT"}'])
def test_an_invalid_permit_is_a_permit_error(raw: str) -> None:
    with pytest.raises(permits.PermitError):
        permits.decode(PermitKind.P32, raw)


def test_a_permit_is_consumed_once(r: redis.Redis) -> None:
    permits.issue(r, p33(), ttl_seconds=60)

    first = permits.consume(r, PermitKind.P33, "plan-1")
    second = permits.consume(r, PermitKind.P33, "plan-1")

    assert first == p33() and second is None
    assert permits.peek(r, PermitKind.P33, "plan-1") == p33()  # still readable by operators


def test_two_concurrent_consumers_exactly_one_wins(redis_url: str, r: redis.Redis) -> None:
    rounds = 200
    for i in range(rounds):
        permits.issue(r, p33(f"race-{i}"), ttl_seconds=60)
    wins = {"a": 0, "b": 0}
    barrier = threading.Barrier(2)

    def take(name: str) -> None:
        client = connect(redis_url)
        barrier.wait()
        for i in range(rounds):
            if permits.consume(client, PermitKind.P33, f"race-{i}") is not None:
                wins[name] += 1

    threads = [threading.Thread(target=take, args=(name,)) for name in wins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert wins["a"] + wins["b"] == rounds


def test_many_permits_go_in_one_round_trip_and_survive_a_script_flush(r: redis.Redis) -> None:
    r.script_flush()
    permits.issue_many(r, [p33(f"many-{i}") for i in range(5)], ttl_seconds=60)

    assert all(permits.peek(r, PermitKind.P33, f"many-{i}") for i in range(5))
    assert [r.lrange(keys.permit_ready(f"many-{i}"), 0, -1) for i in range(5)] == [["p33"]] * 5
