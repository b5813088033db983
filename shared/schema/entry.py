"""The base of every stream schema: parse flat string fields or one JSON field, write flat fields.

`redis-cli XADD` sends flat string fields; producers that serialise objects send one JSON
field named plan_data, payload or data. Both forms parse to the same model. Field names are exact
(shared.schema.spelling): a near miss of a known field is refused, not ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from enum import Enum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from shared.schema.fields import format_decimal
from shared.schema.spelling import alias_conflicts, near_misses

JSON_FIELDS = ("plan_data", "payload", "data")
# Flat fields an event bus writes about the message beside its JSON payload (when it was published, by whom): they
# may differ from the payload's own and are not a conflict, and they are not the payload's (found in review: the bus's
# publish time filled in an intent's missing timestamp, so the same intent published twice became two plans). Anything
# else that disagrees with the payload is a conflict.
ENVELOPE_FIELDS = frozenset({"timestamp", "source", "event_type", "correlation_id", "trace_id"})
MAX_ENTRY_BYTES = 64 * 1024


class EntryError(ValueError):
    """An entry that cannot become a model. `fields` names what was wrong."""

    def __init__(self, reason: str, fields: Mapping[str, str]):
        self.reason = reason
        self.fields = dict(fields)
        named = "; ".join(f"{name}: {why}" for name, why in self.fields.items())
        super().__init__(f"{reason}: {named}" if named else reason)


def decode_fields(raw: Mapping[Any, Any]) -> dict[str, str]:
    """Stream fields as str -> str, whatever the client's decode setting (text passes as it is, inline: this
    runs for every entry of every daemon)."""
    return {(key if key.__class__ is str else _text(key)): (value if value.__class__ is str else _text(value))
            for key, value in raw.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _unfold_json(fields: dict[str, str]) -> dict[str, Any]:
    json_names = [name for name in JSON_FIELDS if name in fields]
    if not json_names:
        return dict(fields)
    if len(json_names) > 1:
        raise EntryError("ambiguous_json", {name: "only one JSON field is allowed" for name in json_names})
    name = json_names[0]
    try:
        document = json.loads(fields[name], parse_float=Decimal, object_pairs_hook=_object_without_repeats)
    except EntryError:
        raise
    # ValueError: JSONDecodeError, or an integer past 4300 digits; ArithmeticError: a float Decimal cannot hold
    # (1.5e99999999999999999999999 raises InvalidOperation, found in review: it crashed the executor's give-up)
    except (ValueError, RecursionError, ArithmeticError) as exc:
        raise EntryError("invalid_json", {name: f"not valid JSON ({exc.__class__.__name__})"}) from None
    if not isinstance(document, dict):
        raise EntryError("invalid_json", {name: "must be a JSON object"})
    return _merge_flat(fields, name, document)


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it names a key twice with different values (plain json.loads keeps the last, as
    a flat entry's repeated field would be: that is refused as duplicate_field, and so is this)."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document and document[key] != value:
            raise EntryError("duplicate_field", {key: "given twice with different values"})
        document[key] = value
    return document


def _merge_flat(fields: dict[str, str], json_name: str, document: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = dict(document)
    for key, value in fields.items():
        if key == json_name:
            continue
        if key in ENVELOPE_FIELDS:
            continue  # an event bus's own metadata beside the payload: about the message, not part of what it says
        if key in merged and _text(merged[key]).lower() != value.lower():
            raise EntryError("conflicting_fields", {key: f"flat value {value!r:.40} disagrees with {json_name}"})
        merged.setdefault(key, value)
    return merged


def _check_names(model: type[BaseModel], document: Mapping[str, Any]) -> None:
    """A misspelled known field would be dropped as an unknown one: refuse it, naming the key as sent."""
    missed = near_misses(model, document, JSON_FIELDS)
    if missed:
        raise EntryError("misspelled_field", missed)
    conflicts = alias_conflicts(model, document)
    if conflicts:
        raise EntryError("conflicting_fields", conflicts)


def _error_fields(exc: ValidationError) -> dict[str, str]:
    named: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in error["loc"]) or "entry"
        named.setdefault(location, error["msg"])
    return named


def _flat_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_default, sort_keys=True)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_decimal(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(value: Any) -> str:
    """Compact JSON with decimals as exact strings."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), sort_keys=True)


class EntryModel(BaseModel):
    """A stream entry. Unknown extra fields are ignored; wrong or misspelled known fields are errors."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    @classmethod
    def from_fields(cls, raw: Mapping[Any, Any]) -> Self:
        fields = decode_fields(raw)
        size = sum(map(len, fields)) + sum(map(len, fields.values()))
        if size > MAX_ENTRY_BYTES:
            raise EntryError("oversized_entry", {"entry": f"{size} bytes exceeds {MAX_ENTRY_BYTES}"})
        document = _unfold_json(fields)
        _check_names(cls, document)
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise EntryError("validation_error", _error_fields(exc)) from None

    def to_fields(self) -> dict[str, str]:
        """Flat string fields, as an operator reads them with XRANGE."""
        dumped = self.model_dump(by_alias=True, exclude_none=True)
        return {key: _flat_value(value) for key, value in dumped.items()}
