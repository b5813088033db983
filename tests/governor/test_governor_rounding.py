"""The per-trade cap prices what the executor will send: the quantity rounded down to the step."""

from __future__ import annotations

from decimal import Decimal

import pytest
import redis
from governor_support import Clock, plan, snapshot

from microservices.governor.governor import Governor
from microservices.governor.settings import GovernorSettings, Limits
from shared import permits, snapshot as exchange_snapshot
from shared.exchange.filter_cache import FilterCache
from shared.permits import PermitKind


def governor(r: redis.Redis, filters: FilterCache | None) -> Governor:
    exchange_snapshot.publish(r, snapshot(marks={"BTCUSDT": "88000"}, fetched_at_ms=int(Clock()() * 1000)))
    return Governor(r, Limits.from_settings(GovernorSettings()), clock=Clock(), filters=filters)


@pytest.mark.parametrize(("with_rules", "allowed", "notional"), [(True, True, "176"), (False, False, "202.4")])
def test_0_0023_btc_is_priced_as_the_0_002_that_will_be_sent(r, access, with_rules, allowed, notional) -> None:
    filters = FilterCache(None, redis=r) if with_rules else None
    if filters is not None:
        assert filters.load()  # the shared copy the exchange-facing daemons published

    governor(r, filters).handle(plan("step", qty="0.0023"))

    permit = permits.peek(r, PermitKind.P32, "step")
    assert permit.allow is allowed
    assert Decimal(permit.context["computed_notional"]) == Decimal(notional)
