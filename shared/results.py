"""Ending a plan: exactly one result, written with its ledger and cooldown effects in one transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from shared import keys, ledger
from shared.schema.result import PlanResult

RESULT_MARKER_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class Effects:
    fill: ledger.Fill | None = None
    cooldown_symbol: str | None = None


def has_result(client: redis.Redis, plan_id: str) -> bool:
    return bool(client.exists(keys.plan_result_marker(plan_id)))


def finish_plan(client: redis.Redis, result: PlanResult, effects: Effects = Effects(), now_ms: int | None = None) -> bool:
    """Write the plan's one result; False (and nothing written) when it already has one."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    marker = keys.plan_result_marker(result.plan_id)
    watched = [marker] + ([keys.position_ledger(effects.fill.symbol)] if effects.fill else [])
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(*watched)
                if pipe.exists(marker):
                    pipe.unwatch()
                    return False
                new_position = _ledger_after(pipe, effects.fill, now_ms)
                pipe.multi()
                _queue(pipe, result, effects, new_position, now_ms)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def _ledger_after(pipe: redis.client.Pipeline, fill: ledger.Fill | None, now_ms: int) -> ledger.LedgerPosition | None:
    return ledger.after_fill(ledger.read(pipe, fill.symbol), fill, now_ms) if fill else None


def _queue(pipe, result: PlanResult, effects: Effects, new_position, now_ms: int) -> None:
    pipe.set(keys.plan_result_marker(result.plan_id), str(now_ms), ex=RESULT_MARKER_TTL_S)
    pipe.xadd(keys.Stream.APPLY_RESULT, {**result.to_fields(), "ts_ms": str(now_ms)})
    if effects.fill is not None:
        ledger.queue_write(pipe, effects.fill.symbol, new_position)
    if effects.cooldown_symbol is not None:
        pipe.set(keys.cooldown_last_exec(effects.cooldown_symbol), str(now_ms))
