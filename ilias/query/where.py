"""The query option language: ``--where`` clauses into a store filter, ``--bbox`` boxes.

A library function rather than CLI code, so that a script, the HTTP service and the CLI
read the same clauses the same way. Grammar, one clause per string, all clauses ANDed::

    key=value        equality; true/false become booleans, 3 an int, 0.5 a float
    key=a|b|c        any of the values
    key>=x  key<=x   inclusive numeric bounds (x a number)
    key>x   key<x    strict numeric bounds

Clauses on one key combine as AND: bounds narrow one ``Range``, equalities intersect (a
point holds one value, so ``role=positive`` and ``role=query`` can never both hold and are
refused rather than silently matching nothing). Imports nothing heavy: ``ilias.types`` and
``ilias.errors`` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ilias.errors import IliasError
from ilias.types import Range

Scalar = str | int | float | bool

_CLAUSE = re.compile(r"^(?P<key>[^<>=]*)(?P<op>>=|<=|>|<|=)(?P<value>.*)$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BOUNDS = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
_SYNTAX = "use key=value, key=a|b, key>=x, key<=x, key>x or key<x"


class WhereError(IliasError):
    """A ``--where`` clause that cannot be read; the message names the clause."""


def parse_where(clauses: Sequence[str] | None) -> dict[str, Any] | None:
    """Clauses into a store filter (``{key: value | [values] | Range}``); None for none.

    >>> parse_where(["role=positive", "scale>=0.1", "scale<0.5"])
    {'role': 'positive', 'scale': Range(gte=0.1, lte=None, gt=None, lt=0.5)}
    """
    if not clauses:
        return None
    allowed: dict[str, list[Scalar]] = {}  # key -> values still allowed (AND = intersection)
    ranges: dict[str, Range] = {}
    for clause in clauses:
        key, op, value = _split(clause)
        if op == "=":
            values = _values(clause, value)
            if key in ranges:
                raise _mixed(key)
            if key in allowed:
                values = [v for v in allowed[key] if any(_same(v, w) for w in values)]
                if not values:
                    raise WhereError(
                        f"--where: no point matches every clause on {key!r} (a point holds "
                        "one value); use key=a|b to accept any of several values"
                    )
            allowed[key] = values
        else:
            if key in allowed:
                raise _mixed(key)
            ranges[key] = _narrow(ranges.get(key, Range()), _BOUNDS[op], _number(clause, value))
    out: dict[str, Any] = {}
    for clause in clauses:  # keys in the order they were first given
        key = _split(clause)[0]
        if key in out:
            continue
        if key in ranges:
            out[key] = ranges[key]
        else:
            values = allowed[key]
            out[key] = values if len(values) > 1 else values[0]
    return out


def _split(clause: str) -> tuple[str, str, str]:
    match = _CLAUSE.match(clause)
    if match is None:
        raise WhereError(f"cannot read --where {clause!r}: {_SYNTAX}")
    key, op, value = match["key"].strip(), match["op"], match["value"].strip()
    if not key:
        raise WhereError(f"--where {clause!r}: the key is empty; write {_SYNTAX}")
    if not value:
        raise WhereError(f"--where {clause!r}: the value is empty; write {_SYNTAX}")
    if any(c in value for c in "<>") or (op != "=" and "=" in value):
        raise WhereError(f"--where {clause!r}: one operator per clause; {_SYNTAX}")
    return key, op, value


def _values(clause: str, value: str) -> list[Scalar]:
    parts = [part.strip() for part in value.split("|")]
    if any(not part for part in parts):
        raise WhereError(f"--where {clause!r}: an empty alternative in a|b; remove the extra '|'")
    values: list[Scalar] = []
    for part in parts:
        scalar = _scalar(clause, part)
        if not any(_same(scalar, seen) for seen in values):
            values.append(scalar)
    return values


def _scalar(clause: str, text: str) -> Scalar:
    """``true``/``false`` -> bool, ``3`` -> int, ``0.5``/``1e-3`` -> float, else the text.

    Numbers must be what a payload can hold: a 64-bit integer, a finite float64 (``1e999``
    or a 401-digit integer would otherwise reach the engine as inf or overflow it)."""
    if text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if _INT.match(text):
        number = int(text) if len(text.lstrip("+-")) <= 20 else _INT64_MAX + 1
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise WhereError(
                f"--where {clause[:60]!r}: {text[:40]!r} is beyond a 64-bit integer "
                f"({_INT64_MIN:,} to {_INT64_MAX:,}); give a smaller number"
            )
        return number
    if _FLOAT.match(text):
        return _finite(clause, text)
    return text


def _finite(clause: str, text: str) -> float:
    """A float that float64 holds (``1e999`` is refused rather than read as inf)."""
    number = float(text)
    if not math.isfinite(number):
        raise WhereError(
            f"--where {clause[:60]!r}: {text[:40]!r} is beyond a float64 number; give a smaller one"
        )
    return number


def _same(a: Scalar, b: Scalar) -> bool:
    """Equal values of the same kind (``True == 1`` in Python, but not for a filter)."""
    return type(a) is type(b) and a == b


def _number(clause: str, value: str) -> float:
    if not (_INT.match(value) or _FLOAT.match(value)):
        raise WhereError(f"--where {clause!r}: {value!r} is not a number")
    return _finite(clause, value)


def _narrow(current: Range, bound: str, number: float) -> Range:
    """AND a bound into a range: of two lower bounds the higher holds, and so on."""
    previous = getattr(current, bound)
    if previous is not None:
        number = max(previous, number) if bound in ("gte", "gt") else min(previous, number)
    return replace(current, **{bound: number})


def _mixed(key: str) -> WhereError:
    return WhereError(
        f"--where: {key!r} has both a value (=) and a bound (<, >); give one or the other"
    )


__all__ = ["WhereError", "parse_where"]


def parse_bbox(text: str | None) -> list[int] | None:
    """``'x,y,w,h'`` (a query's box, ILIAS's ``x y w h`` order) into four integers.

    The corner is inside the image's quadrant (x, y >= 0) and the box has an area (w, h > 0);
    anything else is refused naming the option.
    """
    if text is None:
        return None
    parts = [p.strip() for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        box = [int(p) for p in parts]
    except ValueError:
        box = []
    if len(box) != 4:
        raise IliasError(f"--bbox {text!r}: give four integers, x,y,w,h")
    x, y, w, h = box
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise IliasError(f"--bbox {text!r}: x and y must be >= 0, w and h > 0")
    return box
