"""The few primitive calls a Qdrant engine must answer, and what it can and cannot do.

``Store`` (``base.py``) does everything that is the same for every engine: it validates
vectors, turns dataset ids into point ids and back, writes the dataset id into the payload,
packs local multivectors, batches, enforces the alias rules, caches collection configs and
says how hits are named (``hits_of``, shared by the engines, builds them). An ``Engine``
only translates these primitives into one API: Qdrant Edge (``edge.py``) or qdrant-client
(``server.py``, a server or its in-process mode), as qdrant-client's facade holds one of
its two engines.

Everything an engine receives is already checked: names are collection names (aliases are
resolved by the store unless the engine resolves them natively), ids are point ids, vectors
are finite float32 rows of the right size, filters are lists of ``Condition``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilias.errors import StoreError
from ilias.indexing.store.layout import DEFAULT_PRESET, StorageLayout
from ilias.indexing.store.schema import CollectionConfig, SnapshotInfo
from ilias.types import Hit, Range, SearchParams


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do; the store turns a missing capability into one clear error.

    ``native_aliases``: the engine resolves alias names in every call itself (a server);
    otherwise the store resolves them before calling. ``shared_across_processes``: writes
    from another process that opens ``worker_spec`` land in the same collections, so Dask
    workers may upload directly. ``parallel_requests``: calls the store may keep in flight
    at once. ``snapshots``: server-side collection snapshots (None, or why not).
    """

    native_aliases: bool = False
    shared_across_processes: bool = False
    parallel_requests: int = 1
    upsert_batch: int = 1024
    query_batch: int = 64
    retrieve_batch: int = 1024
    no_snapshots: str | None = None


@dataclass(frozen=True)
class Condition:
    """One clause of a filter, in the engine-neutral form both engines translate.

    Exactly one of ``value`` (exact match of a keyword, integer or bool), ``any_of`` (match
    any) and ``range`` is set; every clause of a filter must hold.
    """

    key: str
    value: Any = None
    any_of: tuple[Any, ...] | None = None
    range: Range | None = None


@dataclass(frozen=True)
class VectorQuery:
    """Nearest neighbours of ``vector`` in the named vector ``using``.

    ``vector`` is a row (dense) or a list of rows (a multivector query, MAX_SIM).
    ``prefetch`` ranks a first stage whose results this query re-scores; ``point_ids``
    restricts the search to those points (a re-scoring of known candidates).
    """

    vector: Any
    using: str
    limit: int
    conditions: Sequence[Condition] = ()
    params: SearchParams | None = None
    prefetch: VectorQuery | None = None
    point_ids: Sequence[str | int] | None = None


@dataclass(frozen=True)
class StoredPoint:
    id: str
    vectors: Mapping[str, Any] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PointBatch:
    """Points to write: ``vectors`` maps a vector name to one row (or rows) per point.

    The global vectors come as one float32 array (a row per point): each engine converts
    them its own way (Edge reads each row's buffer, the client API wants lists), since
    turning millions of rows into Python floats was the largest cost of a bulk load."""

    ids: list[str]
    vectors: dict[str, Any]
    payloads: list[dict[str, Any]]


@dataclass(frozen=True)
class EngineInfo:
    """Counts and settings as the engine reports them (see ``CollectionInfo``)."""

    points: int
    indexed_vectors: int
    segments: int
    location: str
    quantization: str | None = None
    status: str | None = None
    shards: int | None = None
    replicas: int | None = None
    layout: StorageLayout | None = None


class Engine(ABC):
    """A Qdrant engine's primitive operations on collections of named vectors."""

    location: str
    capabilities: Capabilities = Capabilities()

    # -- collections -----------------------------------------------------------------
    @abstractmethod
    def list_collections(self) -> list[str]: ...

    @abstractmethod
    def has_collection(self, name: str) -> bool: ...

    @abstractmethod
    def create_collection(self, name: str, config: CollectionConfig) -> None:
        """Create with the config's vectors, int8 quantization, storage layout (a preset:
        the store resolved ``auto`` and None) and payload indexes, keep the config with the
        collection, and defer indexing until ``build_index``."""

    def default_storage(self) -> str:
        """The preset a collection gets when its config names none (and the floor of
        ``auto``): ``ram``, unless the store was opened to keep originals on disk."""
        return DEFAULT_PRESET

    def ensure_room(self, name: str, needed: int, what: str) -> None:
        """Refuse (``DiskFull``, one line with both numbers) a step that needs ``needed``
        more bytes of disk for collection ``name`` than there is; an engine that cannot
        see its disk (a remote server) checks nothing."""
        return None

    @abstractmethod
    def read_config(self, name: str) -> CollectionConfig:
        """The stored config; a collection made by another tool gets ``managed=False``."""

    @abstractmethod
    def info(self, name: str, config: CollectionConfig) -> EngineInfo: ...

    @abstractmethod
    def build_index(self, name: str, config: CollectionConfig) -> None:
        """Build (or let the engine build) HNSW and the quantized vectors after a bulk load."""

    @abstractmethod
    def drop(self, name: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- points ----------------------------------------------------------------------
    @abstractmethod
    def upsert(self, name: str, batch: PointBatch) -> None:
        """Write one batch; return only once it is applied (visible to reads and counts)."""

    def upsert_all(self, name: str, batches: Iterable[PointBatch]) -> None:
        """Write the batches in order; return once all are applied. An engine may overlap
        preparing one batch with writing the one before (Edge does)."""
        for batch in batches:
            self.upsert(name, batch)

    @abstractmethod
    def retrieve(
        self,
        name: str,
        ids: Sequence[str | int],
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
    ) -> list[StoredPoint]:
        """The points among ``ids`` that exist, with the named vectors and payload keys."""

    @abstractmethod
    def scroll(
        self,
        name: str,
        offset: str | int | None,
        limit: int,
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
        conditions: Sequence[Condition] = (),
    ) -> tuple[list[StoredPoint], str | int | None]:
        """One page of every point (matching ``conditions``), in the engine's point-id
        order, from ``offset`` (None: the first); the offset of the next page, None after
        the last."""

    @abstractmethod
    def query(
        self, name: str, queries: Sequence[VectorQuery], named_by: str | None = None
    ) -> list[list[Hit]]:
        """One batch of queries; hits carry the payload without the ``local_xy`` key and
        are named by ``hits_of``."""

    @abstractmethod
    def count(self, name: str, conditions: Sequence[Condition]) -> int: ...

    @abstractmethod
    def set_payload(self, name: str, ids: Sequence[str | int], payload: Mapping[str, Any]) -> None:
        """Set these payload keys (others kept) on the points ``ids``."""

    # -- the shard ledger of a collection (which source shards a load completed) --------
    @abstractmethod
    def read_ledger(self, name: str) -> dict[str, dict[str, Any]]:
        """``{shard name: entry}`` for every shard recorded as completely loaded."""

    @abstractmethod
    def record_shards(self, name: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Add (or replace) ledger entries; durable when this returns."""

    # -- aliases -----------------------------------------------------------------------
    @abstractmethod
    def list_aliases(self) -> dict[str, str]: ...

    @abstractmethod
    def point_alias(self, alias: str, collection: str, replace: bool) -> None:
        """Create ``alias`` or switch it (``replace``) to ``collection`` in one atomic step."""

    @abstractmethod
    def delete_alias(self, alias: str) -> None: ...

    # -- optional: durability points, direct reads, writers in other processes, snapshots
    def checkpoint(self, name: str, config: CollectionConfig) -> None:  # noqa: B027
        """Make every applied write durable now (an engine that syncs each write, or a
        collection with a write-ahead log: nothing to do)."""

    def stored_vectors(self, name: str, vector: str, dim: int, block: int) -> Any:
        """A ``stream.VectorStream`` of every point's ``vector`` read from the engine's own
        storage (much faster than paging through ``scroll``), or None where this engine
        cannot (the store then pages through ``scroll``)."""
        return None

    def import_parts(self, name: str) -> Path | None:
        """A folder where other processes may write parts of collection ``name`` at once
        (each an own store of this engine, adopted with ``adopt_parts``), or None where the
        engine cannot adopt parts (its writes are shared already, or it has one writer)."""
        return None

    def adopt_parts(self, name: str, parts: Mapping[str, int | None]) -> int:
        raise NotImplementedError

    def worker_spec(self) -> str | None:
        """A spec for ``open_store`` that another process opens to write these collections."""
        return None

    def create_snapshot(self, name: str) -> SnapshotInfo:
        raise NotImplementedError

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        raise NotImplementedError

    def restore_snapshot(self, name: str, source: str) -> None:
        raise NotImplementedError

    # -- deleting points (appended: kept apart from the bulk-load primitives above) -----
    @abstractmethod
    def delete(
        self,
        name: str,
        ids: Sequence[str | int] | None = None,
        conditions: Sequence[Condition] | None = None,
    ) -> None:
        """Delete the points ``ids`` or those matching ``conditions`` (exactly one is
        given), every named vector and the payload with them; return only once applied
        (durable: an acknowledged delete survives a kill -9)."""


def missing_collection(name: str, location: str, known: Sequence[str]) -> StoreError:
    """The one error for a collection that is not there, whichever engine was asked."""
    names = ", ".join(sorted(known)) or "none"
    return StoreError(
        f"no collection {name!r} in {location} (collections: {names}); create it with 'ilias load'"
    )


def hits_of(points: Iterable[Any], named_by: str | None) -> list[Hit]:
    """Hits of an engine's scored points (objects with ``id``, ``score``, ``payload``).

    A hit is named by its payload's ``named_by`` value where the point has one (the dataset
    id the store writes), else by its point id. Why here and this way: a top-1000 answer is
    1,000 points, and reading a point id costs the binding a UUID object and its text
    (about 2 µs a hit, more than scoring it in Python), so it is read only where needed,
    and each point becomes one object, with its payload dict taken uncopied.
    """
    hits = []
    for point in points:
        payload = point.payload
        if not isinstance(payload, dict):
            payload = dict(payload or {})
        name = payload.get(named_by) if named_by is not None else None
        hits.append(Hit(str(point.id) if name is None else str(name), float(point.score), payload))
    return hits
