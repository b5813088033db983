"""The consumer-group loop every daemon runs.

Order of work: this consumer's own pending entries (a restart recovers them), then entries
left idle by any consumer (XAUTOCLAIM), then new entries, blocking in XREADGROUP. An entry
is acked only after its handler returned; a handler that raised leaves it pending, so it is
claimed again after `claim_idle_ms`; past `max_deliveries`, or when it does not parse, it
goes to the dead-letter stream with the reason and is acked. What happens to the entries of
one read (parse, handle, settle, dead-letter) is shared.runtime.handling; the scripts that claim pending entries
and end those deleted while pending are shared.runtime.pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import redis

from shared import metrics, redis_wire
from shared.logging import get_logger, redact_text
from shared.redis_conn import raised_in_script, unavailable
from shared.runtime import maintenance
from shared.runtime import pending
from shared.runtime.arrival import ArrivalReader, sent as arrival_sent
from shared.runtime.handling import (DELETED_REASON, BatchHandler, Entry, EntryHandling, GiveUpLater, Rejected,
                                     Shutdown)

__all__ = ["BatchHandler", "ConsumerConfig", "Entry", "GiveUpLater", "Rejected", "Shutdown", "StreamConsumer"]
T = TypeVar("T")
BUSYGROUP = "BUSYGROUP"


@dataclass(frozen=True)
class ConsumerConfig:
    stream: str
    group: str
    consumer: str
    batch: int = 64
    block_ms: int = 2000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    start_id: str = "0"
    retention_ms: int = 72 * 3600 * 1000
    housekeeping_every_s: float = 5.0


def _stream_or_group_gone(exc: redis.ResponseError) -> bool:
    """The group (NOGROUP) or the whole stream was deleted: a blocked read is unblocked (Redis 7: UNBLOCKED)
    and XINFO answers "no such key" (6.2). Both mean: create them again and go on."""
    text = str(exc)
    return text.startswith(("NOGROUP", "UNBLOCKED")) or text == "no such key" or raised_in_script(exc, ("NOGROUP",))


@dataclass
class _State:
    stopping: threading.Event = field(default_factory=threading.Event)
    idle: bool = False
    last_housekeeping: float = float("-inf")
    redrain: bool = False  # after a Redis error: re-read our own pending entries first
    last_claim: float = float("-inf")
    claim_from: str = "0-0"  # where the next XAUTOCLAIM goes on
    acks: list[str] = field(default_factory=list)  # handled, to be acked with the next read
    last_new: str = ""  # the last entry id a read of new entries returned


class StreamConsumer(Generic[T]):
    def __init__(
        self,
        client: redis.Redis,
        config: ConsumerConfig,
        parse: Callable[[dict[str, str]], T],
        handler: Callable[[T, Entry], None],
        on_tick: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_progress: Callable[[], None] | None = None,
        on_give_up: Callable[[Entry, str], None] | None = None,
        batch_handler: BatchHandler | None = None,
        arrival: ArrivalReader | None = None,
    ):
        self.client = client
        self.arrival = arrival
        self.config = config
        self.on_tick = on_tick
        self.on_progress = on_progress
        self.on_redis_wait: Callable[[], None] | None = None  # called while Redis is down and the loop waits
        self.monotonic = monotonic
        self.log = get_logger(stream=config.stream, group=config.group, consumer=config.consumer)
        self._state = _State()
        self.entries = EntryHandling(client, config, parse, handler, batch_handler, on_give_up, self._progress, self.log,
                                     stopping=self._state.stopping.is_set, keep_claim=self._keep_claim, monotonic=monotonic)
        self._labels = {"stream": config.stream, "group": config.group}
        self._acked = metrics.ENTRIES_ACKED.labels(**self._labels)
        self._heartbeat = metrics.LOOP_HEARTBEAT.labels(**self._labels)

    @property
    def handler(self) -> Callable:
        return self.entries.handler

    @handler.setter
    def handler(self, handler: Callable) -> None:
        self.entries.handler = handler

    @property
    def idle(self) -> bool:
        return self._state.idle

    def request_stop(self) -> None:
        self._state.stopping.set()

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.config.stream, self.config.group, id=self.config.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if not str(exc).startswith(BUSYGROUP):
                raise
        if self.arrival is not None:  # what the next read of new entries delivers lies after this
            groups = self.client.xinfo_groups(self.config.stream)
            self._state.last_new = next((g["last-delivered-id"] for g in groups if g["name"] == self.config.group), "")

    def run(self, burst: bool = False) -> int:
        """Process until stopped; in burst mode, until nothing is left, then return the count."""
        processed, started = 0, False
        try:
            while not self._state.stopping.is_set():
                try:
                    if not started:  # the group, then our own pending entries (a restart recovers them)
                        self.ensure_group()
                        processed += self._drain_own_pending()
                        started = True
                    done = self._redrain() + self._claim_idle() + self._read_new(block_ms=None if burst else self.config.block_ms)
                    self._tick()
                except Shutdown:
                    break
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    self._survive_redis_error(exc)
                    continue
                except redis.ResponseError as exc:
                    if unavailable(exc):  # READONLY after a failover, OOM, MISCONF, ...: as if unreachable
                        self._survive_redis_error(exc)
                        continue
                    if not _stream_or_group_gone(exc):
                        raise
                    self.log.warning("group_recreated", error=redact_text(str(exc))[:120])
                    started = False  # the group again, inside this guard (it may fail as Redis does), then ours
                    continue
                processed += done
                if burst and done == 0 and not self._state.redrain:  # nothing left, none of ours unread
                    break
        finally:
            self._flush_acks_on_exit()
        return processed

    def _flush_acks_on_exit(self) -> None:
        try:
            self._flush_acks()
        except redis.RedisError as exc:  # still pending: delivered again on start, handled idempotently
            self.log.warning("acks_not_flushed", count=len(self._state.acks), error=exc.__class__.__name__)

    def _survive_redis_error(self, exc: Exception) -> None:
        metrics.REDIS_ERRORS.labels(**self._labels).inc()
        self.log.warning("redis_unavailable", error=exc.__class__.__name__)
        self._state.redrain = True
        if self.on_redis_wait is not None:
            self.on_redis_wait()
        self._state.stopping.wait(1.0)

    def _redrain(self) -> int:
        if not self._state.redrain:
            return 0
        processed = self._drain_own_pending()
        self._state.redrain = False
        return processed

    def _drain_own_pending(self) -> int:
        """Our own pending entries, each once per drain: one that fails again stays pending and is retried
        after claim_idle_ms (XAUTOCLAIM), not at once, so a transient failure does not burn its deliveries."""
        processed, after = 0, "0"
        while not self._state.stopping.is_set():
            self._flush_acks()  # else our own handled entries would come back as pending
            response = redis_wire.call(self.client, *redis_wire.xreadgroup(
                self.config.group, self.config.consumer, self.config.stream, self.config.batch, after=after))
            batch = redis_wire.entries(response)
            if not batch:
                return processed
            after = batch[-1][0]
            processed += self._process_batch(batch, self._delivery_counts(batch))
        return processed

    def _claim_idle(self) -> int:
        # Entries become claimable only after claim_idle_ms: looking more often than that is wasted work.
        now = self.monotonic()
        if now - self._state.last_claim < min(1.0, self.config.claim_idle_ms / 2000):
            return 0
        self._state.last_claim = now
        self._flush_acks()
        # A claim sent again after its reply was lost finds the entries it claimed no longer idle: read back at once.
        next_id, batch, deleted, dropped = pending.claim_idle(self.client, self.config, self._state.claim_from,
                                                              on_retry=self._read_may_be_lost)
        if dropped:  # dead-lettered by the claim itself
            metrics.ENTRIES_DEAD_LETTERED.labels(reason=DELETED_REASON, **self._labels).inc(len(dropped))
            self.log.warning("deleted_pending_entries_dropped", count=len(dropped), reason=DELETED_REASON)
        # XAUTOCLAIM looks at no more than COUNT x 10 pending entries a call: go on where it stopped ("0-0": from
        # the start again), or entries further on would never be claimed.
        self._state.claim_from = next_id or "0-0"
        if deleted:
            self._ack_deleted()
        if not batch:
            return 0
        self.log.info("entries_claimed", count=len(batch))
        return self._process_batch(batch, self._delivery_counts(batch))

    def _read_new(self, block_ms: int | None) -> int:
        """Wait for new entries and handle them; an arrival reader hears the script's reply before the batch
        and None after it, however the read or the batch ended."""
        try:
            self._state.idle = True
            try:
                if self._state.stopping.is_set():
                    return 0
                response, arrived = self._ack_and_read(block_ms)
            finally:
                self._state.idle = False
            batch = redis_wire.entries(response)
            if batch:
                self._state.last_new = batch[-1][0]
            if self.arrival is not None:
                self.arrival.arrived(arrived)
            return self._process_batch(batch, {entry_id: 1 for entry_id, _ in batch})
        finally:
            if self.arrival is not None:
                self.arrival.arrived(None)

    def _keep_claim(self, entry_ids: list[str]) -> set[str]:
        """During a long batch: ack what it has done so far, and renew our hold on these entries (their idle time
        starts again, their delivery count stays). Returns those still ours."""
        acks = self._state.acks
        kept = pending.keep_claim(self.client, self.config, acks, entry_ids)
        if acks:
            self._acked_now(len(acks))
        return set(kept)

    def _ack_deleted(self) -> None:
        """Redis 6.2 claims an entry deleted while pending and answers nil for it, id and all, leaving it in our
        pending list for good (Redis 7 drops it itself): it would hold back trimming. Ack ours that are gone."""
        acked = pending.ack_deleted(self.client, self.config)
        if acked:
            metrics.ENTRIES_DEAD_LETTERED.labels(reason=DELETED_REASON, **self._labels).inc(int(acked))
            self.log.warning("deleted_pending_entries_acked", count=int(acked), reason=DELETED_REASON)

    def _delivery_counts(self, batch: list[tuple[str, dict | None]]) -> dict[str, int]:
        return pending.delivery_counts(self.client, self.config, batch)

    def _ack_and_read(self, block_ms: int | None) -> tuple[list | None, object | None]:
        """XACK of the last batch, the next XREADGROUP, and the handler's arrival read, in one round trip:
        (the read's response, the arrival script's reply or None)."""
        commands = []
        acks = self._state.acks
        if acks:
            commands.append(("XACK", self.config.stream, self.config.group, *acks))
        commands.append(redis_wire.xreadgroup(self.config.group, self.config.consumer, self.config.stream,
                                              self.config.batch, block_ms))
        # Nothing is asked while "after the last entry given" is not known (no group read since start).
        call = self.arrival.arrival_call() if self.arrival is not None and self._state.last_new else None
        sent = arrival_sent(call, self.config.stream, self._state.last_new, self.config.batch) if call else None
        if sent is not None:
            commands.append(sent.command)
        # A read sent again (its reply lost: a dropped connection, a Redis restart) may have delivered entries no one
        # received: they are in our pending list, read back at once (the next loop's redrain), not after claim_idle_ms.
        replies = redis_wire.send(self.client, commands, on_retry=self._read_may_be_lost)
        for reply in replies[:2 if acks else 1]:
            if isinstance(reply, Exception):
                raise reply
        if acks:
            self._acked_now(len(acks))
        if sent is None:
            return replies[-1], None
        return replies[-2], self._arrival_reply(sent.reply(self.client, replies[-1]))

    def _read_may_be_lost(self, _error: Exception) -> None:
        self._state.redrain = True

    def _arrival_reply(self, reply: object) -> object | None:
        """The arrival script's reply; None when it failed (the handler then reads for itself)."""
        if isinstance(reply, Exception):
            metrics.HANDLER_ERRORS.labels(**self._labels).inc()
            self.log.warning("arrival_read_failed", error=redact_text(str(reply))[:200])
            return None
        return reply

    def _flush_acks(self) -> None:
        if self._state.acks:
            self.client.xack(self.config.stream, self.config.group, *self._state.acks)
            self._acked_now(len(self._state.acks))

    def _acked_now(self, count: int) -> None:
        del self._state.acks[:count]  # in place: a batch being handled adds to this same list
        self._acked.inc(count)

    def _process_batch(self, batch: list[tuple[str, dict | None]], deliveries: dict[str, int]) -> int:
        """Handle each entry (shared.runtime.handling); those done are acked together, with the next read."""
        self.entries.process(batch, deliveries, self._state.acks)
        return len(batch)

    def _progress(self) -> None:
        self._heartbeat.set(time.time())
        if self.on_progress is not None:
            self.on_progress()

    def _tick(self) -> None:
        self._progress()
        if self.on_tick is not None:
            self._run_tick()
        now = self.monotonic()
        if now - self._state.last_housekeeping >= self.config.housekeeping_every_s:
            self._state.last_housekeeping = now
            self._housekeeping()

    def _run_tick(self) -> None:
        try:
            self.on_tick()
        except (Shutdown, redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # a failing periodic task must not end the loop that serves plans
            if unavailable(exc):
                raise
            metrics.HANDLER_ERRORS.labels(**self._labels).inc()
            self.log.exception("tick_failed")

    def _housekeeping(self) -> None:
        state = maintenance.group_state(self.client, self.config.stream, self.config.group)
        if state is not None:
            metrics.GROUP_LAG.labels(**self._labels).set(state.lag)
            # Entries handled whose XACK goes with the next read are pending in Redis still, not stuck.
            metrics.GROUP_PENDING.labels(**self._labels).set(max(state.pending - len(self._state.acks), 0))
        maintenance.trim(self.client, self.config.stream, self.config.retention_ms, int(time.time() * 1000))

