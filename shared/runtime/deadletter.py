"""The dead-letter stream: where entries that cannot be processed go, with the reason, then acked."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import redis

from shared import keys
from shared.logging import redact

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
    fields_json = json.dumps(redact(dict(fields)), ensure_ascii=False)
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


def dead_letter_and_ack(client: redis.Redis, group: str, dead: dict[str, str]) -> None:
    """Write the dead letter and ack the source entry in one transaction: never lost, never both."""
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.Stream.DEAD_LETTER, dead)
    pipe.xack(dead["source_stream"], group, dead["entry_id"])
    pipe.execute()
