"""What the operator commands share: a checked Redis connection and waiting for plan results."""

from __future__ import annotations

import argparse
import os
import sys
import time

import redis

from shared import keys
from shared.redis_conn import RedisUnavailable, connect_checked
from shared.settings import DEFAULT_REDIS_URL


class CommandError(RuntimeError):
    """A one-line operator error; the command exits non-zero with it."""


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
                        help="Redis to talk to (default: REDIS_URL, else redis://127.0.0.1:6379/0)")


def redis_from(args: argparse.Namespace) -> redis.Redis:
    try:
        return connect_checked(args.redis_url, socket_timeout=10)
    except RedisUnavailable as exc:
        raise CommandError(f"{exc} (set REDIS_URL or pass --redis-url)") from None


def wait_for_results(client: redis.Redis, plan_ids: list[str], timeout_s: float, since_id: str = "0") -> dict[str, dict]:
    """Block on apply.result until each plan has its result or the timeout passes."""
    wanted = set(plan_ids)
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout_s
    last_id = since_id
    while wanted - set(found) and time.monotonic() < deadline:
        remaining_ms = max(int((deadline - time.monotonic()) * 1000), 1)
        response = client.xread({keys.Stream.APPLY_RESULT: last_id}, block=min(remaining_ms, 1000), count=500)
        for _stream, entries in response or []:
            for entry_id, fields in entries:
                last_id = entry_id
                if fields.get("plan_id") in wanted:
                    found[fields["plan_id"]] = fields
    return found


def fail(message: str, code: int = 1) -> int:
    print(f"quantum: {message}", file=sys.stderr)
    return code
