"""A request's filter: ``where`` clauses (the --where language) and a structured JSON filter,
read into the one store filter the library takes. Mistakes are one-line 400s.

Every value is checked for what a payload filter can hold before it reaches the engine:
integers within 64 bits, finite float64 bounds (JSON's ``NaN`` and ``Infinity``, which
Python's parser accepts, would panic the engine), valid Unicode, bounded sizes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ilias.query.where import parse_where
from ilias.serve.errors import ServiceError
from ilias.serve.schemas import MAX_CLAUSE_CHARS, MAX_CLAUSES, clean_text
from ilias.types import Filter, Range

_BOUNDS = ("gte", "lte", "gt", "lt")
_INT64 = (-(2**63), 2**63 - 1)
MAX_VALUES = 1024  # values in one key's list: a filter, not a list of ids to fetch


def request_filter(where: Sequence[str], structured: Mapping[str, Any] | None) -> Filter | None:
    """``where`` clauses ANDed with ``{key: value | [values] | {gte, lte, gt, lt}}``."""
    combined: dict[str, Any] = dict(parse_where(list(where)) or {})
    if structured and len(structured) > MAX_CLAUSES:
        raise ServiceError(f"filter: {len(structured)} keys; give at most {MAX_CLAUSES}")
    for key, value in (structured or {}).items():
        if not key:
            raise ServiceError("filter: a key is empty; name the payload field")
        _text("filter key", key)
        if key in combined:
            raise ServiceError(f"filter: {key!r} is in both where and filter; give it once")
        combined[key] = _value(key, value)
    return combined or None


def _value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_BOUNDS))
        if unknown or not value:
            shown = [str(u)[:40] for u in unknown] or "none"
            raise ServiceError(f"filter: {key}: a range takes gte, lte, gt, lt (got {shown})")
        return Range(**{bound: _bound(key, bound, number) for bound, number in value.items()})
    if isinstance(value, list):
        if not value or len(value) > MAX_VALUES or not all(_scalar(v) for v in value):
            raise ServiceError(f"filter: {key}: a list holds 1 to {MAX_VALUES} strings or numbers")
        return [_checked(key, v) for v in value]
    if not _scalar(value):
        raise ServiceError(f"filter: {key}: give a value, a list of values or a range")
    return _checked(key, value)


def _bound(key: str, bound: str, number: Any) -> float:
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ServiceError(f"filter: {key}.{bound} must be a number, not {str(number)[:40]!r}")
    try:
        value = float(number)
    except OverflowError:  # an integer of hundreds of digits
        value = math.inf
    if not math.isfinite(value):
        raise ServiceError(
            f"filter: {key}.{bound} must be a finite number within float64, not {str(number)[:40]}"
        )
    return value


def _checked(
    key: str, value: str | int | float | bool, what: str = "filter"
) -> str | int | float | bool:
    """A value the engine can hold: a 64-bit integer, a finite float, valid text."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
        raise ServiceError(
            f"{what}: {key}: {str(value)[:40]} is beyond a 64-bit integer; give a smaller one"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise ServiceError(f"{what}: {key}: {value} is not a finite number")
    if isinstance(value, str):
        _text(f"{what}: {key}", value, MAX_CLAUSE_CHARS if what == "filter" else MAX_PAYLOAD_TEXT)
    return value


MAX_PAYLOAD_DEPTH = 8  # objects and lists inside a stored payload
MAX_PAYLOAD_ITEMS = 1024  # keys plus list items in one payload
MAX_PAYLOAD_TEXT = 65_536  # characters in one payload string (a caption, a description)


def check_payload(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A payload a client sends to be stored (a write): JSON the engine can hold, with the
    limits a filter value has (64-bit integers, finite floats, valid text) at every level,
    at most ``MAX_PAYLOAD_DEPTH`` deep and ``MAX_PAYLOAD_ITEMS`` entries in all."""
    count = [0]

    def walk(where: str, value: Any, depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_PAYLOAD_ITEMS:
            raise ServiceError(f"payload: more than {MAX_PAYLOAD_ITEMS} entries; send fewer")
        if depth > MAX_PAYLOAD_DEPTH:
            raise ServiceError(f"payload: nested deeper than {MAX_PAYLOAD_DEPTH}; send it flatter")
        if isinstance(value, dict):
            for key in value:
                _text(f"payload key at {where or 'top'}", key)
            return {k: walk(f"{where}.{k}".strip("."), v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(f"{where}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        if value is None or _scalar(value):
            return value if value is None else _checked(where or "value", value, "payload")
        raise ServiceError(f"payload: {where}: give JSON values only")  # pragma: no cover

    return walk("", dict(payload), 0)


def _text(what: str, value: str, limit: int = MAX_CLAUSE_CHARS) -> None:
    if len(value) > limit:
        raise ServiceError(f"{what}: longer than {limit:,} characters")
    try:
        clean_text(value)
    except ValueError as error:
        raise ServiceError(f"{what} {value[:40]!r}: {error}") from None


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)
