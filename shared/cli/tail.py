"""`quantum tail`: follow plans, permit verdicts, results, dead letters and reconcile events live."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import redis

from shared import keys
from shared.cli.common import CommandError, add_redis_argument, fail, redis_from
from shared.cli.up import format_result

FOLLOWED = (keys.Stream.APPLY_PLAN, keys.Stream.APPLY_RESULT, keys.Stream.DEAD_LETTER, keys.Stream.RECONCILE_EVENT,
            keys.Stream.HARVEST_PROPOSAL, keys.Stream.HARVEST_CALIBRATED)


def register(commands: Any) -> None:
    parser = commands.add_parser("tail", help="follow plans, permits and results as they happen (Ctrl-C stops)")
    parser.add_argument("--from-start", action="store_true", help="replay what the streams hold first")
    add_redis_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        client = redis_from(args)
    except CommandError as exc:
        return fail(str(exc))
    cursors = {stream: "0" if args.from_start else _last_id(client, stream) for stream in FOLLOWED}
    try:
        while True:
            for stream, entries in client.xread(cursors, block=1000, count=200) or []:
                for entry_id, fields in entries:
                    cursors[stream] = entry_id
                    print(describe(stream, fields), flush=True)
    except KeyboardInterrupt:
        return 0


def _last_id(client, stream: str) -> str:
    """Where the stream stands now, fixed once: a "$" cursor would be taken again at every XREAD for a stream that
    has delivered nothing yet, and entries added between two reads would never be shown."""
    try:
        return client.xinfo_stream(stream)["last-generated-id"]
    except redis.ResponseError:  # no such stream yet (or not a stream): everything it will hold is new
        return "0-0"


def describe(stream: str, fields: dict[str, str]) -> str:
    stamp = time.strftime("%H:%M:%S")
    name = stream.removeprefix("quantum:stream:")
    if stream == keys.Stream.APPLY_RESULT:
        return f"{format_result(fields)}{_verdicts(fields)}"
    if stream == keys.Stream.APPLY_PLAN:
        return (f"{stamp} PLAN     {fields.get('symbol')} {fields.get('side')} {fields.get('qty')} "
                f"reduceOnly={fields.get('reduceOnly', '?')} action={fields.get('action', '-')} plan {fields.get('plan_id')}")
    if stream == keys.Stream.DEAD_LETTER:
        return f"{stamp} DEAD     {fields.get('source_stream')} {fields.get('entry_id')}: {fields.get('reason')} {fields.get('detail', '')}"
    return f"{stamp} {name:<8} " + " ".join(f"{k}={v}" for k, v in fields.items())


def _verdicts(fields: dict[str, str]) -> str:
    parts = []
    for name in ("p32_permit", "p33_permit"):
        if fields.get(name):
            permit = _json_object(fields[name])
            parts.append(f"{name[:3].upper()} unreadable" if permit is None else
                         f"{name[:3].upper()} {'allow' if permit.get('allow') is True else 'DENY'} {permit.get('reason')}")
    return f"  [{'; '.join(parts)}]" if parts else ""


def _json_object(raw: str) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
