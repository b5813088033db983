"""What the consumer does with the entries one read delivered: parse each, hand it over, settle it.

An entry that does not parse, or has been delivered more than `max_deliveries` times, goes to the
dead-letter stream with the reason (acked in the same transaction). The others go to the handler
one by one, or all at once to a batch handler. An entry is done (to be acked with the next read)
when its handler returned; a handler that raised Rejected dead-letters it; any other exception
leaves it pending, to be claimed again (shared.runtime.consumer).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import redis

from shared import metrics
from shared.redis_conn import unavailable
from shared.runtime.deadletter import dead_letter_and_ack, dead_letter_fields
from shared.schema.entry import EntryError

if TYPE_CHECKING:
    from shared.runtime.consumer import ConsumerConfig

T = TypeVar("T")
DUPLICATE_FIELD_REASON = "duplicate_field"
MAX_DELIVERIES_REASON = "max_deliveries_exceeded"
DELETED_REASON = "entry_deleted_while_pending"  # deleted or trimmed from its stream before it was handled
DELETED_DETAIL = "the entry was deleted from its stream (XDEL, XTRIM, MAXLEN) while pending: it was never handled"
PARSE_FAILED_REASON = "parse_failed"


@dataclass(frozen=True)
class Entry:
    stream: str
    entry_id: str
    fields: dict[str, str]
    deliveries: int


# A batch handler takes every parsed entry of a read at once and answers, in order, None for each
# entry it finished or the exception that entry raised (Rejected: dead-lettered; others: retried).
BatchHandler = Callable[[list[tuple[T, Entry]]], list[BaseException | None]]


class GiveUpLater(Exception):
    """Raised by a daemon's give-up hook when it cannot end the entry now (another worker still holds what
    the entry is about): the entry is not dead-lettered and stays pending, to be claimed again later."""


class Rejected(Exception):
    """Raised by a handler for input that parsed but can never be processed: dead-lettered, acked."""

    def __init__(self, reason: str, detail: dict[str, str]):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Shutdown(Exception):
    """Raised from the signal handler while the loop waits idle in XREADGROUP."""


class EntryHandling(Generic[T]):
    def __init__(
        self,
        client: redis.Redis,
        config: ConsumerConfig,
        parse: Callable[[dict[str, str]], T],
        handler: Callable[[T, Entry], None],
        batch_handler: BatchHandler | None,
        on_give_up: Callable[[Entry, str], None] | None,
        progress: Callable[[], None],
        log,
        stopping: Callable[[], bool] = lambda: False,
        keep_claim: Callable[[list[str]], set[str]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.config = config
        self.parse = parse
        self.handler = handler
        self.batch_handler = batch_handler
        self.on_give_up = on_give_up
        self.progress = progress
        self.stopping = stopping
        self.keep_claim = keep_claim
        self.monotonic = monotonic
        self.log = log
        self._labels = {"stream": config.stream, "group": config.group}
        # Per-entry metrics, bound to their labels once rather than looked up for every entry.
        self._read = metrics.ENTRIES_READ.labels(**self._labels)
        self._handler_seconds = metrics.HANDLER_SECONDS.labels(**self._labels)

    def process(self, batch: list[tuple[str, dict | None]], deliveries: dict[str, int], done: list[str]) -> None:
        """Handle each entry of a read; the ids that are done and must be acked go into `done` as each ends, so
        they stay there when a later entry's Redis error or a stop ends the batch (not handled again).

        One by one, the batch ends early when the process is asked to stop: the entries not begun stay pending
        (delivered again at the next start) rather than outlasting the stop timeout. A batch that takes longer
        than a third of claim_idle_ms renews its hold on the entries not yet begun (keep_claim), so that another
        instance does not claim them as abandoned and handle them at the same time; one another instance has
        claimed all the same is left to it. An entry handled but not yet acked when the process dies is
        delivered again; handlers are idempotent for that (result markers, single-use permits, replays counted
        once)."""
        if self.batch_handler is not None:
            done += self._process_together(batch, deliveries)
            return
        kept_at, keep_every_s, ours = self.monotonic(), self.config.claim_idle_ms / 3000, None
        for i, (entry_id, fields) in enumerate(batch):
            if self.stopping():
                return
            if self.keep_claim is not None and self.monotonic() - kept_at >= keep_every_s:
                ours = self.keep_claim([later_id for later_id, _fields in batch[i:]])
                kept_at = self.monotonic()
            if ours is not None and entry_id not in ours:
                continue  # another instance claimed it meanwhile: its to handle and ack
            if self._process_one(entry_id, fields, deliveries.get(entry_id, 1)):
                done.append(entry_id)
            self.progress()  # per entry: a long batch of slow entries is progress, not a stall

    def _process_together(self, batch: list[tuple[str, dict | None]], deliveries: dict[str, int]) -> list[str]:
        """Parse every entry (dead-lettering what cannot be parsed), then one batch handler call."""
        done: list[str] = []
        ready: list[tuple[T, Entry]] = []
        for entry_id, fields in batch:
            prepared = self._prepare(entry_id, fields, deliveries.get(entry_id, 1))
            if prepared is True:
                done.append(entry_id)
            elif prepared:
                ready.append(prepared)
        if ready:
            for (_item, entry), failure in zip(ready, self._handle_batch(ready)):
                if self._settle(entry, failure):
                    done.append(entry.entry_id)
        self.progress()
        return done

    def _handle_batch(self, ready: list[tuple[T, Entry]]) -> list[BaseException | None]:
        started = time.perf_counter()
        try:
            failures = self.batch_handler(ready)
        except (Shutdown, redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # the whole batch stays pending and is retried
            failures = [exc] * len(ready)
        finally:
            elapsed = (time.perf_counter() - started) / len(ready)
            for _ in ready:
                self._handler_seconds.observe(elapsed)
        return failures

    def _process_one(self, entry_id: str, fields: dict | None, deliveries: int) -> bool:
        """True when the entry is done and must be acked; dead letters are acked with their write."""
        prepared = self._prepare(entry_id, fields, deliveries)
        if isinstance(prepared, bool):
            return prepared
        return self._handle(*prepared)

    def _prepare(self, entry_id: str, fields: dict | None, deliveries: int) -> tuple[T, Entry] | bool:
        """(item, entry) to handle; True: nothing to do but ack; False: dead-lettered (acked with it)."""
        self._read.inc()
        if not fields:  # Deleted or trimmed while pending: nothing left to process, and said so (not a silent drop).
            self._dead_letter(Entry(self.config.stream, entry_id, {}, deliveries), DELETED_REASON,
                              {"detail": DELETED_DETAIL}, handled=False)
            return False
        entry = Entry(self.config.stream, entry_id, dict(fields), deliveries)
        if deliveries > self.config.max_deliveries:
            self._dead_letter(entry, MAX_DELIVERIES_REASON, {"deliveries": str(deliveries)})
            return False
        duplicated = getattr(fields, "duplicated", ())
        if duplicated:  # which of the values was meant cannot be told: refused, as aliases that disagree are
            self._dead_letter(entry, DUPLICATE_FIELD_REASON, {name: "given more than once with different values"
                                                              for name in duplicated}, handled=False)
            return False
        try:
            return self.parse(entry.fields), entry
        except EntryError as exc:
            self._dead_letter(entry, exc.reason, exc.fields, handled=False)
            return False
        except Exception as exc:  # a parser must name what is wrong (EntryError); an input it did not foresee
            # still never crashes the daemon (the restarts would re-deliver the whole read until it was dead-lettered)
            self.log.error("parse_failed", entry_id=entry_id, exc_info=exc)
            self._dead_letter(entry, PARSE_FAILED_REASON, {"entry": f"could not be parsed ({exc.__class__.__name__})"},
                              handled=False)
            return False

    def _handle(self, item: T, entry: Entry) -> bool:
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            self.handler(item, entry)
        except (Shutdown, redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:
            failure = exc
        finally:
            self._handler_seconds.observe(time.perf_counter() - started)
        return self._settle(entry, failure)

    def _settle(self, entry: Entry, failure: BaseException | None) -> bool:
        """What one entry's outcome means: True to ack it. Redis refusing to serve (redis_conn.unavailable) is not
        the entry's failure: raised, so the loop waits for Redis and the entry keeps its deliveries."""
        if failure is None:
            return True
        if unavailable(failure):
            raise failure
        if isinstance(failure, Rejected):
            self._dead_letter(entry, failure.reason, failure.detail)
            return False
        metrics.HANDLER_ERRORS.labels(**self._labels).inc()
        self.log.error("handler_failed", entry_id=entry.entry_id, deliveries=entry.deliveries, exc_info=failure)
        return False

    def _dead_letter(self, entry: Entry, reason: str, detail: dict[str, str], handled: bool = True) -> None:
        """The entry to the dead-letter stream, acked with it; left pending when the give-up hook says later. The hook
        hears only entries the handler had (past their deliveries, or rejected by it): one that never parsed was never
        worked on, and its plan_id, read from fields that do not make a plan, is not its to end (found in review: a
        plan with a field given twice got a gave_up result, and its corrected resend was refused duplicate_plan)."""
        if self.on_give_up is not None and handled:
            try:
                self.on_give_up(entry, reason)  # the daemon ends what it can (a plan's terminal result) first
            except GiveUpLater as exc:
                self.log.warning("dead_letter_deferred", entry_id=entry.entry_id, reason=reason, why=str(exc))
                return
        dead = dead_letter_fields(
            entry.stream, entry.entry_id, entry.fields, reason, detail, self.config.group, self.config.consumer
        )
        if not dead_letter_and_ack(self.client, self.config.group, dead):
            self.log.info("dead_letter_not_needed", entry_id=entry.entry_id, reason=reason, why="no longer pending")
            return
        metrics.ENTRIES_DEAD_LETTERED.labels(reason=reason, **self._labels).inc()
        self.log.warning("entry_dead_lettered", entry_id=entry.entry_id, reason=reason, detail=detail)
