"""Field names are exact: a near miss of a known field, or a field and its alias that disagree, is an error.

Unknown fields are ignored (producers add their own), so a misspelled known field would otherwise be
dropped without a word: `reduceonly true` read as an open. A near miss differs from a field's name or
alias only by case or punctuation (`ReduceOnly`, `reduce-only`, `planId`, a trailing space).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

_NOT_LETTER_OR_DIGIT = re.compile(r"[^0-9a-z]")


def canonical(name: str) -> str:
    """A name with case and punctuation dropped: what a typo of it still has in common with it."""
    return _NOT_LETTER_OR_DIGIT.sub("", name.lower())


@cache
def spellings(model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Each field's exact spellings (its alias first, as written, then its name)."""
    return {name: tuple(dict.fromkeys(s for s in (info.alias, name) if s)) for name, info in model.model_fields.items()}


@cache
def _by_canonical(model: type[BaseModel]) -> dict[str, str]:
    """canonical form -> the spelling to use (the alias where there is one, as to_fields writes it)."""
    return {canonical(spelling): names[0] for names in spellings(model).values() for spelling in names}


@cache
def _exact(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(spelling for names in spellings(model).values() for spelling in names)


@cache
def _aliased(model: type[BaseModel]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The fields that have two spellings: only they can be given twice."""
    return tuple((field, names) for field, names in spellings(model).items() if len(names) > 1)


@cache
def _adapter(model: type[BaseModel], field: str) -> TypeAdapter:
    return TypeAdapter(model.model_fields[field].rebuild_annotation())


def near_misses(model: type[BaseModel], document: Mapping[str, Any],
                wire_names: tuple[str, ...] = ()) -> dict[str, str]:
    """Keys that are not a field (or one of `wire_names`) but would be one but for case or punctuation."""
    exact = _exact(model)
    if exact.issuperset(document):  # every key a field's exact spelling: the usual entry, nothing to compare
        return {}
    exact = exact | frozenset(wire_names)
    known = {**{canonical(name): name for name in wire_names}, **_by_canonical(model)}
    missed = {}
    for key in document:
        meant = known.get(canonical(key)) if key not in exact else None
        if meant is not None:
            missed[key] = f"not a field name; write it exactly {meant!r}"
    return missed


def alias_conflicts(model: type[BaseModel], document: Mapping[str, Any]) -> dict[str, str]:
    """Fields given under both their alias and their name with values that differ."""
    conflicts = {}
    for field, names in _aliased(model):
        given = [name for name in names if name in document]
        if len(given) > 1 and not _same_value(model, field, document[given[0]], document[given[1]]):
            conflicts[given[1]] = f"disagrees with {given[0]}; give one of them"
    return conflicts


def _same_value(model: type[BaseModel], field: str, first: Any, second: Any) -> bool:
    """Equal once parsed ("false" and "0" agree); a value that does not parse must be the same text."""
    try:
        adapter = _adapter(model, field)
        return adapter.validate_python(first) == adapter.validate_python(second)
    except ValidationError:
        return str(first).strip().lower() == str(second).strip().lower()
