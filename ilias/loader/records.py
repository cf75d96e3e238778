"""The unit every stage passes around: a lazy record of one image (or one text query)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class Role(StrEnum):
    """What an image is in a benchmark; stored in the payload and used in filters."""

    QUERY = "query"
    POSITIVE = "positive"
    DISTRACTOR = "distractor"
    IMAGE = "image"  # a plain collection with no benchmark roles


@dataclass(frozen=True)
class Record:
    """One image known by its dataset id; no pixels until the extractor decodes ``source``.

    ``id`` is the dataset's own id (ILIAS: ``<instance>/pos/P000.jpg``), stable across
    machines, so Qdrant point ids derive from it. ``payload`` is what the loader knows
    (instance, role, bbox, ...) and is stored with the point.
    """

    id: str
    source: Path | bytes | str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextQuery:
    """An ILIAS text query: the whole contents of a ``T*.txt`` file, no template."""

    id: str
    text: str
    instance: str
