"""The Store: every operation the pipeline needs from Qdrant, written once over an engine.

One class does what is the same for every engine: it validates what the engine will
actually receive (float32 rows, finite, non-zero, the collection's dimension), turns
dataset ids into point ids (UUIDv5) and writes the dataset id into the payload so hits
carry it back, packs local multivectors with their patch centres, batches writes and reads
(in parallel where the engine allows), enforces the alias rules, caches collection configs
and turns filters into engine-neutral conditions. The engine under it (``engine.py``) is a
thin adapter: Qdrant Edge embedded in this process (``edge.py``) or qdrant-client against a
server or its in-process mode (``server.py``). Nothing above this module knows which.

Config cache: a collection's config is read once per store handle and name, and dropped
by this handle's create, drop, alias and restore operations. A swap of a server alias by
another process is seen by searches at once (the server resolves the alias), while this
handle keeps the config it read (open a new handle, or call ``refresh``, to re-read it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from ilias.errors import StoreError, VectorValidationError
from ilias.indexing.store.engine import (
    Capabilities,
    Condition,
    Engine,
    PointBatch,
    StoredPoint,
    VectorQuery,
)
from ilias.indexing.store.layout import DEFAULT_PRESET, LAYOUTS, resolve_storage, sizing
from ilias.indexing.store.schema import (
    GLOBAL_VECTOR,
    ID_KEY,
    LOCAL_VECTOR,
    LOCAL_XY,
    SELECTION_KEY,
    CollectionConfig,
    CollectionInfo,
    SnapshotInfo,
    point_id,
)
from ilias.indexing.store.search_index import resolve_index
from ilias.indexing.store.space import FRESH_COLLECTION, WRITE_MARGIN
from ilias.indexing.store.stream import VectorStream, scroll_stream
from ilias.types import Filter, Hit, LocalFeatures, Range, SearchParams

T = TypeVar("T")
R = TypeVar("R")


class Store:
    """Named collections of ``global`` vectors (and optional ``local`` multivectors) with
    payload, in one Qdrant engine. Open one with ``open_store(spec)``."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._configs: dict[str, CollectionConfig] = {}

    @property
    def location(self) -> str:
        return self.engine.location

    @property
    def capabilities(self) -> Capabilities:
        return self.engine.capabilities

    @property
    def shared_across_processes(self) -> bool:
        """True when Dask workers that open ``worker_spec()`` write into these very
        collections (a Qdrant server); loads then let workers upload their partitions."""
        return self.capabilities.shared_across_processes

    def worker_spec(self) -> str | None:
        """A spec another process opens to write these collections; None where only this
        process may write (an Edge shard has one owner). Loads use it when
        ``shared_across_processes``, or when asked to (``upload="workers"``)."""
        return self.engine.worker_spec()

    def collection(self, name: str) -> Collection:
        """A handle on one collection: what re-rankers and retrievers work through."""
        return Collection(self, name)

    # -- collections -----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        return sorted(self.engine.list_collections())

    def collection_exists(self, name: str) -> bool:
        """A collection, or an alias of one, of this name (never one no collection can have)."""
        try:
            check_name(name)
        except StoreError:
            return False
        return name in self.list_aliases() or self.engine.has_collection(name)

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        """Create with int8 quantization and payload indexes; indexing waits for ``finish_load``.

        ``config.storage`` is resolved here, once, for every engine: None becomes the
        engine's default preset and ``auto`` a preset chosen from ``expected_points`` x
        ``dim`` and this machine's RAM (``resolve_storage``); the collection keeps the
        preset it got. ``config.index`` likewise (``resolve_index``: ``auto``/None scans
        the int8 copies of a collection up to 1 GiB of them, HNSW beyond or when the size is
        not known).
        """
        check_name(name)
        if name in self.list_aliases():
            raise StoreError(
                f"{name!r} is an alias in {self.location}; create the collection under another "
                "name (a versioned load does this for you) or delete the alias"
            )
        if self.engine.has_collection(name):
            raise StoreError(f"collection {name!r} already exists in {self.location}")
        self._configs.pop(name, None)
        index = resolve_index(config.index, dim=config.dim, expected_points=config.expected_points)
        config = dataclasses.replace(config, index=index)
        storage = resolve_storage(
            config.storage,
            dim=config.dim,
            expected_points=config.expected_points,
            default=self.engine.default_storage(),
            m=config.graph_m,  # a scanned collection keeps no graph in RAM
        )
        config = dataclasses.replace(config, storage=storage)
        self.engine.create_collection(name, config)
        self._configs[name] = config

    def collection_config(self, name: str) -> CollectionConfig:
        target = self._target(name)
        config = self._configs.get(target)
        if config is None:
            config = self._configs[target] = self.engine.read_config(target)
        return config

    def refresh(self) -> None:
        """Forget cached collection configs (another process changed them)."""
        self._configs.clear()

    def info(self, name: str) -> CollectionInfo:
        target = self._target(name)
        config = self.collection_config(name)
        found = self.engine.info(target, config)
        # Shallow: asdict would turn the nested layout into a dict.
        reported = {f.name: getattr(found, f.name) for f in dataclasses.fields(found)}
        return CollectionInfo(name=name, config=config, **reported)

    def drop(self, name: str) -> None:
        """Drop a collection and the aliases that point to it (as Qdrant does)."""
        aliases = self.list_aliases()
        if name in aliases:
            raise StoreError(
                f"{name!r} is an alias of {aliases[name]!r}, not a collection; drop "
                f"{aliases[name]!r} or delete the alias"
            )
        self._configs.clear()
        self.engine.drop(name)
        for alias, target in self.list_aliases().items():
            if target == name:
                self.engine.delete_alias(alias)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- aliases: a stable name over versioned collections (zero-downtime reload) ------
    def list_aliases(self) -> dict[str, str]:
        """Every alias and the collection it points to."""
        return self.engine.list_aliases()

    def resolve(self, name: str) -> str:
        """The collection ``name`` denotes: itself, or the target of the alias ``name``.
        Every collection operation accepts an alias in place of a collection name."""
        return self.list_aliases().get(name, name)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` in one atomic step (create or switch).

        Readers see the old collection or the new one, never neither: this is the swap of a
        versioned reload. ``collection`` must be a collection, not another alias, and
        ``alias`` must not be the name of a collection.
        """
        check_name(alias)
        aliases = self.list_aliases()
        if collection in aliases:
            raise StoreError(
                f"{collection!r} is an alias; point {alias!r} at a collection "
                f"({aliases[collection]!r})"
            )
        collections = set(self.engine.list_collections())
        if collection not in collections:
            raise StoreError(f"no collection {collection!r} in {self.location} to alias")
        if alias in collections:
            raise StoreError(
                f"{alias!r} is a collection in {self.location}; an alias needs a name of its own"
            )
        self._configs.clear()
        self.engine.point_alias(alias, collection, replace=alias in aliases)

    def delete_alias(self, alias: str) -> None:
        """Remove ``alias`` (the collection stays); nothing happens if there is no such alias."""
        if alias in self.list_aliases():
            self._configs.clear()
            self.engine.delete_alias(alias)

    # -- points ----------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]],
        local: Sequence[LocalFeatures] | None = None,
    ) -> None:
        """Write points keyed by ``point_id(id)``, the dataset id in the payload.

        Vectors must pass ``validate_vectors``. A collection with ``local_dim`` takes each
        point's local descriptors too (the ``local`` multivector, and their patch centres
        in the ``local_xy`` payload).
        """
        target = self._target(name)
        config = self._writable_config(name)
        rows = validate_vectors(vectors, config.dim, ids)
        if len(payloads) != len(ids):
            raise VectorValidationError(f"{len(payloads)} payloads for {len(ids)} ids")
        if not len(ids):
            return
        full = [
            {**payload, ID_KEY: dataset_id}
            for payload, dataset_id in zip(payloads, ids, strict=True)
        ]
        named: dict[str, Any] = {GLOBAL_VECTOR: np.ascontiguousarray(rows, dtype=np.float32)}
        if config.local_dim:
            if local is None:
                raise StoreError(
                    f"collection {name!r} stores local descriptors: extract them too (--local)"
                )
            validate_local(local, config.local_dim, ids)
            named[LOCAL_VECTOR] = [f.descriptors.tolist() for f in local]
            for payload, features in zip(full, local, strict=True):
                payload[LOCAL_XY] = features.xy.reshape(-1).round(1).tolist()
        size = self.capabilities.upsert_batch
        point_ids = [point_id(i) for i in ids]
        batches = [
            PointBatch(
                ids=point_ids[start : start + size],
                vectors={key: values[start : start + size] for key, values in named.items()},
                payloads=full[start : start + size],
            )
            for start in range(0, len(ids), size)
        ]
        if self.capabilities.parallel_requests > 1:
            for _ in self._parallel(lambda batch: self.engine.upsert(target, batch), batches):
                pass
        else:
            self.engine.upsert_all(target, batches)

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        """The subset of dataset ids already stored: what a resumed load skips."""
        return set(self._retrieve(name, ids, vectors=(), payload=False))

    def stored_payloads(
        self, name: str, ids: Sequence[str], keys: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The named payload keys of stored points, by dataset id (missing ids absent)."""
        found = self._retrieve(name, ids, vectors=(), payload=list(keys))
        return {i: dict(p.payload) for i, p in found.items()}

    def scan_payloads(
        self, name: str, keys: Sequence[str], where: Mapping[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """The named payload keys of every point (matching ``where``: key -> exact value,
        unchecked against the indexes), a page at a time, without vectors."""
        target = self._target(name)
        clauses = [Condition(key, value=value) for key, value in (where or {}).items()]
        page, offset = self.capabilities.retrieve_batch * 8, None
        while True:
            points, offset = self.engine.scroll(target, offset, page, (), list(keys), clauses)
            yield [dict(p.payload) for p in points]
            if offset is None:
                return

    def tag(self, name: str, tag: str, keep: Callable[[Mapping[str, Any]], bool]) -> int:
        """Add ``tag`` to the ``selection`` payload of every point ``keep(payload)`` accepts
        (the payload holds ``id``, ``role`` and ``selection``); returns how many carry it.

        A selection is then an indexed payload filter (``selection=tag``) that any search
        or evaluation applies inside the engine, however many points it keeps.
        """
        self._writable_config(name)
        target = self._target(name)
        size = self.capabilities.upsert_batch
        tagged = 0
        # Written page by page: a 100M-point collection never has its ids in memory at once.
        for payloads in self.scan_payloads(name, [ID_KEY, "role", SELECTION_KEY]):
            pending: dict[tuple[str, ...], list[str]] = {}  # new selection list -> points
            for payload in filter(keep, payloads):
                tagged += 1
                current = payload.get(SELECTION_KEY) or []
                current = [current] if isinstance(current, str) else list(current)
                if tag not in current:
                    selection = tuple(sorted({*current, tag}))
                    pending.setdefault(selection, []).append(point_id(payload[ID_KEY]))
            for selection, ids in pending.items():
                for start in range(0, len(ids), size):
                    self.engine.set_payload(
                        target, ids[start : start + size], {SELECTION_KEY: list(selection)}
                    )
        return tagged

    def shard_ledger(self, name: str) -> dict[str, dict[str, Any]]:
        """The source shards a load recorded as completely stored: ``{shard: entry}``."""
        return self.engine.read_ledger(self._target(name))

    def record_shards(self, name: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Record shards as completely stored (after their points are written)."""
        if entries:
            self.engine.record_shards(self._target(name), entries)

    def check_room(
        self,
        name: str,
        *,
        points: int,
        dim: int,
        storage: str | None = None,
        local_dim: int | None = None,
        local_per_point: int = 0,
    ) -> None:
        """Refuse, in one line with both numbers, a load of ``points`` more points into
        ``name`` (new or not) that the store's disk cannot hold through its index build.

        What it needs: the points at the bytes per point of their layout (``sizing``; an
        undecided layout counts as ``ram``, the largest on disk, with local descriptors as
        float32 rows), twice, because the build writes the rebuilt segments next to the
        loaded ones; a new collection adds what an empty one takes. Engines that cannot
        see their disk (a server) check nothing.
        """
        preset = storage if storage in LAYOUTS else DEFAULT_PRESET
        per_point = sizing(preset, dim).disk + 4 * (local_dim or 0) * local_per_point
        needed = 2 * points * per_point + WRITE_MARGIN
        exists = self.collection_exists(name)
        target = self._target(name) if exists else name
        if not exists:
            check_name(name)
            needed += FRESH_COLLECTION
        what = f"loading {points:,} points into {name!r}" if points else f"creating {name!r}"
        self.engine.ensure_room(target, needed, what)

    def finish_load(self, name: str) -> None:
        """Build the deferred indexes (HNSW, quantized vectors) after a bulk load."""
        self.engine.build_index(self._target(name), self.collection_config(name))

    def import_parts(self, name: str) -> Path | None:
        """Where other processes may write parts of collection ``name`` at once, each an
        own store of this engine (``open_store("edge:" + folder)``), adopted with
        ``adopt_parts``; None where this engine cannot."""
        return self.engine.import_parts(self._target(name))

    def adopt_parts(self, name: str, parts: Mapping[str, int | None]) -> int:
        """Move the points of collections ``parts`` of the ``import_parts`` store into
        ``name``; the number of points moved. Each part's value: its count, as the process
        that wrote and closed it found it (None: the part of an interrupted import)."""
        return self.engine.adopt_parts(self._target(name), parts)

    def checkpoint(self, name: str) -> None:
        """Make what was written so far durable, whatever a kill does next: a bulk load
        into a collection without a WAL (``CollectionConfig.wal``) calls it between its
        files (Edge seals the appendable segment; nothing to do with a WAL)."""
        self.engine.checkpoint(self._target(name), self.collection_config(name))

    def count(self, name: str, filter: Filter | None = None) -> int:
        return self.engine.count(self._target(name), self._conditions(name, filter))

    def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored ``global`` vectors by dataset id (missing ids are absent from the result)."""
        found = self._retrieve(name, ids, vectors=(GLOBAL_VECTOR,), payload=False)
        return {
            i: np.asarray(p.vectors[GLOBAL_VECTOR], dtype=np.float32)
            for i, p in found.items()
            if p.vectors.get(GLOBAL_VECTOR) is not None
        }

    def scroll(
        self, name: str, keys: Sequence[str] = (), *, batch: int | None = None
    ) -> Iterator[PointPage]:
        """Every point of the collection, page by page: dataset ids, stored ``global``
        vectors (float32 rows) and the named payload keys.

        What exports and copies read: the stored originals in the engine's point-id order
        (not the dataset's), ``batch`` points per engine call (default: the engine's
        retrieve batch), so memory stays one page however large the collection.
        """
        target = self._target(name)
        managed = self.collection_config(name).managed
        size = batch or self.capabilities.retrieve_batch
        wanted = [ID_KEY, *keys] if managed else list(keys)
        offset: str | int | None = None
        while True:
            points, offset = self.engine.scroll(target, offset, size, (GLOBAL_VECTOR,), wanted)
            if points:
                rows = np.asarray([p.vectors[GLOBAL_VECTOR] for p in points], dtype=np.float32)
                ids = [str(p.payload[ID_KEY]) if managed else p.id for p in points]
                yield PointPage(ids, rows, [dict(p.payload) for p in points])
            if offset is None:
                return

    def stream_vectors(
        self,
        name: str,
        filter: Filter | None = None,
        *,
        block: int = 16_384,
        direct: bool = True,
    ) -> VectorStream:
        """Every stored ``global`` vector (matching ``filter``), once, ``block`` rows at a
        time: what exact evaluation ranks all queries against (``stream.VectorStream``).

        Read straight from the engine's storage where it can (Edge, a built collection, no
        filter), else through its scroll (always with ``direct=False``: after a
        ``StreamMismatch``); either way nothing is copied to a second store and memory
        holds one block.
        """
        target = self._target(name)
        config = self.collection_config(name)
        conditions = self._conditions(name, filter)
        if direct and config.managed and not conditions:
            direct = self.engine.stored_vectors(target, GLOBAL_VECTOR, config.dim, block)
            if direct is not None:
                return cast(VectorStream, direct)
        total = self.engine.count(target, conditions)
        named_by = ID_KEY if config.managed else None
        return scroll_stream(
            self.engine, target, GLOBAL_VECTOR, config.dim, conditions, named_by, total, block
        )

    def retrieve_local(self, name: str, ids: Sequence[str]) -> dict[str, LocalFeatures]:
        """Stored local descriptors and patch centres by dataset id."""
        self._require_local(name)
        found = self._retrieve(name, ids, vectors=(LOCAL_VECTOR,), payload=(LOCAL_XY,))
        return {
            i: stored_local(p.vectors[LOCAL_VECTOR], p.payload)
            for i, p in found.items()
            if p.vectors.get(LOCAL_VECTOR) is not None
        }

    # -- search ----------------------------------------------------------------------
    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each row of ``vectors``, in batched engine requests."""
        check_k(k)
        rows = self._query_vectors(name, vectors)
        where = self._conditions(name, filter)
        queries = [
            VectorQuery(row.tolist(), GLOBAL_VECTOR, k, where, params or SearchParams())
            for row in rows
        ]
        return self._query(name, queries)

    def rescore_local(self, name: str, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]:
        """The given points ranked by MAX_SIM of ``query_local`` against their ``local``
        multivectors, computed by the engine (the sum form of Chamfer similarity)."""
        if not len(ids):
            return []
        self._require_local(name, query_local)
        query = VectorQuery(
            np.asarray(query_local).tolist(),
            LOCAL_VECTOR,
            len(ids),
            params=SearchParams(exact=True),  # the float originals: the true MAX_SIM
            point_ids=self._point_ids(name, ids),
        )
        return self._query(name, [query])[0]

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
        check_k(k)
        self._require_local(name, query_local)
        (row,) = self._query_vectors(name, vector)
        first = VectorQuery(
            row.tolist(), GLOBAL_VECTOR, k, self._conditions(name, filter), params or SearchParams()
        )
        query = VectorQuery(
            np.asarray(query_local).tolist(),
            LOCAL_VECTOR,
            k,
            params=SearchParams(exact=True),
            prefetch=first,
        )
        return self._query(name, [query])[0]

    # -- snapshots (a server feature) --------------------------------------------------
    def create_snapshot(self, name: str) -> SnapshotInfo:
        """Snapshot a collection on the server (the file stays on the server)."""
        self._require_snapshots()
        return self.engine.create_snapshot(self.resolve(name))

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        self._require_snapshots()
        return self.engine.list_snapshots(self.resolve(name))

    def restore_snapshot(self, name: str, source: str) -> None:
        """Recover ``name`` from a snapshot: a snapshot name, a URL, or a local file."""
        self._require_snapshots()
        if name in self.list_aliases():
            raise StoreError(
                f"{name!r} is an alias; restore into the collection itself "
                f"({self.resolve(name)!r}) or into a new name and move the alias"
            )
        self._configs.clear()
        self.engine.restore_snapshot(name, source)

    # -- internals -------------------------------------------------------------------
    def _target(self, name: str) -> str:
        """The name the engine gets: resolved here unless the engine resolves aliases."""
        check_name(name)  # a name no collection can have never reaches the file system
        return name if self.capabilities.native_aliases else self.resolve(name)

    def _writable_config(self, name: str) -> CollectionConfig:
        config = self.collection_config(name)
        if not config.managed:
            raise StoreError(
                f"collection {name!r} in {self.location} was not created by ilias; ilias "
                "writes only to collections it creates: load into a new collection"
            )
        return config

    def _point_ids(self, name: str, ids: Sequence[str]) -> list[Any]:
        """Point ids of dataset ids; a foreign collection's hits already carry point ids
        (a UUID, or an unsigned integer that Qdrant wants as a number)."""
        if self.collection_config(name).managed:
            return [point_id(i) for i in ids]
        return [int(i) if i.isdigit() else i for i in ids]

    def _retrieve(
        self, name: str, ids: Sequence[str], vectors: Sequence[str], payload: Sequence[str] | bool
    ) -> dict[str, StoredPoint]:
        target = self._target(name)
        keys = self._point_ids(name, ids)
        by_point = {str(key): dataset_id for key, dataset_id in zip(keys, ids, strict=True)}
        size = self.capabilities.retrieve_batch
        chunks = [keys[start : start + size] for start in range(0, len(keys), size)]
        found: dict[str, StoredPoint] = {}
        for points in self._parallel(
            lambda chunk: self.engine.retrieve(target, chunk, vectors, payload), chunks
        ):
            found.update((by_point[p.id], p) for p in points)
        return found

    def _query(self, name: str, queries: Sequence[VectorQuery]) -> list[list[Hit]]:
        target = self._target(name)
        managed = self.collection_config(name).managed
        size = self.capabilities.query_batch
        chunks = [queries[start : start + size] for start in range(0, len(queries), size)]
        out: list[list[Hit]] = []
        # Hits of ilias's collections are named by the dataset id in their payload; a
        # foreign collection's by point id.
        named_by = ID_KEY if managed else None
        for chunk in chunks:
            out.extend(self.engine.query(target, chunk, named_by))
        return out

    def _query_vectors(self, name: str, vectors: np.ndarray) -> np.ndarray:
        """Query rows checked like stored ones (dimension, NaN, zero) before any search."""
        rows = np.atleast_2d(vectors)
        ids = [f"query {i}" for i in range(len(rows))]
        return validate_vectors(rows, self.collection_config(name).dim, ids)

    def _require_local(self, name: str, query_local: np.ndarray | None = None) -> None:
        """A clear refusal before a local query reaches a collection that cannot answer it."""
        config = self.collection_config(name)
        if not config.local_dim:
            raise StoreError(
                f"collection {name!r} has no local descriptors; load it with --local to "
                "re-rank with cs, sp or ames"
            )
        if query_local is not None:
            shape = np.asarray(query_local).shape
            if len(shape) != 2 or shape[1] != config.local_dim:
                raise StoreError(f"query local descriptors {shape} vs {config.local_dim}-d stored")

    def _conditions(self, name: str, filter: Filter | None) -> list[Condition]:
        """Filters checked against the collection's indexed fields (a foreign collection's
        fields are unknown, so its filters pass as written)."""
        if not filter:
            return []
        config = self.collection_config(name)
        fields = dict(config.payload_indexes) if config.managed else None
        return conditions(filter, fields, name)

    def _require_snapshots(self) -> None:
        if self.capabilities.no_snapshots:
            raise StoreError(self.capabilities.no_snapshots)

    def _parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        """``fn`` over ``items`` with as many calls in flight as the engine allows, results
        in order; the first failure is raised."""
        parallel = min(self.capabilities.parallel_requests, len(items))
        if parallel <= 1:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(parallel, thread_name_prefix="qdrant") as pool:
            yield from pool.map(fn, items)

    # -- deleting points: takedowns, syncs, writes through the service -----------------
    def delete(
        self,
        name: str,
        ids: Sequence[str] | None = None,
        filter: Filter | None = None,
    ) -> int:
        """Delete points by dataset id or by payload filter; returns how many went.

        Exactly one of ``ids`` and ``filter``. A point goes whole: its ``global`` vector,
        its ``local`` multivector and its payload. Ids that are not stored are skipped (not
        counted); a filter is checked against the indexed fields like a search's, and an
        empty one is refused (``drop`` removes a whole collection). Each engine call is
        acknowledged once applied and durable, so a delete cut by a kill -9 has removed a
        part of the points and nothing else: running it again removes the rest.
        """
        if (ids is None) == (filter is None):
            raise StoreError("delete: give the ids of the points or a filter (one of the two)")
        self._writable_config(name)
        target = self._target(name)
        if ids is not None:
            if any(not isinstance(i, str) for i in ids):
                raise StoreError("delete: point ids are dataset ids (text)")
            unique = list(dict.fromkeys(ids))
            present = self.existing_ids(name, unique)
            keys = [point_id(i) for i in unique if i in present]
            size = self.capabilities.upsert_batch
            for start in range(0, len(keys), size):
                self.engine.delete(target, ids=keys[start : start + size])
            return len(keys)
        clauses = self._conditions(name, filter)
        if not clauses:
            raise StoreError(
                f"delete from {name!r}: an empty filter names no points; to remove the whole "
                f"collection use 'ilias drop {name}'"
            )
        matched = self.engine.count(target, clauses)
        if matched:
            self.engine.delete(target, conditions=clauses)
        return matched


@dataclass(frozen=True)
class PointPage:
    """One page of ``Store.scroll``: dataset ids, their ``global`` vectors (float32 rows,
    in id order) and the payload keys asked for."""

    ids: list[str]
    vectors: np.ndarray
    payloads: list[dict[str, Any]]


@dataclass(frozen=True)
class Collection:
    """One collection of a store: the narrow view that re-rankers and retrievers use."""

    store: Store
    name: str

    @property
    def config(self) -> CollectionConfig:
        return self.store.collection_config(self.name)

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        return self.store.search(self.name, vectors, k, filter, params)

    def search_local(
        self,
        vector: np.ndarray,
        query_local: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        return self.store.search_local(self.name, vector, query_local, k, filter, params)

    def retrieve_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self.store.retrieve_vectors(self.name, ids)

    def retrieve_local(self, ids: Sequence[str]) -> dict[str, LocalFeatures]:
        return self.store.retrieve_local(self.name, ids)

    def rescore_local(self, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]:
        return self.store.rescore_local(self.name, query_local, ids)


def aliases_by_collection(aliases: Mapping[str, str]) -> dict[str, list[str]]:
    """``{alias: collection}`` turned round for listings: each collection's aliases, sorted."""
    grouped: dict[str, list[str]] = {}
    for alias, target in sorted(aliases.items()):
        grouped.setdefault(target, []).append(alias)
    return grouped


def check_k(k: int) -> None:
    """A search asks for at least one result (``-k``)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise StoreError(f"k = {k}: ask for at least one result (-k 10)")


# A name is a folder name on Edge (255 bytes on Linux file systems) and must leave room for
# a versioned load's ``-v<N>`` suffix; Qdrant servers refuse names over 255 characters.
MAX_NAME_BYTES = 200


def check_name(name: str) -> None:
    """Collection and alias names: they become folder names (Edge) and URL parts (server)."""
    if not name or "/" in name or name.startswith(".") or name != name.strip():
        raise StoreError(f"invalid collection name {name!r}: use letters, digits, - and _")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise StoreError(
            f"collection name {name[:40]!r}... is {len(name)} characters long: use at most "
            f"{MAX_NAME_BYTES} bytes"
        )
    if not name.isprintable():
        raise StoreError(f"invalid collection name {name!r}: use letters, digits, - and _")


def conditions(
    filter: Filter | None, fields: Mapping[str, str] | None = None, collection: str = ""
) -> list[Condition]:
    """Our filter mapping as engine-neutral clauses, all of which must hold.

    A value matches exactly; a list, tuple or set matches any of its values; a ``Range``
    bounds a number. With ``fields`` (indexed field -> keyword / integer / float / bool),
    a filter means what it says or is refused: the key must be a field (an unknown key
    would silently match nothing), keyword values are text (``instance=123`` is the name
    "123"), a float value or equality is the range ``[v, v]`` (Qdrant matches keywords,
    integers and bools exactly: a float compared as a keyword never matches), and ranges
    apply to numeric fields only.
    """
    out: list[Condition] = []
    for key, value in (filter or {}).items():
        kind = None if fields is None else fields.get(key)
        if fields is not None and kind is None:
            known = ", ".join(sorted(fields)) or "none"
            raise StoreError(
                f"cannot filter {collection or 'the collection'} on {key!r}: not an indexed "
                f"field (fields: {known})"
            )
        out.append(_condition(key, value, kind))
    return out


def _condition(key: str, value: Any, kind: str | None) -> Condition:
    values = list(value) if isinstance(value, list | tuple | set | frozenset) else [value]
    if not values:
        raise StoreError(f"filter on {key!r}: an empty list of values matches nothing")
    if isinstance(value, Range):
        if kind in ("keyword", "bool", "text"):
            raise StoreError(f"filter on {key!r}: a range needs a number field, {key} is {kind}")
        return Condition(key, range=value)
    if kind in ("keyword", "text"):
        values = [v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
                  for v in values]  # fmt: skip
    elif kind in ("integer", "float", "bool"):
        wrong = [v for v in values if isinstance(v, str) or (kind == "bool") != isinstance(v, bool)]
        if wrong:
            expected = "true or false" if kind == "bool" else "a number"
            raise StoreError(f"filter on {key!r}: {wrong[0]!r} is not {expected} ({key} is {kind})")
        if kind == "integer" and any(float(v) != int(v) for v in values):
            raise StoreError(f"filter on {key!r}: {key} holds whole numbers, not {value!r}")
        values = [int(v) for v in values] if kind == "integer" else values
        if kind == "float" and len(values) == 1:
            return Condition(key, range=Range(gte=float(values[0]), lte=float(values[0])))
        if kind == "float":
            raise StoreError(f"filter on {key!r}: match one number or a range, not a list")
    if len(values) == 1 and not isinstance(value, list | tuple | set | frozenset):
        (single,) = values
        if isinstance(single, float):
            return Condition(key, range=Range(gte=single, lte=single))
        return Condition(key, value=single)
    return Condition(key, any_of=tuple(values))


def stored_local(vectors: Sequence[Any], payload: Mapping[str, Any] | None) -> LocalFeatures:
    """Local features from a stored ``local`` multivector and its ``local_xy`` payload."""
    descriptors = np.asarray(vectors, dtype=np.float32)
    xy = np.asarray((payload or {}).get(LOCAL_XY, []), dtype=np.float32).reshape(-1, 2)
    return LocalFeatures(descriptors, xy, np.ones(len(descriptors), np.float32))


def validate_local(local: Sequence[LocalFeatures], dim: int, ids: Sequence[str]) -> None:
    """Local descriptor sets must match the collection's ``local_dim`` and be finite."""
    if len(local) != len(ids):
        raise VectorValidationError(f"{len(local)} local descriptor sets for {len(ids)} ids")
    for dataset_id, features in zip(ids, local, strict=True):
        descriptors = np.asarray(features.descriptors, dtype=np.float32)
        if descriptors.ndim != 2 or descriptors.shape[1] != dim or not len(descriptors):
            raise VectorValidationError(
                f"local descriptors of {dataset_id} have shape {descriptors.shape}; the "
                f"collection holds {dim}-d ones. Load into a new collection to change them"
            )
        if not np.isfinite(descriptors).all():
            raise VectorValidationError(f"local descriptors of {dataset_id} hold NaN/inf")


def validate_vectors(vectors: np.ndarray, dim: int, ids: Sequence[str]) -> np.ndarray:
    """The float32 rows the engine will receive, refused where Qdrant would take them silently.

    NaN/inf and zero rows are refused by dataset id: Qdrant accepts NaN vectors without a
    word and never returns them, and a zero vector has no cosine. The check runs on the
    float32 cast, so a float64 value beyond float32's range (which becomes inf) is caught.
    """
    array = np.asarray(vectors)
    if array.ndim != 2 or array.shape[1] != dim:
        raise VectorValidationError(
            f"vectors have shape {array.shape}, the collection holds {dim}-d vectors; "
            "load into a new collection (or drop this one: ilias drop NAME) to change the encoder"
        )
    if len(array) != len(ids):
        raise VectorValidationError(f"{len(array)} vectors for {len(ids)} ids")
    with np.errstate(over="ignore", invalid="ignore"):
        rows = array.astype(np.float32, copy=False)
        finite = np.asarray(np.isfinite(rows).all(axis=1))
        norms = np.linalg.norm(np.where(finite[:, None], rows, 0), axis=1)
    bad = np.flatnonzero(~finite | (norms < 1e-12) | ~np.isfinite(norms))
    if len(bad):
        names = ", ".join(ids[i] for i in bad[:5])
        raise VectorValidationError(
            f"{len(bad)} vector(s) are NaN/inf, beyond float32's range or zero (e.g. "
            f"{names}); nothing was written. Check the encoder's output for these images"
        )
    return rows
