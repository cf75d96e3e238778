"""EdgeStore: Qdrant Edge, the real Qdrant segment engine embedded in this process.

A store is a folder; each collection is a subfolder holding the Edge shard (``shard/``)
and ``collection.json`` (the config and how the vectors were made). One process owns a
shard at a time (Edge locks its WAL), so a second ``ilias`` process on the same collection
gets a clear error instead of a corrupt index.

Bulk loads are cheap here because Edge has no background optimizer: upserts land in an
appendable segment and nothing is indexed until ``finish_load`` runs ``optimize()``, which
builds HNSW and the int8 quantized vectors once, over everything.

Aliases live in ``aliases.json`` at the store's root, replaced atomically (write a temporary
file, then ``os.replace``) under a lock file, so a reader in another process sees the old
mapping or the new one, never half of it; every collection operation resolves them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from ilias.errors import StoreError
from ilias.indexing.local_features import LocalFeatures
from ilias.indexing.store.base import (
    GLOBAL_VECTOR,
    LOCAL_VECTOR,
    LOCAL_XY,
    CollectionConfig,
    CollectionInfo,
    Filter,
    Hit,
    Range,
    SearchParams,
    Store,
    point_id,
    stored_local,
    validate_local,
    validate_vectors,
)

_SCHEMA_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "text": qe.PayloadSchemaType.Text,
}
_RETRIEVE_CHUNK = 1024
# Hits carry the payload a user reads, not the patch coordinates kept for re-ranking.
_HIT_PAYLOAD = qe.PayloadSelector.Exclude([LOCAL_XY])
_ALIASES = "aliases.json"


class EdgeStore(Store):
    """Collections as Qdrant Edge shards under one folder."""

    def __init__(self, path: str | Path):
        self.root = Path(path).expanduser()
        self.location = f"edge:{self.root}"
        self._shards: dict[str, qe.EdgeShard] = {}  # keyed by collection, never by alias
        self._aliases_seen: tuple[int, int, dict[str, str]] | None = None

    # -- collections -----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "collection.json").is_file())

    def collection_exists(self, name: str) -> bool:
        return (self._dir(name) / "collection.json").is_file()

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        if name in self.list_aliases():
            raise StoreError(
                f"{name!r} is an alias in {self.location}; create the collection under another "
                "name (a versioned load does this for you) or delete the alias"
            )
        if self.collection_exists(name):
            raise StoreError(f"collection {name!r} already exists in {self.location}")
        folder = self._dir(name)
        if folder.exists():  # a creation that died before collection.json was written
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        shard = qe.EdgeShard.create(str(folder / "shard"), _edge_config(config))
        for field_name, schema in config.payload_indexes.items():
            shard.update(qe.UpdateOperation.create_field_index(field_name, _SCHEMA_TYPES[schema]))
        shard.flush()
        self._shards[name] = shard
        # Written last: a collection exists only once its shard and indexes do.
        (folder / "collection.json").write_text(json.dumps(config.to_dict(), indent=2))

    def collection_config(self, name: str) -> CollectionConfig:
        path = self._dir(name) / "collection.json"
        if not path.is_file():
            known = ", ".join(self.list_collections()) or "none"
            raise StoreError(
                f"no collection {name!r} in {self.location} (collections: {known}); "
                "create it with 'ilias load'"
            )
        return CollectionConfig.from_dict(json.loads(path.read_text()))

    def info(self, name: str) -> CollectionInfo:
        config = self.collection_config(name)
        shard_info = self._shard(name).info()
        return CollectionInfo(
            name=name,
            points=shard_info.points_count,
            indexed_vectors=shard_info.indexed_vectors_count,
            segments=shard_info.segments_count,
            config=config,
            location=str(self._dir(name)),
            quantization=f"int8 q={config.quantile} ram" if config.quantization else None,
        )

    def drop(self, name: str) -> None:
        aliases = self.list_aliases()
        if name in aliases:
            raise StoreError(
                f"{name!r} is an alias of {aliases[name]!r}, not a collection; drop "
                f"{aliases[name]!r} or delete the alias"
            )
        shard = self._shards.pop(name, None)
        if shard is not None:
            shard.close()
        shutil.rmtree(self._dir(name), ignore_errors=True)
        if name in aliases.values():  # as Qdrant does: aliases of a dropped collection go too
            with self._aliases_locked() as current:
                for alias in [a for a, target in current.items() if target == name]:
                    del current[alias]

    def close(self) -> None:
        for shard in self._shards.values():
            shard.flush()
            shard.close()
        self._shards.clear()

    # -- aliases -----------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        path = self.root / _ALIASES
        try:
            stat = path.stat()
        except FileNotFoundError:
            return {}
        seen = self._aliases_seen
        if seen is None or seen[:2] != (stat.st_mtime_ns, stat.st_size):
            # Re-read only when the file changed: every search resolves its collection name.
            seen = (stat.st_mtime_ns, stat.st_size, json.loads(path.read_text()))
            self._aliases_seen = seen
        return dict(seen[2])

    def set_alias(self, alias: str, collection: str) -> None:
        _check_name(alias)
        if (self.root / alias / "collection.json").is_file():
            raise StoreError(
                f"{alias!r} is a collection in {self.location}; an alias needs a name of its own"
            )
        with self._aliases_locked() as current:
            if collection in current:
                raise StoreError(
                    f"{collection!r} is an alias; point {alias!r} at a collection "
                    f"({current[collection]!r})"
                )
            self.collection_config(collection)  # clear error for a missing collection
            current[alias] = collection

    def delete_alias(self, alias: str) -> None:
        with self._aliases_locked() as current:
            current.pop(alias, None)

    @contextlib.contextmanager
    def _aliases_locked(self) -> Iterator[dict[str, str]]:
        """Read-modify-write of aliases.json, exclusive across processes, replaced atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".aliases.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.root / _ALIASES
            current = json.loads(path.read_text()) if path.is_file() else {}
            before = dict(current)
            yield current
            if current != before:
                handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".aliases.")
                with os.fdopen(handle, "w") as out:
                    json.dump(current, out, indent=2, sort_keys=True)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
                self._aliases_seen = None

    # -- points ----------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
        local: Sequence[LocalFeatures] | None = None,
    ) -> None:
        config = self.collection_config(name)
        vectors = validate_vectors(vectors, config.dim, ids)
        if config.local_dim:
            if local is None:
                raise StoreError(
                    f"collection {name!r} stores local descriptors: extract them too (--local)"
                )
            validate_local(local, config.local_dim, ids)
            points = [
                qe.Point(
                    point_id(i),
                    {GLOBAL_VECTOR: v.tolist(), LOCAL_VECTOR: f.descriptors.tolist()},
                    {**payload, LOCAL_XY: f.xy.reshape(-1).round(1).tolist()},
                )
                for i, v, payload, f in zip(ids, vectors, payloads, local, strict=True)
            ]
        else:
            points = [
                qe.Point(point_id(i), {GLOBAL_VECTOR: v.tolist()}, payload)
                for i, v, payload in zip(ids, vectors, payloads, strict=True)
            ]
        if points:
            self._shard(name).update(qe.UpdateOperation.upsert_points(points))

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        by_point = {point_id(i): i for i in ids}
        found: set[str] = set()
        keys = list(by_point)
        shard = self._shard(name)
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            records = shard.retrieve(keys[start : start + _RETRIEVE_CHUNK], False, False)
            found.update(by_point[str(r.id)] for r in records)
        return found

    def finish_load(self, name: str) -> None:
        shard = self._shard(name)
        shard.optimize()
        shard.flush()

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        vectors = self._query_vectors(name, vectors)
        edge_filter = _edge_filter(filter)
        edge_params = _edge_params(params or SearchParams())
        requests = [
            qe.QueryRequest(
                limit=k,
                query=qe.Query.Nearest(v.tolist(), using=GLOBAL_VECTOR),
                filter=edge_filter,
                params=edge_params,
                with_payload=_HIT_PAYLOAD,
            )
            for v in vectors
        ]
        results = self._shard(name).query_batch(qe.QueryBatchRequest(requests))
        return [[_hit(p) for p in points] for points in results]

    def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        by_point = {point_id(i): i for i in ids}
        keys = list(by_point)
        out: dict[str, np.ndarray] = {}
        shard = self._shard(name)
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            for record in shard.retrieve(keys[start : start + _RETRIEVE_CHUNK], False, True):
                out[by_point[str(record.id)]] = np.asarray(
                    record.vector[GLOBAL_VECTOR], dtype=np.float32
                )
        return out

    def retrieve_local(self, name: str, ids: Sequence[str]) -> dict[str, LocalFeatures]:
        by_point = {point_id(i): i for i in ids}
        keys = list(by_point)
        out: dict[str, LocalFeatures] = {}
        shard = self._shard(name)
        for start in range(0, len(keys), _RETRIEVE_CHUNK):
            chunk = keys[start : start + _RETRIEVE_CHUNK]
            for record in shard.retrieve(
                chunk, qe.PayloadSelector.Include([LOCAL_XY]), [LOCAL_VECTOR]
            ):
                vectors = (record.vector or {}).get(LOCAL_VECTOR)
                if vectors is None:
                    continue
                out[by_point[str(record.id)]] = stored_local(vectors, record.payload)
        return out

    def rescore_local(self, name: str, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]:
        if not ids:
            return []
        self._require_local(name, query_local)
        request = qe.QueryRequest(
            limit=len(ids),
            query=qe.Query.Nearest(np.asarray(query_local).tolist(), using=LOCAL_VECTOR),
            filter=qe.Filter(must=[qe.HasIdCondition({point_id(i) for i in ids})]),
            params=qe.SearchParams(exact=True),  # float originals: the true MAX_SIM
            with_payload=_HIT_PAYLOAD,
        )
        return [_hit(p) for p in self._shard(name).query(request)]

    def search_local(
        self,
        name: str,
        vector: np.ndarray,
        query_local: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        self._require_local(name, query_local)
        request = qe.QueryRequest(
            limit=k,
            prefetches=[
                qe.Prefetch(
                    query=qe.Query.Nearest(np.asarray(vector).tolist(), using=GLOBAL_VECTOR),
                    limit=k,
                    filter=_edge_filter(filter),
                    params=_edge_params(params or SearchParams()),
                )
            ],
            query=qe.Query.Nearest(np.asarray(query_local).tolist(), using=LOCAL_VECTOR),
            params=qe.SearchParams(exact=True),
            with_payload=_HIT_PAYLOAD,
        )
        return [_hit(p) for p in self._shard(name).query(request)]

    def count(self, name: str, filter: Filter | None = None) -> int:
        return self._shard(name).count(qe.CountRequest(exact=True, filter=_edge_filter(filter)))

    # -- internals -------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        _check_name(name)
        return self.root / self.resolve(name)

    def _shard(self, name: str) -> qe.EdgeShard:
        name = self.resolve(name)  # one shard handle per collection, whatever name reached it
        shard = self._shards.get(name)
        if shard is None:
            self.collection_config(name)  # clear error for a missing collection
            try:
                shard = qe.EdgeShard.load(str(self._dir(name) / "shard"))
            except Exception as error:  # the binding raises plain Exception
                if "WouldBlock" in str(error):
                    raise StoreError(
                        f"collection {name!r} in {self.location} is open in another process "
                        "(Qdrant Edge allows one); wait for it or stop it"
                    ) from error
                raise StoreError(f"cannot open collection {name!r}: {error}") from error
            self._shards[name] = shard
        return shard


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"invalid collection name {name!r}: use letters, digits, - and _")


def _edge_config(config: CollectionConfig) -> qe.EdgeConfig:
    quantization = (
        qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=config.quantile, always_ram=True
        )
        if config.quantization
        else None
    )
    vectors = {GLOBAL_VECTOR: qe.EdgeVectorParams(size=config.dim, distance=qe.Distance.Cosine)}
    if config.local_dim:
        # Only ever re-scored, never searched: no HNSW graph (m=0); int8 copies in RAM keep
        # 100 descriptors per image affordable, and re-scoring reads the float originals.
        vectors[LOCAL_VECTOR] = qe.EdgeVectorParams(
            size=config.local_dim,
            distance=qe.Distance.Cosine,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
            quantization_config=quantization,
        )
    return qe.EdgeConfig(
        vectors=vectors,
        hnsw_config=qe.HnswIndexConfig(
            m=config.hnsw_m, ef_construct=config.hnsw_ef_construct, full_scan_threshold=10_000
        ),
        quantization_config=quantization,
        # Index every segment at finish_load, however small: a demo-sized collection is
        # searched through the same HNSW + int8 path as a 100M one.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def _edge_params(params: SearchParams) -> qe.SearchParams:
    return qe.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=params.exact,
        quantization=qe.QuantizationSearchParams(
            ignore=params.ignore_quantization,
            rescore=params.rescore,
            oversampling=params.oversampling,
        ),
    )


def _edge_filter(filter: Filter | None) -> qe.Filter | None:
    if not filter:
        return None
    conditions = []
    for key, value in filter.items():
        if isinstance(value, Range):
            condition = qe.FieldCondition(
                key=key, range=qe.RangeFloat(gte=value.gte, lte=value.lte, gt=value.gt, lt=value.lt)
            )
        elif isinstance(value, list | tuple | set | frozenset):
            condition = qe.FieldCondition(key=key, match=qe.MatchAny(list(value)))
        else:
            condition = qe.FieldCondition(key=key, match=qe.MatchValue(value))
        conditions.append(condition)
    return qe.Filter(must=conditions)


def _hit(point: qe.ScoredPoint) -> Hit:
    payload = dict(point.payload or {})
    return Hit(id=str(payload.get("id", point.id)), score=float(point.score), payload=payload)
