"""Brace patterns (``yfcc100m/{00000..00049}.tar``), counted and expanded lazily.

The syntax is the one WebDataset and the reference use (the ``braceexpand`` package's):
integer ranges with zero padding and an optional step (``{00..10..2}``), letter ranges
(``{a..e}``), alternatives (``{a,b,c}``), nesting, and backslash escapes. ``braceexpand``
itself hands its parts to ``itertools.product``, which first turns every part into a
tuple: ``{00000..99999999}`` built 100 million names (14.8 GB) before the first one came
out. Here a pattern is parsed into a small tree instead, so that

- ``count`` is arithmetic: a range's length, alternatives summed, parts multiplied, for
  any size, without building a name;
- ``expand`` yields the names one at a time, in ``braceexpand``'s order, holding only the
  current one.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

from ilias.errors import DatasetError

_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")
_ESCAPE = re.compile(r"\\(.)")
_ALPHABET = string.ascii_uppercase + string.ascii_lowercase


@dataclass(frozen=True)
class _Range:
    """An integer range, printed with ``width`` digits (0: as is)."""

    values: range
    width: int

    def names(self) -> Iterator[str]:
        return (f"{i:0{self.width}d}" for i in self.values)


@dataclass(frozen=True)
class _Choice:
    """Alternatives, each a pattern; a letter range is alternatives of one letter each."""

    options: tuple[_Pattern, ...]


# A pattern is a sequence of parts, each a literal, a range or a choice.
_Part = str | _Range | _Choice
_Pattern = tuple[_Part, ...]


def has_braces(text: str) -> bool:
    return "{" in text


def parse(text: str) -> _Pattern:
    """The pattern's tree; unbalanced braces are one line naming the pattern."""
    try:
        return _pattern(text)
    except ValueError as error:
        raise DatasetError(f"{text}: {error}; check the braces of the pattern") from None


def count(text: str) -> int:
    """How many names ``text`` expands to, without expanding it."""
    return _count(parse(text))


def expand(text: str) -> Iterator[str]:
    """The names ``text`` expands to, one at a time, in ``braceexpand``'s order."""
    for name in _expand(parse(text), 0):
        yield _ESCAPE.sub(r"\1", name)


def _count(pattern: _Pattern) -> int:
    return math.prod(_count_part(part) for part in pattern)


def _count_part(part: _Part) -> int:
    if isinstance(part, str):
        return 1
    if isinstance(part, _Range):
        return len(part.values)
    return sum(_count(option) for option in part.options)


def _expand(pattern: _Pattern, start: int) -> Iterator[str]:
    if start == len(pattern):
        yield ""
        return
    for head in _names(pattern[start]):
        for tail in _expand(pattern, start + 1):
            yield head + tail


def _names(part: _Part) -> Iterator[str]:
    if isinstance(part, str):
        yield part
    elif isinstance(part, _Range):
        yield from part.names()
    else:
        for option in part.options:
            yield from _expand(option, 0)


def _pattern(text: str) -> _Pattern:
    """Literals and ``{...}`` expressions at depth 0, as ``braceexpand.parse_pattern``."""
    parts: list[_Part] = []
    start = depth = position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            if depth == 0 and position > start:
                parts.append(text[start:position])
                start = position
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                expression = text[start + 1 : position]
                part = _expression(expression)
                if part is None:  # braces around no range or list: kept as written
                    parts.extend(["{", *_pattern(expression), "}"])
                else:
                    parts.append(part)
                start = position + 1
        position += 1
    if depth != 0:
        raise ValueError("unbalanced braces")
    if start < position:
        parts.append(text[start:])
    return tuple(parts)


def _expression(text: str) -> _Part | None:
    found = _INT_RANGE.match(text)
    if found:
        return _int_range(*found.groups())
    found = _CHAR_RANGE.match(text)
    if found:
        return _char_range(*found.groups())
    return _sequence(text)


def _int_range(first: str, last: str, step: str | None) -> _Range:
    padded = any(s.startswith(("0", "-0")) for s in (first, last) if s not in ("0", "-0"))
    width = max(len(first), len(last)) if padded else 0
    stride = (int(step) or 1) if step else 1
    a, b = int(first), int(last)
    values = range(a, b + 1, stride) if a < b else range(a, b - 1, -stride)
    return _Range(values, width)


def _char_range(first: str, last: str, step: str | None) -> _Choice:
    stride = (int(step) or 1) if step else 1
    a, b = _ALPHABET.index(first), _ALPHABET.index(last)
    if a < b:
        letters = _ALPHABET[a : b + 1 : stride]
    else:
        letters = _ALPHABET[a : (b or -len(_ALPHABET)) - 1 : -stride]
    return _Choice(tuple((letter,) for letter in letters))


def _sequence(text: str) -> _Choice | None:
    """``a,b,{c,d}``: alternatives split at depth-0 commas; None without a comma."""
    options: list[_Pattern] = []
    start = depth = position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            options.append(_pattern(text[start:position]))
            start = position + 1
        position += 1
    if depth != 0 or not options:
        return None
    options.append(_pattern(text[start:]))
    return _Choice(tuple(options))
