"""shared.freshness.stored_ms: the one reader of millisecond times daemons store in Redis (the last execution, a
mismatch's first sighting, the result marker's time)."""

from __future__ import annotations

import pytest

from shared.freshness import FUTURE_SKEW_MS, stored_ms

NOW_MS = 1_765_000_000_000


@pytest.mark.parametrize(("raw", "read"), [
    ("1765000000000", 1_765_000_000_000), (" 12 ", 12), ("0", 0),
    (None, None), ("", None), ("soon", None), ("1.7e12", None), ("-5", None), ("²", None),
    ("1e999999999", None),  # as Decimal then int: a billion-digit int, a frozen daemon
    ("9" * 16, None),  # beyond any millisecond time
])
def test_only_plain_digits_of_a_millisecond_time_read(raw, read) -> None:
    assert stored_ms(raw) == read


def test_a_time_further_ahead_than_the_skew_is_not_one_this_host_wrote() -> None:
    assert stored_ms(str(NOW_MS + FUTURE_SKEW_MS), NOW_MS) == NOW_MS + FUTURE_SKEW_MS
    assert stored_ms(str(NOW_MS + FUTURE_SKEW_MS + 1), NOW_MS) is None
    assert stored_ms(str(NOW_MS + FUTURE_SKEW_MS + 1)) is not None  # without now, only the form is checked
