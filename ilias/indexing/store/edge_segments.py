"""The stored vectors of a built Qdrant Edge collection, read from its own segment files.

Why: exact evaluation ranks every query against every stored vector, and the fastest way
to get them out of the engine is the engine's own memory-mapped matrix. The binding hands
vectors over as Python lists of floats (about 20 ns a component to build and convert: 20 s
per 1M x 512, as long as the matrix products themselves), while the segment file is the
array already, float32 or float16 as the layout keeps it. Nothing is copied to a second
store: blocks of rows are read from the page cache and converted to float32 one block at a
time.

What is read, for each sealed (immutable) segment of the shard, with Qdrant Edge 0.9's
file layout (``qdrant-edge-py`` is pinned):

- ``id_tracker.mappings``: a u64 count, then per point a kind byte (1: UUID), the 16 bytes
  of the UUID and the u32 internal offset;
- ``vector_storage-global/matrix.dat``: the magic ``data``, then one row per internal
  offset, float32 or float16 (``segment.json`` says which), already normalised (cosine);
- ``id_tracker.deleted`` and ``vector_storage-global/deleted.dat`` (after an 8-byte
  header): bit sets of removed points.

Every assumption is checked (magic, sizes, counts, UUID kinds, no removed points, the live
total equal to the engine's exact count, and the dataset ids read through the engine in
its own id order matching these UUIDs); when one fails ``read_segments`` returns None and
the caller streams through the engine's scroll instead (slower, same rows). Leaf module:
numpy only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_MAGIC = b"data"
_UUID_ENTRY = 1 + 16 + 4  # kind byte, UUID, internal offset
_UUID_KIND = 1
_DELETED_HEADER = 8  # vector storage deleted flags: magic "drop" and 4 bytes, then bits


@dataclass(frozen=True)
class SegmentVectors:
    """One sealed segment: its rows (memory-mapped) and the UUID of each row."""

    path: Path
    rows: np.ndarray  # (points, dim) float32 or float16, memory-mapped, row = internal offset
    uuids: np.ndarray  # (points, 16) uint8, big-endian UUID bytes of each row


def read_segments(shard_dir: Path, vector: str, dim: int) -> list[SegmentVectors] | None:
    """The sealed segments of a shard, or None where the files are not what is expected.

    Segments without live points (the empty appendable segment a build leaves) are
    skipped only if they hold no id mappings; the caller compares the total with the
    engine's count, which catches points left in an appendable segment.
    """
    found: list[SegmentVectors] = []
    for segment in sorted((shard_dir / "segments").glob("*")):
        if not segment.is_dir():
            continue
        mappings = segment / "id_tracker.mappings"
        matrix = segment / f"vector_storage-{vector}" / "matrix.dat"
        if not mappings.is_file() and not matrix.is_file():
            continue  # appendable: checked by the count
        try:
            part = _read_segment(segment, mappings, matrix, vector, dim)
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.info("segment %s not read directly (%s): streaming through the engine",
                        segment, error)  # fmt: skip
            return None
        if part is None:
            return None
        found.append(part)
    return found


def _read_segment(
    segment: Path, mappings: Path, matrix: Path, vector: str, dim: int
) -> SegmentVectors | None:
    config = json.loads((segment / "segment.json").read_text())["config"]["vector_data"][vector]
    if int(config["size"]) != dim:
        return None
    dtype = {"float32": np.float32, "float16": np.float16}.get(config.get("datatype") or "float32")
    if dtype is None:
        return None
    raw = np.fromfile(mappings, dtype=np.uint8)
    if len(raw) < 8:
        return None
    points = int(raw[:8].view("<u8")[0])
    if len(raw) != 8 + points * _UUID_ENTRY:
        return None  # numeric point ids (entries of another size): not an ilias collection
    entries = raw[8:].reshape(points, _UUID_ENTRY)
    if points and not (entries[:, 0] == _UUID_KIND).all():
        return None
    internal = entries[:, 17:21].copy().view("<u4").ravel()
    with matrix.open("rb") as handle:
        if handle.read(4) != _MAGIC:
            return None
    itemsize = np.dtype(dtype).itemsize
    if matrix.stat().st_size != 4 + points * dim * itemsize:
        return None
    if not _all_clear(segment / "id_tracker.deleted", 0) or not _all_clear(
        segment / f"vector_storage-{vector}" / "deleted.dat", _DELETED_HEADER
    ):
        return None  # removed points: the engine's scroll knows which
    uuids = np.empty((points, 16), dtype=np.uint8)
    if points:
        if internal.min() < 0 or internal.max() >= points or len(np.unique(internal)) != points:
            return None
        uuids[internal] = entries[:, 1:17]
    rows = (
        np.memmap(matrix, dtype=dtype, mode="r", offset=4, shape=(points, dim))
        if points
        else np.zeros((0, dim), dtype)
    )
    return SegmentVectors(segment, rows, uuids)


def segment_points(segment: Path) -> int:
    """The points a sealed segment maps (the count at the head of its id mappings)."""
    with (segment / "id_tracker.mappings").open("rb") as handle:
        head = handle.read(8)
    return int.from_bytes(head, "little") if len(head) == 8 else 0


def _all_clear(path: Path, header: int) -> bool:
    """No bit set after ``header`` bytes (a missing file: nothing removed)."""
    if not path.is_file():
        return True
    bits = np.fromfile(path, dtype=np.uint8)[header:]
    return not bits.any()


def uuid_order(segments: list[SegmentVectors]) -> list[np.ndarray]:
    """For each segment, the position of each of its rows in the engine's id order (UUIDs
    ascending as 128-bit numbers: the order of a scroll), over all segments together."""
    if not segments:
        return []
    every = np.concatenate([s.uuids for s in segments]) if segments else np.zeros((0, 16))
    words = every.view(">u8").reshape(-1, 2)
    order = np.lexsort((words[:, 1], words[:, 0]))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    out, start = [], 0
    for segment in segments:
        out.append(position[start : start + len(segment.uuids)])
        start += len(segment.uuids)
    return out


def sorted_uuids(segments: list[SegmentVectors], positions: list[np.ndarray]) -> np.ndarray:
    """All rows' UUID bytes in the engine's id order: row ``p`` is the ``p``-th point a
    scroll returns (used to check that order against the engine)."""
    total = sum(len(s.uuids) for s in segments)
    out = np.empty((total, 16), dtype=np.uint8)
    for segment, position in zip(segments, positions, strict=True):
        out[position] = segment.uuids
    return out
