"""How old an entry is, and the refusal of one too old to act on (the apply layer's proposals, the bridge's intents).

A consumer group reads its stream from the start (STREAM_GROUP_START_ID 0): a daemon started late, a group
created after a mode switch, a backlog a producer left, would otherwise turn hours-old signals into orders.
An entry's time is its own (when the caller trusts the clock that wrote it) or the stream entry id's (when
Redis added it). A time further in the future than the maximum age (a clock or unit error) would never age:
refused too.
"""

from __future__ import annotations

import time

from shared.runtime.consumer import Rejected


def wall_ms() -> int:
    """The wall clock in ms: the default clock of decision code that compares with times Redis or another daemon
    of this host wrote (injected in tests)."""
    return int(time.time() * 1000)


def redis_ms(client) -> int:
    """Redis's clock in ms (TIME): the clock of stream entry ids and of the times the fleet's scripts write, where the
    readers may run on another host."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


MAX_MS_DIGITS = 15  # ms since 1970 fit in 13 digits until the year 2286
FUTURE_SKEW_MS = 60_000  # a time stored by a daemon of this host this far ahead of now is not a time it wrote


def stored_ms(raw: str | None, now_ms: int | None = None) -> int | None:
    """A millisecond time a daemon stored in Redis (plain digits, as FINISH writes the last execution); None when
    absent or garbled: `1e999999999` would otherwise be an int of a billion digits (a frozen daemon), and a time far
    in the future (given now_ms) would hold a cooldown until then."""
    text = (raw or "").strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_MS_DIGITS:
        return None
    value = int(text)
    return None if now_ms is not None and value - now_ms > FUTURE_SKEW_MS else value


def entry_id_ms(entry_id: str) -> int | None:
    """The millisecond part of a stream entry id: when Redis added the entry."""
    millis, _, _ = entry_id.partition("-")
    return int(millis) if millis.isdigit() else None


def check_fresh(made_ms: int | None, now_ms: int, max_age_ms: int, expired: str, invalid: str,
                detail: dict[str, str]) -> None:
    """Raise Rejected(expired) for an entry older than max_age_ms, Rejected(invalid) for one without a usable time."""
    detail = {**detail, "max_age_ms": str(max_age_ms)}
    if made_ms is None or made_ms - now_ms > max_age_ms:
        raise Rejected(invalid, {**detail, "time_ms": str(made_ms), "now_ms": str(now_ms)})
    if now_ms - made_ms > max_age_ms:
        raise Rejected(expired, {**detail, "age_ms": str(now_ms - made_ms)})
