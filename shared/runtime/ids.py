"""Stream entry ids as comparable tuples."""

from __future__ import annotations

StreamId = tuple[int, int]


def parse_id(entry_id: str) -> StreamId:
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def format_id(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def min_id(*entry_ids: str) -> str:
    return format_id(min(parse_id(entry_id) for entry_id in entry_ids))
