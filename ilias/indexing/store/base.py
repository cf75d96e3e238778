"""The Store interface: every operation the pipeline needs from Qdrant, stated once.

Two engines implement it, chosen from one spec string (``open_store``): ``EdgeStore``
(Qdrant Edge, embedded, the default) and, for users who outgrow one machine, a server
store over ``qdrant-client``. Nothing above this module knows which engine it talks to.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ilias.errors import StoreError, VectorValidationError
from ilias.indexing.local_features import LocalFeatures

# Fixed namespace: point ids are UUIDv5(dataset id), identical on every machine and run, so
# re-running a load overwrites the same points instead of adding copies.
POINT_NAMESPACE = uuid.UUID("6f1c1a52-5b0e-4f43-9a3e-1f1a5c0d2b7e")
GLOBAL_VECTOR = "global"
LOCAL_VECTOR = "local"  # multivector of local descriptors (MAX_SIM), for re-ranking
LOCAL_XY = "local_xy"  # payload: patch centres of the local descriptors, [x0, y0, x1, ...]


def point_id(dataset_id: str) -> str:
    """The Qdrant point id of a dataset id."""
    return str(uuid.uuid5(POINT_NAMESPACE, dataset_id))


@dataclass(frozen=True)
class Range:
    """A numeric payload range for filters (``gte``/``lte`` inclusive, ``gt``/``lt`` strict)."""

    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None


# field -> value (match), list of values (match any), or Range. Passed to the engine as a
# real Qdrant filter, served by payload indexes; never applied in Python after the search.
Filter = Mapping[str, Any]


@dataclass(frozen=True)
class SearchParams:
    """Search knobs, with Qdrant's meaning: ``oversampling`` and ``rescore`` are int8 ones."""

    exact: bool = False
    hnsw_ef: int | None = None
    oversampling: float | None = None
    rescore: bool = True
    ignore_quantization: bool = False  # search the float32 originals (quality baseline)


@dataclass(frozen=True)
class CollectionConfig:
    """What a collection is created with; ``metadata`` records how its vectors were made."""

    dim: int
    quantile: float = 0.99
    quantization: bool = True
    hnsw_m: int = 16
    hnsw_ef_construct: int = 128
    payload_indexes: Mapping[str, str] = field(
        default_factory=lambda: {
            "id": "keyword",
            "instance": "keyword",
            "role": "keyword",
            "scale": "float",
            "clutter": "integer",
        }
    )
    metadata: Mapping[str, Any] = field(default_factory=dict)
    local_dim: int | None = None  # local descriptors stored as a MAX_SIM multivector

    def to_dict(self) -> dict[str, Any]:
        return {
            "dim": self.dim,
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
        )


@dataclass(frozen=True)
class Hit:
    """One search result: the dataset id, the cosine similarity, the stored payload."""

    id: str
    score: float
    payload: dict[str, Any]


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


@dataclass(frozen=True)
class SnapshotInfo:
    """A collection snapshot on the server: its name, size and where it can be fetched."""

    name: str
    size: int
    created: str | None
    location: str


class Store(ABC):
    """A Qdrant engine holding named collections of ``global`` vectors with payload."""

    location: str

    @abstractmethod
    def list_collections(self) -> list[str]: ...

    @abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    @abstractmethod
    def create_collection(self, name: str, config: CollectionConfig) -> None:
        """Create with int8 quantization and payload indexes; indexing waits for ``finish_load``."""

    @abstractmethod
    def collection_config(self, name: str) -> CollectionConfig: ...

    @abstractmethod
    def info(self, name: str) -> CollectionInfo: ...

    @abstractmethod
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
        local: Sequence[LocalFeatures] | None = None,
    ) -> None:
        """Write points keyed by ``point_id(id)``; vectors must pass ``validate_vectors``.

        A collection with ``local_dim`` takes each point's local descriptors too (the
        ``local`` multivector, and their patch centres in the ``local_xy`` payload).
        """

    def _query_vectors(self, name: str, vectors: np.ndarray) -> np.ndarray:
        """Query rows checked like stored ones (dimension, NaN, zero) before any search."""
        vectors = np.atleast_2d(vectors)
        ids = [f"query {i}" for i in range(len(vectors))]
        return validate_vectors(vectors, self.collection_config(name).dim, ids)

    # -- local descriptors (re-ranking) ------------------------------------------------
    def _require_local(self, name: str, query_local: np.ndarray) -> None:
        """A clear refusal before a local query reaches a collection that cannot answer it."""
        config = self.collection_config(name)
        if not config.local_dim:
            raise StoreError(
                f"collection {name!r} has no local descriptors; load it with --local to "
                "re-rank with cs, sp or ames"
            )
        shape = np.asarray(query_local).shape
        if len(shape) != 2 or shape[1] != config.local_dim:
            raise StoreError(f"query local descriptors {shape} vs {config.local_dim}-d stored")

    def retrieve_local(self, name: str, ids: Sequence[str]) -> dict[str, LocalFeatures]:
        """Stored local descriptors and patch centres by dataset id."""
        raise StoreError(f"{self.location} does not store local descriptors")

    def rescore_local(self, name: str, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]:
        """The given points ranked by MAX_SIM of ``query_local`` against their ``local``
        multivectors, computed by the engine (the sum form of Chamfer similarity)."""
        raise StoreError(f"{self.location} does not store local descriptors")

    def search_local(
        self,
        name: str,
        vector: np.ndarray,
        query_local: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """One engine query: prefetch the top k by ``global``, re-score them by ``local``."""
        raise StoreError(f"{self.location} does not store local descriptors")

    @abstractmethod
    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of dataset ids already stored: what a resumed load skips."""

    @abstractmethod
    def finish_load(self, name: str) -> None:
        """Build the deferred indexes (HNSW, quantized vectors) after a bulk load."""

    @abstractmethod
    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each row of ``vectors`` (one batch request where the engine can)."""

    @abstractmethod
    def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored ``global`` vectors by dataset id (missing ids are absent from the result)."""

    @abstractmethod
    def count(self, name: str, filter: Filter | None = None) -> int: ...

    @abstractmethod
    def drop(self, name: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- aliases: a stable name over versioned collections (zero-downtime reload) ------
    @abstractmethod
    def list_aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""

    @abstractmethod
    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (create or switch).

        Readers see the old collection or the new one, never neither: this is the swap of a
        versioned reload. ``collection`` must be a collection, not another alias, and
        ``alias`` must not be the name of a collection.
        """

    @abstractmethod
    def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` (the collection stays); nothing happens if there is no such alias."""

    def resolve(self, name: str) -> str:
        """The collection ``name`` denotes: itself, or the target of the alias ``name``.

        Every collection operation accepts an alias in place of a collection name.
        """
        return self.list_aliases().get(name, name)

    # -- snapshots (server only) -------------------------------------------------------
    def create_snapshot(self, name: str) -> SnapshotInfo:
        """Snapshot a collection on the server (the file stays on the server)."""
        raise StoreError(self._no_snapshots())

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        raise StoreError(self._no_snapshots())

    def restore_snapshot(self, name: str, source: str) -> None:
        """Recover ``name`` from a snapshot: a snapshot name, a URL, or a local file."""
        raise StoreError(self._no_snapshots())

    def _no_snapshots(self) -> str:
        return (
            f"{self.location} has no snapshots: they are a Qdrant server feature "
            "(--store http://host:6333). An Edge collection is a folder: stop the processes "
            "using it and copy the folder to back it up"
        )

    # -- writers in other processes (distributed extraction) --------------------------
    #: True when writes from another process that opens ``worker_spec()`` land in the very
    #: collections this store reads (a Qdrant server). Loads then let Dask workers upload
    #: their own partitions instead of funnelling every vector through the driver.
    shared_across_processes: bool = False

    def worker_spec(self) -> str | None:
        """A spec (for ``open_store``) a worker process opens to write these collections.

        None where only this process may write: an Edge shard has one owner.
        """
        return None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_local(vectors: Sequence, payload: Mapping[str, Any] | None) -> LocalFeatures:
    """Local features from a stored ``local`` multivector and its ``local_xy`` payload."""
    descriptors = np.asarray(vectors, dtype=np.float32)
    xy = np.asarray((payload or {}).get(LOCAL_XY, []), dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(descriptors, xy, np.ones(len(descriptors), np.float32))


def validate_local(local: Sequence[LocalFeatures], dim: int, ids: Sequence[str]) -> None:
    """Local descriptor sets must match the collection's ``local_dim`` and be finite."""
    if len(local) != len(ids):
        raise VectorValidationError(f"{len(local)} local descriptor sets for {len(ids)} ids")
    for dataset_id, features in zip(ids, local, strict=True):
        descriptors = features.descriptors
        if descriptors.ndim != 2 or descriptors.shape[1] != dim or not len(descriptors):
            raise VectorValidationError(
                f"local descriptors of {dataset_id} have shape {descriptors.shape}; the "
                f"collection holds {dim}-d ones. Load into a new collection to change them"
            )
        if not np.isfinite(descriptors).all():
            raise VectorValidationError(f"local descriptors of {dataset_id} hold NaN/inf")


def validate_vectors(vectors: np.ndarray, dim: int, ids: Sequence[str]) -> np.ndarray:
    """Refuse what Qdrant would take silently: NaN/inf, wrong shape, zero vectors.

    Qdrant accepts NaN vectors without a word and never returns them; a zero vector has no
    cosine. Both would be lost points, so they stop here, named by dataset id.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise VectorValidationError(
            f"vectors have shape {array.shape}, the collection holds {dim}-d vectors; "
            "load into a new collection (or drop this one) to change the encoder"
        )
    if len(array) != len(ids):
        raise VectorValidationError(f"{len(array)} vectors for {len(ids)} ids")
    finite = np.isfinite(array).all(axis=1)
    norms = np.linalg.norm(np.where(finite[:, None], array, 0), axis=1)
    bad = np.flatnonzero(~finite | (norms < 1e-12))
    if len(bad):
        names = ", ".join(ids[i] for i in bad[:5])
        raise VectorValidationError(
            f"{len(bad)} vector(s) are NaN/inf or zero (e.g. {names}); nothing was written. "
            "Check the encoder's output for these images"
        )
    return array.astype(np.float32, copy=False)
