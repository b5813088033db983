"""What the operator commands share: a checked Redis connection and waiting for plan results."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import redis

from shared import keys
from shared.logging import redact_text, register_url_password
from shared.redis_conn import RedisUnavailable, connect_checked
from shared.settings import DEFAULT_REDIS_URL


FLEET_ENV_FILE = "/etc/quantum/common.env"
FLEET_CREDENTIALS_DIR = "/etc/quantum/credentials"


class CommandError(RuntimeError):
    """A one-line operator error; the command exits non-zero with it."""


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", default=None,
                        help=f"Redis to talk to (default: REDIS_URL, else the fleet's, from {FLEET_ENV_FILE}, "
                             f"else {DEFAULT_REDIS_URL})")


def redis_from(args: argparse.Namespace) -> redis.Redis:
    """The Redis the command names, else the fleet's own: an operator's `quantum kill on` over ssh has no
    systemd environment, and a switch set in another Redis (or database) than the fleet's stops nothing."""
    if not args.redis_url:
        if not os.environ.get("REDIS_URL"):
            load_fleet_env()
        args.redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    register_url_password(args.redis_url)  # never printed, however spelt; the URL is shown with it redacted
    try:
        return connect_checked(args.redis_url, socket_timeout=10)
    except RedisUnavailable as exc:
        raise CommandError(f"{exc} (set REDIS_URL or pass --redis-url)") from None


def load_fleet_env(path: str | None = None) -> None:
    """Read the fleet's common.env as systemd gives it to the daemons, without overriding what is set.

    An ops script run over ssh has no systemd environment; this gives it the same Redis and
    exchange settings as the fleet it checks. Explicitly set variables win. A file that is there but
    cannot be read (install.sh makes it root's) is an error: found in review, the default Redis was
    used instead, and `quantum kill on` said "all execution halted" of a Redis the fleet does not use.
    """
    env_file = Path(path or os.environ.get("QUANTUM_ENV_FILE", FLEET_ENV_FILE))
    if env_file.exists():
        try:
            text = env_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read the fleet's settings in {env_file} ({exc.strerror}): run this as a user "
                               "who can (sudo), or name the Redis with --redis-url / REDIS_URL") from None
        for name, value in parse_env_file(text).items():
            os.environ.setdefault(name, value)
    if os.access(FLEET_CREDENTIALS_DIR, os.R_OK | os.X_OK):
        os.environ.setdefault("CREDENTIALS_DIRECTORY", FLEET_CREDENTIALS_DIR)


def parse_env_file(text: str) -> dict[str, str]:
    """systemd EnvironmentFile lines: NAME=VALUE, spaces around the name, the "=" and the value allowed (as
    ops/lib/ops.sh reads them), optional quotes, '#' comments."""
    values = {}
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        name = name.strip()
        if not sep or not name or name.startswith("#") or not name.replace("_", "").isalnum():
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def in_redis(args: argparse.Namespace) -> str:
    """' (in <the Redis the command changed>)', password hidden: the operator sees which fleet a switch reached."""
    return f" (in {redact_text(args.redis_url)})"


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
