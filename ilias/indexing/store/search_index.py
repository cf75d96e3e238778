"""How a collection is searched: an HNSW graph, or a parallel scan of its int8 copies.

Every collection keeps int8 copies of its vectors in RAM and re-scores a shortlist with
the originals. What finds the shortlist is the choice made here, once, at creation:

- ``hnsw``: an HNSW graph (m, ef_construct) walked from the query. Cost grows slowly with
  the collection; recall of a top 1000 depends on the data. On ``bench/search.py``'s hard
  data (1M x 512, a top 1000 whose tail is near-random) the graph finds 57 % of the true
  top 1000 (m=16; m=32 with ef_construct=256 and oversampling 4: 90 % at 2.0x numpy).
- ``scan``: no graph (Qdrant ``m=0``). A query scores every int8 copy, one segment per
  core in parallel, and re-scores each segment's best with the originals. Cost is linear
  (a quarter of the float32 bytes), recall is that of int8 plus re-scoring: 1.000 there,
  at 2.50x, 2.54x and 2.66x the speed of numpy's float32 brute force in three runs of
  ``python bench/search.py --n 1000000 --dim 512 --skip-demo --index auto`` (2026-12-02;
  2.07x in a fourth run of the same command before hits were made one object each, see
  ``engine.hits_of``: 1,000 points become hits in 0.75 ms instead of 3.1). What is left
  is the engine's own scan: warm, ``store.search`` takes within 1 ms of the engine call
  plus ``hits_of``. Building costs only the int8 copies (seconds vs 3-5 min).
- ``auto`` (the default): ``scan`` while the int8 copies are at most ``SCAN_LIMIT`` bytes
  (1 GiB: 2M x 512, 1M x 1024; a top-1000 query over 1M x 512 takes 36-39 ms on these 2
  cores, where numpy's brute force takes 90-103 ms), ``hnsw`` beyond, or when the size is
  not known (a collection that grows by incremental loads).
- Measured and not taken: 4-bit TurboQuant copies (Qdrant >= 1.18) scan faster, 26 ms vs
  int8's 37 ms at 1M x 512 on the raw engine in one run (recall 0.999; 1.000 with
  oversampling 1.5), at the price of leaving the design's int8 scalar quantization.

Why a collection-level choice: Qdrant picks plain (scan) search per segment only when the
segment has no graph or a filter is selective, and its ``exact`` search ignores the int8
copies (it scans float32, 0.6x numpy here), so "scan the int8 copies" is only reachable
through ``m=0``. A leaf module (no numpy, no engine) shared by the engines and the store.
"""

from __future__ import annotations

import math
import os

from ilias.errors import StoreError

INDEX_KINDS = ("hnsw", "scan")
INDEX_CHOICES = ("auto", *INDEX_KINDS)
DEFAULT_INDEX = "hnsw"  # what a collection stored without an index setting has
# ``auto`` scans while the int8 copies (dim + 4 bytes per point) fit in this many bytes.
SCAN_LIMIT = 1 << 30
# A scanned collection is cut into one segment per core once its int8 copies reach this
# size; below it one segment is scanned in a few milliseconds anyway.
SCAN_SPLIT = 32 << 20
# More segments than this stop paying: each adds a re-scored shortlist and a merge.
MAX_SCAN_SEGMENTS = 16


def check_index(value: str | None, option: str = "index") -> str | None:
    """``value`` if it names an index kind or ``auto`` (None: ``auto``); else one line."""
    if value is None or value in INDEX_CHOICES:
        return value
    raise StoreError(f"{option} {value!r}: use {', '.join(INDEX_CHOICES)}")


def int8_bytes(points: int, dim: int) -> int:
    """Bytes of the int8 copies of ``points`` vectors (one byte a component, a float more)."""
    return points * (dim + 4)


def resolve_index(index: str | None, *, dim: int, expected_points: int | None) -> str:
    """The index kind a collection is created with (``auto``/None: by size, see above)."""
    check_index(index)
    if index in INDEX_KINDS:
        return index
    if not expected_points:
        return "hnsw"
    return "scan" if int8_bytes(expected_points, dim) <= SCAN_LIMIT else "hnsw"


def scan_segments(points: int, dim: int, cores: int | None = None) -> int:
    """How many segments a scanned collection of ``points`` is cut into: one per core
    (at least two), or one while it is small (``SCAN_SPLIT``)."""
    if int8_bytes(points, dim) < SCAN_SPLIT:
        return 1
    cores = cores if cores is not None else (os.cpu_count() or 2)
    return max(2, min(cores, MAX_SCAN_SEGMENTS, math.ceil(points / 1000)))
