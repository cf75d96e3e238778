"""What a collection is: its config (kept with it), what the engine reports, point ids.

A leaf of the store package (numpy-free): the engines, the store and its callers share
these without importing an engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ilias.errors import StoreError
from ilias.indexing.store.layout import DEFAULT_PRESET, StorageLayout, check_storage
from ilias.indexing.store.search_index import DEFAULT_INDEX, check_index

# Fixed namespace: point ids are UUIDv5(dataset id), identical on every machine and run, so
# re-running a load overwrites the same points instead of adding copies.
POINT_NAMESPACE = uuid.UUID("6f1c1a52-5b0e-4f43-9a3e-1f1a5c0d2b7e")
GLOBAL_VECTOR = "global"
LOCAL_VECTOR = "local"  # multivector of local descriptors (MAX_SIM), for re-ranking
LOCAL_XY = "local_xy"  # payload: patch centres of the local descriptors, [x0, y0, x1, ...]
ID_KEY = "id"  # payload: the dataset id of the point (written by every upsert)
SHARD_KEY = "shard"  # payload: the source shard a point was read from (tar shards)
SELECTION_KEY = "selection"  # payload: names of the selections that keep the point


def point_id(dataset_id: str) -> str:
    """The Qdrant point id of a dataset id."""
    return str(uuid.uuid5(POINT_NAMESPACE, dataset_id))


def default_payload_indexes() -> dict[str, str]:
    return {
        "id": "keyword",
        "instance": "keyword",
        "role": "keyword",
        "scale": "float",
        "clutter": "integer",
        "shard": "keyword",  # the source shard of a point (WebDataset): resume by shard
        "selection": "keyword",  # the selections (mini-ILIAS...) a point belongs to
    }


@dataclass(frozen=True)
class CollectionConfig:
    """What a collection is created with; ``metadata`` records how its vectors were made.

    ``managed`` is False for a collection another tool made (no ilias config stored with
    it): it can be searched by vector, its point ids are its own, and nothing records
    which encoder made its vectors.

    ``storage`` is where the parts live (``layout.py``: ``ram``, ``disk``, ``compact``, or
    ``auto`` to pick one from ``expected_points`` x ``dim`` at creation); None is the
    store's default. The stored config always names the preset that was applied, and a
    config stored before this setting existed reads as ``ram`` (what it was created with).
    ``expected_points`` is the size hint ``auto`` and segment sizing use.

    ``index`` is how it is searched (``search_index.py``: ``hnsw``, ``scan`` of the int8
    copies, or ``auto``/None to pick by ``expected_points`` x ``dim``); the stored config
    names the kind applied, and one stored before this setting existed reads as ``hnsw``.
    ``hnsw_m`` is kept as asked; a scanned collection builds no graph (engine ``m=0``).
    """

    dim: int
    quantile: float = 0.99
    quantization: bool = True
    hnsw_m: int = 16
    hnsw_ef_construct: int = 128
    payload_indexes: Mapping[str, str] = field(default_factory=default_payload_indexes)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    local_dim: int | None = None  # local descriptors stored as a MAX_SIM multivector
    managed: bool = True
    storage: str | None = None  # ram / disk / compact / auto; None: the store's default
    expected_points: int | None = None  # size hint for storage="auto" and segment sizing
    index: str | None = None  # hnsw / scan / auto; None: auto
    # Qdrant's write-ahead log. False for bulk imports of files that can be read again into
    # a graph-less collection (``ilias load --features`` with index scan): about 2x the
    # upsert rate on Edge; points are durable at each ``Store.checkpoint`` (after every
    # file, and at each mid-load seal) instead of at each upsert, so a crash loses what
    # came after the last one, and the rerun re-reads exactly that.
    wal: bool = True
    # Processes a bulk import writes through at once, each into its own part of the
    # collection whose sealed segments the collection then adopts (Edge; see
    # ``feature_parts``). Segment sizing plans each part's segments (``segment_plan``).
    import_parts: int = 1

    def __post_init__(self) -> None:
        check_storage(self.storage)
        check_index(self.index)
        if self.expected_points is not None and self.expected_points < 0:
            raise StoreError(f"expected_points = {self.expected_points}: give a count >= 0")
        if self.import_parts < 1:
            raise StoreError(f"import_parts = {self.import_parts}: give 1 or more")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
            "storage": self.storage,
            "index": self.index,
            "expected_points": self.expected_points,
            "wal": self.wal,
            "import_parts": self.import_parts,
            "local": {"dim": self.local_dim, "comparator": "max_sim"} if self.local_dim else None,
            "distance": "cosine",
            "quantization": {"type": "int8", "quantile": self.quantile, "always_ram": True}
            if self.quantization
            else None,
            "hnsw": {"m": self.hnsw_m, "ef_construct": self.hnsw_ef_construct},
            "payload_indexes": dict(self.payload_indexes),
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CollectionConfig:
        quantization = data.get("quantization")
        return cls(
            dim=int(data["dim"]),
            quantile=float(quantization["quantile"]) if quantization else 0.99,
            quantization=bool(quantization),
            hnsw_m=int(data["hnsw"]["m"]),
            hnsw_ef_construct=int(data["hnsw"]["ef_construct"]),
            payload_indexes=dict(data["payload_indexes"]),
            metadata=dict(data.get("metadata", {})),
            local_dim=int(data["local"]["dim"]) if data.get("local") else None,
            # Stored before the switch existed: created with today's "ram" layout.
            storage=data.get("storage") or DEFAULT_PRESET,
            expected_points=data.get("expected_points"),
            index=data.get("index") or DEFAULT_INDEX,  # stored before the switch: HNSW
            wal=bool(data.get("wal", True)),
            import_parts=int(data.get("import_parts", 1)),
        )

    @property
    def graph_m(self) -> int:
        """The HNSW ``m`` the engine builds with: 0 (no graph) for a scanned collection."""
        return 0 if self.index == "scan" else self.hnsw_m


@dataclass(frozen=True)
class CollectionInfo:
    """A collection as the engine reports it.

    ``quantization`` is what the engine says it applies (``"int8 q=0.99 ram"``), which can
    differ from what ``config`` asked for: qdrant-client's in-process mode ignores
    quantization and reports None. ``status`` is Qdrant's optimizer colour (green: indexed,
    yellow: indexing in the background); ``shards``/``replicas`` are None where the engine
    has no such notion (Edge).
    """

    name: str
    points: int
    indexed_vectors: int
    segments: int
    config: CollectionConfig
    location: str
    quantization: str | None = None
    status: str | None = None
    shards: int | None = None
    replicas: int | None = None
    layout: StorageLayout | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    """A collection snapshot on the server: its name, size and where it can be fetched."""

    name: str
    size: int
    created: str | None
    location: str
