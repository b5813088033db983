"""The dead-letter stream: where entries that cannot be processed go, with the reason, then acked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import redis

from shared import keys
from shared.logging import redact
from shared.lua import LuaScript
from shared.schema.entry import JSON_FIELDS

MAX_FIELDS_JSON = 16 * 1024


def dead_letter_fields(
    source_stream: str,
    entry_id: str,
    fields: Mapping[str, str],
    reason: str,
    detail: Mapping[str, str] | str,
    group: str,
    consumer: str,
) -> dict[str, str]:
    fields_json = json.dumps(_redacted(fields), ensure_ascii=False)
    if len(fields_json) > MAX_FIELDS_JSON:
        fields_json = fields_json[:MAX_FIELDS_JSON] + "...(truncated)"
    detail_text = detail if isinstance(detail, str) else json.dumps(redact(dict(detail)), ensure_ascii=False)
    return {
        "source_stream": source_stream,
        "entry_id": entry_id,
        "reason": reason,
        "detail": detail_text[:4096],
        "fields": fields_json,
        "group": group,
        "consumer": consumer,
        "ts_ms": str(int(time.time() * 1000)),
    }


def _redacted(fields: Mapping[str, str]) -> dict[str, object]:
    """The entry's fields with secrets masked, inside a JSON payload too (found in review: an `api_key` among a
    payload's keys was copied verbatim, where the same flat field is masked)."""
    masked = redact(dict(fields))
    for name in JSON_FIELDS:
        value = fields.get(name)
        if not isinstance(value, str):
            continue
        try:
            document = json.loads(value)
        except (ValueError, RecursionError):
            continue  # not JSON: masked as text already
        if isinstance(document, (dict, list)):
            masked[name] = json.dumps(redact(document), ensure_ascii=False)
    return masked


# KEYS: source stream, dead-letter stream; ARGV: group, entry id, then the dead letter's fields (flat). The ack
# decides: only an entry still pending gets its dead letter, so a call sent again (its reply lost with the
# connection) does not write a second one.
ACK_AND_DEAD_LETTER = LuaScript("""
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
return 1
""")


def dead_letter_and_ack(client: redis.Redis, group: str, dead: dict[str, str]) -> bool:
    """Ack the source entry and write its dead letter, atomically: never lost, never twice. False (nothing
    written) when the entry was no longer pending: another consumer has already ended it."""
    flat = [item for pair in dead.items() for item in pair]
    return bool(ACK_AND_DEAD_LETTER(client, [dead["source_stream"], keys.Stream.DEAD_LETTER],
                                    [group, dead["entry_id"], *flat]))
