"""Where a collection's parts live: one storage switch, its presets, and the rule for ``auto``.

A collection holds three big things per point: the originals (the vectors as loaded, read
to re-score candidates and by exact search), the int8 quantized copies (what HNSW search
scores) and the HNSW graph. At mini-ILIAS scale (5M x 1024) the float32 originals alone
are 20 GB, more than a 24 GB machine can keep in RAM next to an encoder and a driver. The
presets move the parts that search touches least out of RAM first:

| preset | originals | int8 copies | HNSW graph | payload |
|---|---|---|---|---|
| ``ram`` | float32, in RAM (page cache, preloaded) | RAM | RAM | RAM |
| ``disk`` | float32, on disk (memory-mapped, read on demand) | RAM | RAM | engine default |
| ``compact`` | float16, on disk | RAM | on disk | on disk |

int8 copies stay in RAM in every preset: they are what every HNSW step scores, and they
are a quarter of the float32 bytes. ``disk`` costs a few page reads per query (the
re-scoring of the shortlist reads its originals); ``compact`` halves the disk footprint
and takes the graph out of RAM too, so an HNSW walk may read pages. Exact search with
``ignore_quantization`` scores the originals, so on ``compact`` it scores float16 values:
identical rankings up to float16 rounding (about 1e-3 relative), i.e. except near-ties.

``auto`` is resolved when a collection is created, never stored: see ``resolve_storage``.
This module is a leaf (no numpy, no engine) so that both engines, the store and the CLI
share it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ilias.errors import StoreError
from ilias.indexing.store.search_index import scan_segments

logger = logging.getLogger(__name__)

PRESETS = ("ram", "disk", "compact")  # from most to least resident memory
STORAGE_CHOICES = ("auto", *PRESETS)
DEFAULT_PRESET = "ram"  # what a collection stored without a storage setting has

# ``auto`` keeps the resident part of a collection under this share of the machine's RAM:
# the rest is for the page cache over the on-disk parts, the encoder and the driver.
RAM_SHARE = 0.5
# ...and, where it can, keeps the resident part plus the originals left on disk under this
# share of the RAM: the evaluation's exact search reads every original on each query, and
# originals the page cache cannot hold are read from disk again each time (measured at
# 5M x 1024: float32 on disk 18.7 s a query, float16 on disk, which fit, 0.45 s).
CACHE_SHARE = 0.85
# Per point, besides vectors and graph: the id tracker (point id <-> internal offset,
# version), the keyword index of the dataset id and the other payload indexes. With it the
# derived resident bytes per point at d = 512 (2,948 / 900 / 772 for ram / disk / compact)
# match what opening an Edge collection makes resident, measured between 50k and 200k
# points by bench/scale.py (about 2,870 / 870 / 800 B per point, plus ~0.1 GB fixed).
POINT_OVERHEAD = 256
# Below this many bytes of originals a collection stays in the engine's default segment
# layout; above it, segments are sized (``segment_plan``).
LARGE_COLLECTION = 1 << 30
# A scanned collection's segments hold at most this many points (see segment_plan).
SEAL_POINTS = 1_000_000


@dataclass(frozen=True)
class StorageLayout:
    """Where the parts of a collection live.

    ``None`` means "the engine decides / does not say": the payload placement of ``disk``
    is each engine's default (Edge memory-maps payload; a server store keeps
    its ``payload_on_disk`` option), and an engine that does not report a part (the
    in-process engine keeps no HNSW) reports None for it.
    """

    originals: str | None  # "float32" or "float16"
    originals_on_disk: bool | None
    hnsw_on_disk: bool | None
    payload_on_disk: bool | None = None

    def describe(self, graph: bool = True) -> str:
        """``float16 originals on disk, HNSW on disk, payload on disk`` (``?``: not said);
        ``graph=False`` (a scanned collection) says ``no HNSW graph`` instead."""

        def where(on_disk: bool | None) -> str:
            return "?" if on_disk is None else "on disk" if on_disk else "in RAM"

        parts = [
            f"{self.originals or '?'} originals {where(self.originals_on_disk)}",
            f"HNSW {where(self.hnsw_on_disk)}" if graph else "no HNSW graph",
        ]
        if self.payload_on_disk is not None:
            parts.append(f"payload {where(self.payload_on_disk)}")
        return ", ".join(parts)

    def matches(self, preset: str) -> bool:
        """Every part the engine reported is where ``preset`` puts it."""
        want = LAYOUTS[preset]
        pairs = [
            (self.originals, want.originals),
            (self.originals_on_disk, want.originals_on_disk),
            (self.hnsw_on_disk, want.hnsw_on_disk),
            (self.payload_on_disk, want.payload_on_disk),
        ]
        return all(got is None or asked is None or got == asked for got, asked in pairs)


LAYOUTS: dict[str, StorageLayout] = {
    # Payload in RAM too: a top-1000 answer reads 1000 payloads, and from memory-mapped
    # pages that cost 15-25 ms per query at 1M points (2 ms in RAM; measured on Edge).
    "ram": StorageLayout(
        "float32", originals_on_disk=False, hnsw_on_disk=False, payload_on_disk=False
    ),
    "disk": StorageLayout("float32", originals_on_disk=True, hnsw_on_disk=False),
    "compact": StorageLayout(
        "float16", originals_on_disk=True, hnsw_on_disk=True, payload_on_disk=True
    ),
}


def check_storage(value: str | None, option: str = "storage") -> str | None:
    """``value`` if it names a preset or ``auto`` (None: the store's default); else one line."""
    if value is None or value in STORAGE_CHOICES:
        return value
    raise StoreError(f"{option} {value!r}: use {', '.join(STORAGE_CHOICES)}")


@dataclass(frozen=True)
class PointBytes:
    """Bytes per point of each part (``sizing``), and which of them stay in RAM."""

    originals: int
    int8: int
    hnsw: int
    overhead: int
    resident: int
    disk: int
    exact: int  # what an exact scan touches: the resident part plus originals on disk


def sizing(storage: str, dim: int, m: int = 16, quantization: bool = True) -> PointBytes:
    """Bytes per point of a ``storage`` preset at dimension ``dim`` and HNSW ``m``.

    Originals: 4 bytes per component (2 as float16). int8: 1 byte per component plus a
    float correction. HNSW: layer 0 has up to ``2 m`` links of 4 bytes (upper layers add
    about 1/m of that; Qdrant compresses links on disk, so this is an upper bound). What is
    on disk is everything (the RAM parts are persisted too); what is resident is what the
    preset keeps in RAM.
    """
    layout = LAYOUTS[storage]
    originals = dim * (2 if layout.originals == "float16" else 4)
    int8 = dim + 4 if quantization else 0
    hnsw = 2 * m * 4
    resident = int8 + POINT_OVERHEAD
    resident += 0 if layout.originals_on_disk else originals
    resident += 0 if layout.hnsw_on_disk else hnsw
    return PointBytes(
        originals=originals,
        int8=int8,
        hnsw=hnsw,
        overhead=POINT_OVERHEAD,
        resident=resident,
        disk=originals + int8 + hnsw + POINT_OVERHEAD,
        exact=resident + (originals if layout.originals_on_disk else 0),
    )


def resolve_storage(
    storage: str | None,
    *,
    dim: int,
    expected_points: int | None,
    default: str = DEFAULT_PRESET,
    ram_bytes: int | None = None,
    m: int = 16,
) -> str:
    """The preset a collection is created with; ``auto`` picks one by size.

    ``None`` is the store's ``default`` (``ram``; a server store opened with
    ``on_disk=true`` says ``disk``). ``auto`` picks, among ram, disk, compact (never one
    that keeps more in RAM than ``default``: a store's ``on_disk=true`` is a floor), the
    first whose resident bytes (``sizing``: points x resident bytes per point) fit in
    ``RAM_SHARE`` (half) of this machine's RAM (``ram_bytes``, default
    ``machine_ram_bytes()``) and whose exact-scan working set (resident plus the originals
    left on disk) fits in ``CACHE_SHARE`` of it, so that the evaluation's exact search runs
    from the page cache. If the resident part fits but no working set does, the fitting
    preset with the smallest working set, with a warning (exact search will read the disk);
    if even ``compact``'s resident part does not fit, ``compact`` with a warning: the OS
    pages, and the way out is a server cluster. Without ``expected_points`` it is
    ``default``. On 24 GiB, m = 16:

    | dim | ram up to | disk up to | compact, exact from RAM, up to | compact (exact pages) up to |
    |---|---|---|---|---|
    | 512 | 4.3M | 7.3M | 12.0M | 16.4M |
    | 768 | 3.0M | 5.1M | 8.4M | 12.3M |
    | 1024 | 2.3M | 3.9M | 6.5M | 9.8M |

    so 5M x 1024 (mini-ILIAS) resolves to ``compact`` (``disk``'s float32 originals, 20 GB,
    would be read from disk by every exact query) and 100M x 1024 to ``compact`` with the
    warning. For a server store the client's RAM is only a stand-in for the server's: name
    the preset there.
    """
    check_storage(storage)
    check_storage(default)
    if storage is None:
        return default
    if storage != "auto":
        return storage
    floor = PRESETS.index(default)
    if not expected_points:
        return default
    ram = ram_bytes if ram_bytes is not None else machine_ram_bytes()
    fitting = [
        preset
        for preset in PRESETS[floor:]
        if expected_points * sizing(preset, dim, m).resident <= RAM_SHARE * ram
    ]
    for preset in fitting:
        if expected_points * sizing(preset, dim, m).exact <= CACHE_SHARE * ram:
            return preset
    if fitting:
        chosen = min(fitting, key=lambda preset: sizing(preset, dim, m).exact)
        logger.warning(
            "%d points x %d-d: as '%s' an exact search touches about %.1f GB, more than the "
            "page cache of this machine's %.1f GB holds: exact evaluations will read the "
            "originals from disk on every query; a Qdrant cluster spreads them over nodes",
            expected_points, dim, chosen, expected_points * sizing(chosen, dim, m).exact / 1e9,
            ram / 1e9,
        )  # fmt: skip
        return chosen
    need = expected_points * sizing("compact", dim, m).resident
    logger.warning(
        "%d points x %d-d need about %.1f GB of RAM even as 'compact', more than half of "
        "this machine's %.1f GB: searches will page; a Qdrant cluster spreads it over nodes",
        expected_points, dim, need / 1e9, ram / 1e9,
    )  # fmt: skip
    return "compact"


def machine_ram_bytes() -> int:
    """Total RAM of this machine (or of its cgroup limit, when lower)."""
    total = 0
    try:
        import psutil

        total = int(psutil.virtual_memory().total)
    except ImportError:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    total = int(line.split()[1]) * 1024
        except OSError:
            pass
    if not total:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit (cgroup v2): "max" or a number of bytes
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


@dataclass(frozen=True)
class SegmentPlan:
    """Segment sizing of a collection (both None: the engine's defaults)."""

    number: int | None = None  # default_segment_number
    max_size_kb: int | None = None  # max_segment_size, in KB of vector data
    # Edge only: a bulk load fills one appendable segment, so a scanned collection seals
    # (indexes) it every this many points to get its segments; None: never mid-load.
    seal_points: int | None = None


def segment_plan(
    storage: str,
    dim: int,
    expected_points: int | None,
    shards: int = 1,
    index: str | None = "hnsw",
    parts: int = 1,
) -> SegmentPlan:
    """How many segments a large collection should have, and how large each may get.

    Why: a top-1000 query runs one HNSW search per segment (each with ef >= 1000) and
    merges the results, so every extra segment costs about a whole search; few large
    segments are fastest for this workload. Two rather than one, so that a server's index
    build and a query's segment searches keep two cores busy (Qdrant's own advice for
    throughput: ``default_segment_number`` 2 and a large ``max_segment_size``). The cap
    is half the collection's (or shard's) originals plus 10 %, so the optimizer never
    merges everything back into one segment whose graph would be rebuilt from scratch.

    On Edge the bulk load fills one appendable segment and ``optimize()`` indexes it as one
    segment whatever the cap (measured: a 42 MB segment with a 10 MB cap); there the cap
    only bounds later merges, e.g. after an incremental load. Collections below 1 GiB of
    originals keep the engine's defaults.

    A scanned collection (``index="scan"``, ``search_index``) is the opposite case: each
    segment is scanned by its own core, so it gets at least one segment per core
    (``scan_segments``), of at most ``SEAL_POINTS``, and the Edge load seals a segment
    every ``seal_points`` points. A bulk import written by ``parts`` processes at once
    (each seals its own share of the points) gets the same number of segments, rounded up
    to a multiple of ``parts``, and room for all of them: the segments the collection
    adopts from its parts are never merged either.
    """
    if not expected_points:
        return SegmentPlan()
    per_vector = dim * (2 if LAYOUTS[storage].originals == "float16" else 4)
    per_shard = math.ceil(expected_points / max(1, shards))
    if index == "scan":
        number = scan_segments(per_shard, dim)
        if number == 1 and parts == 1:
            return SegmentPlan()
        per_part = math.ceil(per_shard / parts)
        # Sealed at most every SEAL_POINTS (a WAL-less import also seals after each file
        # of the reference's layout, 1M rows), room for one more segment than the seals
        # make, and a cap of one full segment: the optimizer then never merges, i.e.
        # rewrites, a full sealed segment (measured at 1M x 1024: merging the last 5k
        # points into a sealed 495k segment took 32 s, a sixth of the whole load).
        per_segment = min(math.ceil(per_part / math.ceil(number / parts)), SEAL_POINTS)
        if parts > 1:
            # A part seals only every per_segment points (no checkpoints after files), so
            # its segments can be of one size: 2.5M points -> 3 of 834k, not 1M, 1M, 0.5M.
            per_segment = math.ceil(per_part / math.ceil(per_part / per_segment))
        number = parts * math.ceil(per_part / per_segment) + 1
        # The cap is a full segment exactly: a small segment never joins a full one.
        max_kb = math.ceil(per_segment * per_vector / 1024)
        return SegmentPlan(number=number, max_size_kb=max_kb, seal_points=per_segment)
    if per_shard * per_vector < LARGE_COLLECTION:
        return SegmentPlan()
    max_kb = math.ceil(per_shard / 2 * per_vector * 1.1 / 1024)
    return SegmentPlan(number=2, max_size_kb=max_kb)
