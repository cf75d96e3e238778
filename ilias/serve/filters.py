"""A request's filter: ``where`` clauses (the --where language) and a structured JSON filter,
read into the one store filter the library takes. Mistakes are one-line 400s."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ilias.query.where import parse_where
from ilias.serve.errors import ServiceError
from ilias.types import Filter, Range

_BOUNDS = ("gte", "lte", "gt", "lt")


def request_filter(where: Sequence[str], structured: Mapping[str, Any] | None) -> Filter | None:
    """``where`` clauses ANDed with ``{key: value | [values] | {gte, lte, gt, lt}}``."""
    combined: dict[str, Any] = dict(parse_where(list(where)) or {})
    for key, value in (structured or {}).items():
        if not key:
            raise ServiceError("filter: a key is empty; name the payload field")
        if key in combined:
            raise ServiceError(f"filter: {key!r} is in both where and filter; give it once")
        combined[key] = _value(key, value)
    return combined or None


def _value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(_BOUNDS))
        if unknown or not value:
            raise ServiceError(
                f"filter: {key}: a range takes gte, lte, gt, lt (got {sorted(value) or 'none'})"
            )
        bounds = {}
        for bound, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ServiceError(f"filter: {key}.{bound} must be a number, not {number!r}")
            bounds[bound] = float(number)
        return Range(**bounds)
    if isinstance(value, list):
        if not value or not all(_scalar(v) for v in value):
            raise ServiceError(f"filter: {key}: a list holds one or more strings or numbers")
        return value
    if not _scalar(value):
        raise ServiceError(f"filter: {key}: give a value, a list of values or a range")
    return value


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)
