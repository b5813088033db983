"""Per-position lifecycle memory in Redis, and the one transaction that publishes a proposal.

A lifecycle starts when a symbol shows a fingerprint (symbol, side, entry) not seen before and
ends when the symbol is flat; its start time is part of every proposal id, so a position
reopened at the same entry gets fresh ids (the apply layer dedupes plans by proposal id).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation

import redis

from shared import keys
from shared.once import xadd_once
from shared.schema import HarvestProposal, format_decimal


PENDING_FIELDS = ("rung_pending", "rung_covers", "rung_proposed_ms", "rung_seen_amt")


@dataclass(frozen=True)
class PendingRung:
    """The last rung proposal whose fate is not known yet: its rung, the rungs it covers, when it was proposed, and
    the position amount it saw (None: recorded before it was kept)."""

    label: str
    covers: frozenset[str]
    proposed_ms: int
    seen_amt: Decimal | None = None

    def reduced(self, amount: Decimal) -> bool:
        """Whether the position is smaller now than when this rung was proposed."""
        return self.seen_amt is not None and abs(amount) < abs(self.seen_amt)


@dataclass(frozen=True)
class Lifecycle:
    symbol: str
    fingerprint: str
    opened_ms: int
    peak_r: Decimal | None = None
    rungs_done: frozenset[str] = frozenset()
    full_attempt: int = 0
    full_proposed_ms: int | None = None
    rung_attempts: dict[str, int] = field(default_factory=dict)
    pending: PendingRung | None = None

    @classmethod
    def from_hash(cls, symbol: str, data: dict[str, str]) -> "Lifecycle | None":
        try:
            return cls(
                symbol, data["fingerprint"], int(data["opened_ms"]),
                Decimal(data["peak_r"]) if data.get("peak_r") else None,
                labels(data.get("rungs_done", "")),
                int(data.get("full_attempt") or 0),
                int(data["full_proposed_ms"]) if data.get("full_proposed_ms") else None,
                {label: int(count) for label, _, count in (part.rpartition(":") for part in
                                                           data.get("rung_attempts", "").split(",") if part)},
                PendingRung(data["rung_pending"], labels(data.get("rung_covers", "")), int(data["rung_proposed_ms"]),
                            Decimal(data["rung_seen_amt"]) if data.get("rung_seen_amt") else None)
                if data.get("rung_pending") else None,
            )
        except (KeyError, ValueError, InvalidOperation):
            return None  # Unreadable memory starts a new lifecycle rather than stopping the position.

    def to_hash(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "opened_ms": str(self.opened_ms), "full_attempt": str(self.full_attempt)}


def labels(text: str) -> frozenset[str]:
    return frozenset(label for label in text.split(",") if label)


def rung_updates(lifecycle: Lifecycle, label: str, attempt: int, covers: frozenset[str], now_ms: int,
                 seen_amt: Decimal) -> dict[str, str]:
    """The lifecycle fields a rung proposal writes: it is pending, and its attempt is counted."""
    attempts = {**lifecycle.rung_attempts, label: attempt}
    return {"rung_pending": label, "rung_covers": ",".join(sorted(covers)), "rung_proposed_ms": str(now_ms),
            "rung_seen_amt": format_decimal(seen_amt),
            "rung_attempts": ",".join(f"{name}:{count}" for name, count in sorted(attempts.items()))}


def end_pending(client: redis.Redis, lifecycle: Lifecycle, done: bool) -> Lifecycle:
    """The pending rung's fate is known: `done` adds the rungs it covers to the rungs done; either way no rung is
    pending any more."""
    pending = lifecycle.pending
    if pending is None:
        return lifecycle
    rungs_done = lifecycle.rungs_done | pending.covers if done else lifecycle.rungs_done
    key = keys.harvest_position(lifecycle.symbol)
    with client.pipeline(transaction=True) as pipe:
        if done:
            pipe.hset(key, "rungs_done", ",".join(sorted(rungs_done)))
        pipe.hdel(key, *PENDING_FIELDS)
        pipe.execute()
    return replace(lifecycle, rungs_done=rungs_done, pending=None)


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
