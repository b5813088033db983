"""Per-position lifecycle memory in Redis, and the one transaction that publishes a proposal.

A lifecycle starts when a symbol shows a fingerprint (symbol, side, entry) not seen before and
ends when the symbol is flat; its start time is part of every proposal id, so a position
reopened at the same entry gets fresh ids (the apply layer dedupes plans by proposal id).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import redis

from shared import keys
from shared.once import xadd_once
from shared.schema import HarvestProposal, format_decimal


@dataclass(frozen=True)
class Lifecycle:
    symbol: str
    fingerprint: str
    opened_ms: int
    peak_r: Decimal | None = None
    rungs_done: frozenset[str] = frozenset()
    full_attempt: int = 0
    full_proposed_ms: int | None = None

    @classmethod
    def from_hash(cls, symbol: str, data: dict[str, str]) -> "Lifecycle | None":
        try:
            return cls(
                symbol, data["fingerprint"], int(data["opened_ms"]),
                Decimal(data["peak_r"]) if data.get("peak_r") else None,
                frozenset(label for label in data.get("rungs_done", "").split(",") if label),
                int(data.get("full_attempt") or 0),
                int(data["full_proposed_ms"]) if data.get("full_proposed_ms") else None,
            )
        except (KeyError, ValueError, InvalidOperation):
            return None  # Unreadable memory starts a new lifecycle rather than stopping the position.

    def to_hash(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "opened_ms": str(self.opened_ms), "full_attempt": str(self.full_attempt)}


def begin_or_resume(client: redis.Redis, symbol: str, fingerprint: str, now_ms: int, ttl_s: int) -> Lifecycle:
    current = Lifecycle.from_hash(symbol, client.hgetall(keys.harvest_position(symbol)))
    if current is not None and current.fingerprint == fingerprint:
        return current
    fresh = Lifecycle(symbol, fingerprint, now_ms)
    key = keys.harvest_position(symbol)
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, mapping=fresh.to_hash())
        pipe.expire(key, ttl_s)
        pipe.sadd(keys.HARVEST_TRACKED, symbol)
        pipe.execute()
    return fresh


def keep_peak(client: redis.Redis, lifecycle: Lifecycle, peak_r: Decimal, ttl_s: int) -> None:
    """Record a new peak R and keep the record alive while the position is open."""
    key = keys.harvest_position(lifecycle.symbol)
    with client.pipeline(transaction=False) as pipe:
        if peak_r != lifecycle.peak_r:
            pipe.hset(key, "peak_r", format_decimal(peak_r))
        pipe.expire(key, ttl_s)
        pipe.execute()


def forget_closed(client: redis.Redis, open_symbols: set[str]) -> list[str]:
    """End the lifecycles of symbols that are flat now; returns those symbols."""
    gone = sorted(set(client.smembers(keys.HARVEST_TRACKED)) - open_symbols)
    if gone:
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(*(keys.harvest_position(symbol) for symbol in gone))
            pipe.srem(keys.HARVEST_TRACKED, *gone)
            pipe.execute()
    return gone


def publish_once(client: redis.Redis, proposal: HarvestProposal, lifecycle: Lifecycle, updates: dict[str, str],
                 ttl_s: int) -> bool:
    """XADD the proposal unless its id was already published; the lifecycle update is written either way."""
    return xadd_once(
        client, keys.harvest_proposed(proposal.proposal_id), keys.Stream.HARVEST_PROPOSAL, proposal.to_fields(),
        ttl_s=ttl_s, always=lambda pipe: pipe.hset(keys.harvest_position(lifecycle.symbol), mapping=updates),
    )
