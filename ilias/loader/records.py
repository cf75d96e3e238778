"""The unit every stage passes around: a lazy record of one image (or one text query)."""

from __future__ import annotations

import os
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


FILE_STAMP = "file_stamp"  # payload: "<size>:<mtime_ns>" of the file a point was made from


def file_stamp(source: Path | bytes | str) -> str | None:
    """``"<bytes>:<mtime_ns>"`` of a file source, None for bytes or a file that is gone.

    Stored with each point so that a reload re-extracts a file replaced at the same path
    (size or modification time changed) instead of keeping its old vector. Cheap: a stat,
    no read.
    """
    if not isinstance(source, str | Path):
        return None
    try:
        stat = os.stat(source)
    except (OSError, ValueError):  # gone, unreadable, or not a local path (a URL)
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"
