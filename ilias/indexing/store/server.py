"""A Qdrant server (one node, a cluster, or the cloud) through qdrant-client.

The same operations as ``EdgeStore``, through ``qdrant-client`` over REST or gRPC. What the
server adds, and this class exposes through one spec string (``open_store``):

- sharding and replication (``shards``, ``replicas``, ``write_consistency``), decided when a
  collection is created;
- int8 scalar quantization (quantile 0.99, quantized vectors always in RAM) with the
  originals where the collection's storage preset puts them (``layout.py``: ``disk`` keeps
  float32 on disk, ``compact`` float16 on disk with HNSW and payload on disk too);
  ``on_disk=true`` in the spec makes ``disk`` the default: at 100M vectors the originals
  are the memory bill, and int8 search only reads them to rescore the shortlist;
- bulk upload in parallel batches (``batch``, ``parallel``) with indexing deferred:
  collections are created with ``indexing_threshold=0`` so the optimizer does not rebuild
  HNSW while points stream in; ``finish_load`` turns it back on (``indexing_threshold``,
  Qdrant's default 20000 KB) and the server builds the index once, in the background;
- ``wait=true`` on every write, so an acknowledged upsert is applied and visible: a resumed
  load's ``existing_ids`` and the counts printed after a load are exact;
- bounded retries with backoff on timeouts, refused connections, 5xx, 429 and gRPC
  UNAVAILABLE (``retry.py``), then a ``StoreError`` naming the URL.

The API key comes from ``QDRANT_API_KEY`` and never from the spec, so it does not end up in
shell history, logs or the Dask task graph.

Collection configs (dimension, quantile, how the vectors were made) are kept in Qdrant's
collection metadata (server >= 1.16), so a collection carries its own recipe exactly as an
Edge collection's ``collection.json`` does.

``memory:`` and ``memory:NAME`` open qdrant-client's in-process mode: the same client API
against a pure-Python brute-force engine that accepts but ignores quantization, HNSW,
sharding and payload-index settings. It exists to test this class without a server; named
ones are shared within a process (not across processes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ilias.errors import StoreError
from ilias.indexing.store.base import Store
from ilias.indexing.store.engine import (
    Capabilities,
    Condition,
    Engine,
    EngineInfo,
    PointBatch,
    StoredPoint,
    VectorQuery,
    hits_of,
    missing_collection,
)
from ilias.indexing.store.layout import LAYOUTS, StorageLayout, segment_plan
from ilias.indexing.store.retry import RetryPolicy, call_with_retry
from ilias.indexing.store.schema import (
    GLOBAL_VECTOR,
    LOCAL_VECTOR,
    LOCAL_XY,
    CollectionConfig,
    SnapshotInfo,
)
from ilias.types import Hit, SearchParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_KEY_ENV = "QDRANT_API_KEY"
METADATA_KEY = "ilias"
LEDGER_KEY = "ilias_shards"  # the shard ledger: {shard name: entry}
# Where the official Qdrant image keeps snapshots (storage.snapshots_path, /qdrant/snapshots).
SERVER_SNAPSHOTS = "/qdrant/snapshots"
_SCHEMA_TYPES = ("keyword", "integer", "float", "bool", "text")
_MEMORY_NO_SNAPSHOTS = (
    "qdrant-client's in-process engine has no snapshots; they need a Qdrant server "
    "(--store http://host:6333)"
)

# Named in-process databases: every ServerStore opened on ``memory:NAME`` in this process
# talks to the same QdrantClient(":memory:"), as SQLite's shared-cache memory URIs do.
_MEMORY_CLIENTS: dict[str, Any] = {}
_MEMORY_LOCK = threading.Lock()


@dataclass(frozen=True)
class ServerOptions:
    """Options of a server store, written as the query string of its spec.

    ``http://qdrant:6333?grpc=true&shards=6&replicas=2&on_disk=true``. Defaults are left out
    of a spec; unknown keys are refused so that a typo does not silently change nothing.
    """

    grpc: bool = False  # prefer gRPC (port grpc_port) for data calls
    grpc_port: int = 6334
    timeout: int = 60  # seconds per request
    attempts: int = 5  # tries per request, retries included
    shards: int | None = None  # shard_number at creation (server default: one per node)
    replicas: int | None = None  # replication_factor at creation
    write_consistency: int | None = None  # write_consistency_factor at creation
    on_disk: bool = False  # default storage "disk" (originals mmap), unless a config names one
    payload_on_disk: bool = False  # payload on disk (always with "compact"); indexes stay in RAM
    batch: int = 256  # points per upsert request
    parallel: int = 4  # upsert requests in flight
    indexing_threshold: int = 20_000  # KB per segment before HNSW is built, after the load

    @classmethod
    def from_query(cls, query: str) -> ServerOptions:
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in parse_qsl(query, keep_blank_values=True):
            if key == "api_key":
                raise StoreError(
                    f"put the API key in the {API_KEY_ENV} environment variable, not in the "
                    "store spec (specs end up in logs and shell history)"
                )
            if key not in known:
                raise StoreError(f"unknown store option {key!r}; known: {', '.join(sorted(known))}")
            values[key] = _parse_option(key, raw, cls.__dataclass_fields__[key].type)
        return cls(**values)

    def to_query(self) -> str:
        default = ServerOptions()
        changed = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }
        return urlencode(
            {k: str(v).lower() if isinstance(v, bool) else v for k, v in changed.items()}
        )


def _parse_option(key: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    if kind == "bool":
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on", ""}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise StoreError(f"store option {key}={raw!r}: use true or false")
    try:
        value = int(raw)
    except ValueError as error:
        raise StoreError(f"store option {key}={raw!r}: expected a whole number") from error
    minimum = 0 if key == "indexing_threshold" else 1
    if value < minimum:
        raise StoreError(f"store option {key}={raw!r}: must be at least {minimum}")
    return value


class ServerEngine(Engine):
    """qdrant-client calls, each with bounded retries; REST, gRPC, or the in-process engine.

    The in-process engine (``memory:``) differs only in what it declares: one call at a
    time (its Python objects have no locks), no snapshots, and writes from other processes
    never reach it (each process has its own).
    """

    def __init__(
        self,
        url: str,
        options: ServerOptions,
        *,
        client: Any,
        api_key: str | None,
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        in_process: bool = False,
        owns_client: bool = True,
    ):
        self.url = url.rstrip("/")
        self.location = self.url
        self.options = options
        self.client = client
        self._api_key = api_key
        self._retry = retry
        self._sleep = sleep
        self._owns_client = owns_client
        if in_process:
            self.capabilities = Capabilities(
                native_aliases=True,
                upsert_batch=options.batch,
                no_snapshots=_MEMORY_NO_SNAPSHOTS,
            )
        else:
            self.capabilities = Capabilities(
                native_aliases=True,
                shared_across_processes=True,
                parallel_requests=options.parallel,
                upsert_batch=options.batch,
            )

    @property
    def spec(self) -> str:
        """The ``open_store`` spec of this engine (without the API key)."""
        query = self.options.to_query()
        return f"{self.url}?{query}" if query else self.url

    def worker_spec(self) -> str | None:
        return self.spec

    # -- collections -----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        answer = self._call(lambda: self.client.get_collections(), "listing collections")
        return [c.name for c in answer.collections]

    def has_collection(self, name: str) -> bool:
        found = self._call(lambda: self.client.collection_exists(name), f"a lookup of {name!r}")
        return bool(found)

    def default_storage(self) -> str:
        """``on_disk=true`` in the store spec makes ``disk`` the default (and the floor of
        ``auto``); a collection config that names a preset wins over it."""
        return "disk" if self.options.on_disk else "ram"

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        from qdrant_client import models

        opts = self.options
        layout = LAYOUTS[config.storage or self.default_storage()]
        quantization = (
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=config.quantile, always_ram=True
                )
            )
            if config.quantization
            else None
        )
        # The long-standing flags (on_disk, always_ram, on_disk_payload), which every server
        # that qdrant-client 1.20 talks to understands, rather than the newer ``memory``.
        datatype = models.Datatype.FLOAT16 if layout.originals == "float16" else None
        vectors_config = {
            GLOBAL_VECTOR: models.VectorParams(
                size=config.dim,
                distance=models.Distance.COSINE,
                on_disk=layout.originals_on_disk,
                datatype=datatype,
            )
        }
        if config.local_dim:
            # Re-scored only, never searched: no HNSW graph for the local multivector.
            vectors_config[LOCAL_VECTOR] = models.VectorParams(
                size=config.local_dim,
                distance=models.Distance.COSINE,
                on_disk=layout.originals_on_disk,
                datatype=datatype,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
                hnsw_config=models.HnswConfigDiff(m=0),
            )
        plan = segment_plan(
            config.storage or self.default_storage(),
            config.dim,
            config.expected_points,
            shards=opts.shards or 1,
            index=config.index,
        )
        payload_on_disk = (
            opts.payload_on_disk if layout.payload_on_disk is None else layout.payload_on_disk
        )
        create = dict(
            collection_name=name,
            vectors_config=vectors_config,
            shard_number=opts.shards,
            replication_factor=opts.replicas,
            write_consistency_factor=opts.write_consistency,
            on_disk_payload=payload_on_disk,
            hnsw_config=models.HnswConfigDiff(
                m=config.graph_m,  # 0 for a scanned collection: no graph, plain int8 scans
                ef_construct=config.hnsw_ef_construct,
                on_disk=layout.hnsw_on_disk,
            ),
            # Deferred indexing: no HNSW is built while the load streams points in;
            # build_index re-enables it and the server indexes everything once. Segment
            # sizing by the expected size: see segment_plan.
            optimizers_config=models.OptimizersConfigDiff(
                indexing_threshold=0,
                default_segment_number=plan.number,
                max_segment_size=plan.max_size_kb,
            ),
            quantization_config=quantization,
            metadata={METADATA_KEY: config.to_dict()},
            timeout=opts.timeout,
        )
        try:
            self._call(lambda: self.client.create_collection(**create), f"creating {name!r}")
        except StoreError:
            # A creation whose answer was lost (timeout) and then retried meets its own
            # collection; it did not exist a moment ago, so it is ours.
            if not self._exists_quietly(name):
                raise
        self._ensure_payload_indexes(name, config, existing=set())

    def read_config(self, name: str) -> CollectionConfig:
        details = self._collection(name)
        meta = (details.config.metadata or {}).get(METADATA_KEY)
        if meta:
            return CollectionConfig.from_dict(meta)
        vectors = details.config.params.vectors
        params = vectors.get(GLOBAL_VECTOR) if isinstance(vectors, dict) else None
        if params is None:
            raise StoreError(
                f"collection {name!r} in {self.location} has no {GLOBAL_VECTOR!r} vector: it "
                "was not created by ilias; load into a new collection"
            )
        # Another tool's collection with a ``global`` vector: searchable, recipe unknown.
        return CollectionConfig(dim=params.size, metadata={}, managed=False)

    def info(self, name: str, config: CollectionConfig) -> EngineInfo:
        details = self._collection(name)
        params = details.config.params
        target = self.list_aliases().get(name, name)
        return EngineInfo(
            points=details.points_count or 0,
            indexed_vectors=details.indexed_vectors_count or 0,
            segments=details.segments_count or 0,
            location=f"{self.location}/collections/{target}",
            quantization=_describe_quantization(details.config.quantization_config),
            status=getattr(details.status, "value", str(details.status)),
            shards=params.shard_number,
            replicas=params.replication_factor,
            layout=_reported_layout(details.config),
        )

    def build_index(self, name: str, config: CollectionConfig) -> None:
        """Turn indexing back on; the server builds HNSW and int8 in the background.

        Also creates any payload index a crashed creation left out.
        """
        from qdrant_client import models

        self._call(
            lambda: self.client.update_collection(
                collection_name=name,
                optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=self.options.indexing_threshold
                ),
                timeout=self.options.timeout,
            ),
            f"re-enabling indexing of {name!r}",
            collection=name,
        )
        existing = set(self._collection(name).payload_schema or {})
        self._ensure_payload_indexes(name, config, existing)

    def drop(self, name: str) -> None:
        self._call(
            lambda: self.client.delete_collection(name, timeout=self.options.timeout),
            f"dropping {name!r}",
        )

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    # -- points ----------------------------------------------------------------------
    def upsert(self, name: str, batch: PointBatch) -> None:
        from qdrant_client import models

        vectors = {
            key: rows.tolist() if isinstance(rows, np.ndarray) else rows
            for key, rows in batch.vectors.items()
        }
        points = models.Batch(ids=list[Any](batch.ids), vectors=vectors, payloads=batch.payloads)
        self._call(
            # wait=True: acknowledged means applied, so a resumed load that asks which ids
            # exist gets the truth, and counts after a load are exact.
            lambda: self.client.upsert(
                collection_name=name, points=points, wait=True, timeout=self.options.timeout
            ),
            f"an upsert of {len(batch.ids)} points into {name!r}",
            collection=name,
        )

    def retrieve(
        self,
        name: str,
        ids: Sequence[str | int],
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
    ) -> list[StoredPoint]:
        records = self._call(
            lambda: self.client.retrieve(
                collection_name=name,
                ids=list(ids),
                with_payload=payload if isinstance(payload, bool) else list(payload),
                with_vectors=list(vectors) or False,
            ),
            f"reading {len(ids)} points of {name!r}",
            collection=name,
        )
        return _stored(records)

    def scroll(
        self,
        name: str,
        offset: str | int | None,
        limit: int,
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
        conditions: Sequence[Condition] = (),
    ) -> tuple[list[StoredPoint], str | int | None]:
        records, following = self._call(
            lambda: self.client.scroll(
                collection_name=name,
                scroll_filter=_filter(conditions),
                offset=offset,
                limit=limit,
                with_payload=payload if isinstance(payload, bool) else list(payload),
                with_vectors=list(vectors) or False,
                timeout=self.options.timeout,
            ),
            f"reading {limit} points of {name!r} from {offset}",
            collection=name,
        )
        return _stored(records), following

    def query(
        self, name: str, queries: Sequence[VectorQuery], named_by: str | None = None
    ) -> list[list[Hit]]:
        from qdrant_client import models

        requests = [
            models.QueryRequest(
                query=q.vector,
                using=q.using,
                limit=q.limit,
                prefetch=_prefetch(q.prefetch) if q.prefetch else None,
                filter=_filter(q.conditions, q.point_ids),
                params=_params(q.params),
                with_payload=models.PayloadSelectorExclude(exclude=[LOCAL_XY]),
            )
            for q in queries
        ]
        answers = self._call(
            lambda: self.client.query_batch_points(
                collection_name=name, requests=requests, timeout=self.options.timeout
            ),
            f"a search of {name!r}",
            collection=name,
        )
        return [hits_of(answer.points, named_by) for answer in answers]

    def count(self, name: str, conditions: Sequence[Condition]) -> int:
        answer = self._call(
            lambda: self.client.count(
                collection_name=name, count_filter=_filter(conditions), exact=True
            ),
            f"a count of {name!r}",
            collection=name,
        )
        return int(answer.count)

    def set_payload(self, name: str, ids: Sequence[str | int], payload: Mapping[str, Any]) -> None:
        self._call(
            lambda: self.client.set_payload(
                collection_name=name, payload=dict(payload), points=list(ids), wait=True
            ),
            f"tagging {len(ids)} points of {name!r}",
            collection=name,
        )

    # -- the shard ledger: collection metadata, next to the ilias config ------------------
    def read_ledger(self, name: str) -> dict[str, dict[str, Any]]:
        details = self._call(lambda: self.client.get_collection(name), f"reading {name!r}")
        ledger = (details.config.metadata or {}).get(LEDGER_KEY) or {}
        return {shard: dict(entry) for shard, entry in ledger.items()}

    def record_shards(self, name: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        # Qdrant merges metadata by top-level key, so the ledger is rewritten whole; only
        # the load's driver writes it.
        ledger = {**self.read_ledger(name), **{s: dict(e) for s, e in entries.items()}}
        self._call(
            lambda: self.client.update_collection(name, metadata={LEDGER_KEY: ledger}),
            f"recording loaded shards of {name!r}",
            collection=name,
        )

    # -- aliases -----------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        answer = self._call(lambda: self.client.get_aliases(), "listing aliases")
        return {a.alias_name: a.collection_name for a in answer.aliases}

    def point_alias(self, alias: str, collection: str, replace: bool) -> None:
        from qdrant_client import models

        operations: list[Any] = []
        if replace:
            operations.append(
                models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=collection, alias_name=alias)
            )
        )
        # One request: Qdrant applies the delete and the create atomically.
        self._call(
            lambda: self.client.update_collection_aliases(
                change_aliases_operations=operations, timeout=self.options.timeout
            ),
            f"pointing alias {alias!r} at {collection!r}",
        )

    def delete_alias(self, alias: str) -> None:
        from qdrant_client import models

        operation = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
        self._call(
            lambda: self.client.update_collection_aliases(change_aliases_operations=[operation]),
            f"deleting alias {alias!r}",
        )

    # -- snapshots ---------------------------------------------------------------------
    def create_snapshot(self, name: str) -> SnapshotInfo:
        self._collection(name)  # clear error for a missing collection
        description = self._call(
            lambda: self.client.create_snapshot(collection_name=name, wait=True),
            f"a snapshot of {name!r}",
        )
        return self._snapshot_info(name, description)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        found = self._call(
            lambda: self.client.list_snapshots(collection_name=name),
            f"listing snapshots of {name!r}",
            collection=name,
        )
        return [self._snapshot_info(name, d) for d in found]

    def restore_snapshot(self, name: str, source: str) -> None:
        """Recover collection ``name`` from ``source``, replacing what it holds.

        ``source``: a snapshot name of ``name`` on this server (``ilias snapshot list``;
        read from ``/qdrant/snapshots`` as the official image lays it out), an ``http(s)://``
        URL or ``file:///`` path the *server* can read, or a file on this machine, which is
        uploaded.
        """
        local = Path(source).expanduser()
        if "://" not in source and local.is_file():
            self._upload_snapshot(name, local)
            return
        # A bare name is a snapshot of this collection on the server: read from the server's
        # own snapshot folder, not over the network (the URL this client uses may not be one
        # the server can reach itself by, e.g. a port published by Docker).
        location = source if "://" in source else f"file://{SERVER_SNAPSHOTS}/{name}/{source}"
        same_server = location.startswith(self._rest_base())
        self._call(
            lambda: self.client.recover_snapshot(
                collection_name=name,
                location=location,
                api_key=self._api_key if same_server else None,
                wait=True,
            ),
            f"restoring {name!r} from {source}",
        )

    def _upload_snapshot(self, name: str, path: Path) -> None:
        def upload() -> Any:
            with path.open("rb") as handle:
                return self.client.http.snapshots_api.recover_from_uploaded_snapshot(
                    collection_name=name, wait=True, snapshot=handle
                )

        self._call(upload, f"restoring {name!r} from the uploaded file {path}")

    def _snapshot_info(self, collection: str, description: Any) -> SnapshotInfo:
        return SnapshotInfo(
            name=description.name,
            size=int(description.size or 0),
            created=description.creation_time,
            location=f"{self._rest_base()}/collections/{collection}/snapshots/{description.name}",
        )

    def _rest_base(self) -> str:
        parts = urlsplit(self.url)
        if parts.scheme.startswith("grpc"):
            scheme = "https" if parts.scheme == "grpcs" else "http"
            return urlunsplit((scheme, f"{parts.hostname}:6333", parts.path, "", ""))
        return self.url

    # -- internals -------------------------------------------------------------------
    def server_version(self) -> str:
        return str(self._call(lambda: self.client.info(), "the version request").version)

    def _collection(self, name: str) -> Any:
        return self._call(
            lambda: self.client.get_collection(name), f"reading {name!r}", collection=name
        )

    def _exists_quietly(self, name: str) -> bool:
        try:
            return bool(self.client.collection_exists(name))
        except Exception:
            return False

    def _ensure_payload_indexes(
        self, name: str, config: CollectionConfig, existing: set[str]
    ) -> None:
        from qdrant_client import models

        for field_name, schema in config.payload_indexes.items():
            if field_name in existing:
                continue
            if schema not in _SCHEMA_TYPES:
                raise StoreError(
                    f"payload index {field_name!r}: unknown type {schema!r}; use one of "
                    f"{', '.join(_SCHEMA_TYPES)}"
                )
            self._create_payload_index(name, field_name, models.PayloadSchemaType(schema))

    def _create_payload_index(self, name: str, field_name: str, schema: Any) -> None:
        self._call(
            lambda: self.client.create_payload_index(
                collection_name=name, field_name=field_name, field_schema=schema, wait=True
            ),
            f"a payload index on {field_name!r} of {name!r}",
        )

    def _call(self, fn: Callable[[], T], what: str, collection: str | None = None) -> T:
        """One server call with retries; a missing collection gets the same error as Edge."""
        try:
            return call_with_retry(
                fn, what=what, url=self.location, policy=self._retry, sleep=self._sleep
            )
        except StoreError as error:
            if collection is not None and _is_not_found(error.__cause__):
                raise missing_collection(
                    collection, self.location, self._names_quietly()
                ) from error.__cause__
            raise

    def _names_quietly(self) -> list[str]:
        """Collection and alias names for an error message; nothing if the server is gone."""
        try:
            names = [c.name for c in self.client.get_collections().collections]
            names += [a.alias_name for a in self.client.get_aliases().aliases]
        except Exception:
            return []
        return names

    # -- deleting points -----------------------------------------------------------------
    def delete(
        self,
        name: str,
        ids: Sequence[str | int] | None = None,
        conditions: Sequence[Condition] | None = None,
    ) -> None:
        from qdrant_client import models

        if ids is not None:
            selector: Any = models.PointIdsList(points=list(ids))
            what = f"deleting {len(ids)} points of {name!r}"
        else:
            selected = _filter(conditions or ())
            if selected is None:
                raise StoreError("a delete by filter needs at least one condition")
            selector, what = models.FilterSelector(filter=selected), f"a delete in {name!r}"
        self._call(
            # wait=True: acknowledged means applied, as for upserts.
            lambda: self.client.delete(collection_name=name, points_selector=selector, wait=True),
            what,
            collection=name,
        )


class ServerStore(Store):
    """A ``Store`` on a Qdrant server (one node, a cluster, the cloud) or, with ``memory()``,
    on qdrant-client's in-process engine."""

    engine: ServerEngine

    def __init__(
        self,
        url: str,
        options: ServerOptions | None = None,
        *,
        api_key: str | None = None,
        client: Any | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        in_process: bool = False,
        owns_client: bool = True,
    ):
        """``url``: ``http(s)://host:port`` (REST) or ``grpc(s)://host:port`` (gRPC port).

        ``client`` replaces the QdrantClient this would build (tests inject the in-process
        engine or a transport that fails on purpose); ``api_key`` defaults to
        ``$QDRANT_API_KEY``.
        """
        options = options or ServerOptions()
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        if client is None:
            client = _connect(url.rstrip("/"), options, key)
        super().__init__(
            ServerEngine(
                url,
                options,
                client=client,
                api_key=key,
                retry=retry or RetryPolicy(attempts=options.attempts),
                sleep=sleep,
                in_process=in_process,
                owns_client=owns_client,
            )
        )

    @classmethod
    def memory(
        cls, name: str = "", options: ServerOptions | None = None, *, client: Any | None = None
    ) -> ServerStore:
        """qdrant-client's in-process engine: ``name``d ones are shared within this process.

        ``client``: a wrapper around an in-process client to use instead (tests record the
        calls this store sends through it).
        """
        from qdrant_client import QdrantClient

        shared = bool(name) and client is None
        if shared:
            with _MEMORY_LOCK:
                client = _MEMORY_CLIENTS.get(name)
                if client is None:
                    client = _MEMORY_CLIENTS[name] = QdrantClient(":memory:")
        elif client is None:
            client = QdrantClient(":memory:")
        return cls(
            f"memory:{name}",
            options,
            client=client,
            api_key="",
            in_process=True,
            owns_client=not shared,  # a named engine outlives each handle on it
        )

    @property
    def url(self) -> str:
        return self.engine.url

    @property
    def options(self) -> ServerOptions:
        return self.engine.options

    @property
    def spec(self) -> str:
        return self.engine.spec

    def server_version(self) -> str:
        return self.engine.server_version()

    def wait_indexed(self, name: str, timeout: float = 3600.0, poll: float = 2.0) -> bool:
        """Block until the collection is green (indexed); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.info(name).status
            if status in (None, "green"):
                return True
            if time.monotonic() >= deadline:
                return False
            self.engine._sleep(poll)


def _connect(url: str, options: ServerOptions, api_key: str | None) -> Any:
    from qdrant_client import QdrantClient

    parts = urlsplit(url)
    if parts.scheme not in {"http", "https", "grpc", "grpcs"} or not parts.hostname:
        raise StoreError(
            f"cannot read server URL {url!r}: use http://host:6333 (REST) or "
            "grpc://host:6334 (gRPC)"
        )
    https = parts.scheme in {"https", "grpcs"}
    prefer_grpc = options.grpc or parts.scheme.startswith("grpc")
    grpc_port = options.grpc_port
    rest_port = parts.port
    if parts.scheme.startswith("grpc"):
        grpc_port, rest_port = parts.port or grpc_port, None
    scheme = "https" if https else "http"
    rest_url = f"{scheme}://{parts.hostname}" + (f":{rest_port}" if rest_port else "")
    return QdrantClient(
        url=rest_url + parts.path,
        port=rest_port or 6333,
        grpc_port=grpc_port,
        prefer_grpc=prefer_grpc,
        https=https,
        api_key=api_key,
        timeout=options.timeout,
        # The version check is a blocking GET in a thread at construction; every Dask
        # worker opening the store would repeat it. ``server_version()`` asks on demand.
        check_compatibility=False,
    )


def open_server(spec: str) -> ServerStore:
    """A ServerStore from ``http(s)://host:port[?options]``, ``grpc://...`` or ``memory:[NAME]``."""
    if spec in {":memory:", "memory:"} or spec.startswith("memory:"):
        name = "" if spec == ":memory:" else spec.partition(":")[2]
        base, _, query = name.partition("?")
        return ServerStore.memory(base, ServerOptions.from_query(query))
    parts = urlsplit(spec)
    options = ServerOptions.from_query(parts.query)
    url = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return ServerStore(url, options)


def _stored(records: Sequence[Any]) -> list[StoredPoint]:
    """qdrant-client records (of a retrieve or a scroll) as the engine-neutral points."""
    return [
        StoredPoint(
            str(r.id), dict(r.vector) if isinstance(r.vector, dict) else {}, dict(r.payload or {})
        )
        for r in records
    ]


def _filter(conditions: Sequence[Condition], point_ids: Sequence[str | int] | None = None) -> Any:
    """Conditions as a Qdrant filter: served by payload indexes, never post-filtered."""
    from qdrant_client import models

    must: list[Any] = [_condition(c) for c in conditions]
    if point_ids is not None:
        must.append(models.HasIdCondition(has_id=list(point_ids)))
    return models.Filter(must=must) if must else None


def _condition(condition: Condition) -> Any:
    from qdrant_client import models

    key = condition.key
    if condition.range is not None:
        r = condition.range
        return models.FieldCondition(
            key=key, range=models.Range(gte=r.gte, lte=r.lte, gt=r.gt, lt=r.lt)
        )
    if condition.any_of is not None:
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(condition.any_of)))
    return models.FieldCondition(key=key, match=models.MatchValue(value=condition.value))


def _params(params: SearchParams | None) -> Any:
    from qdrant_client import models

    if params is None:
        return None
    return models.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=params.exact,
        quantization=models.QuantizationSearchParams(
            ignore=params.ignore_quantization,
            rescore=params.rescore,
            oversampling=params.oversampling,
        ),
    )


def _prefetch(query: VectorQuery) -> Any:
    from qdrant_client import models

    return models.Prefetch(
        query=query.vector,
        using=query.using,
        limit=query.limit,
        filter=_filter(query.conditions, query.point_ids),
        params=_params(query.params),
    )


def _describe_quantization(config: Any) -> str | None:
    if config is None:
        return None
    scalar = getattr(config, "scalar", None)
    if scalar is not None:
        kind = getattr(scalar.type, "value", scalar.type)
        placement = "ram" if scalar.always_ram else "disk"
        return f"{kind} q={scalar.quantile} {placement}"
    return type(config).__name__.replace("Quantization", "").lower() or "yes"


def _reported_layout(config: Any) -> StorageLayout:
    """Where the server's collection config says the ``global`` vector's parts live.

    A flag the server leaves unset is its default (in RAM) for the originals, and not
    reported (None) for HNSW and payload: qdrant-client's in-process engine echoes the
    vector params it was given but drops the HNSW and payload flags (it keeps no graph).
    """
    vectors = config.params.vectors
    params = vectors.get(GLOBAL_VECTOR) if isinstance(vectors, dict) else None
    if params is None:
        return StorageLayout(None, None, None, None)
    datatype = getattr(params.datatype, "value", params.datatype) or "float32"
    payload = getattr(config.params, "payload", None)
    hnsw = config.hnsw_config
    return StorageLayout(
        originals=str(datatype),
        originals_on_disk=bool(_on_disk(params.on_disk, params.memory)),
        hnsw_on_disk=_on_disk(getattr(hnsw, "on_disk", None), getattr(hnsw, "memory", None)),
        payload_on_disk=_on_disk(config.params.on_disk_payload, getattr(payload, "memory", None)),
    )


def _on_disk(flag: bool | None, memory: Any) -> bool | None:
    """A part's placement from the old flag or the newer ``memory`` (cold: on disk)."""
    if memory is not None:
        return str(getattr(memory, "value", memory)) == "cold"
    return flag


def _is_not_found(error: BaseException | None) -> bool:
    if error is None:
        return False
    if getattr(error, "status_code", None) == 404:
        return True
    code = getattr(error, "code", None)
    if callable(code):
        try:
            if getattr(code(), "name", "") == "NOT_FOUND":
                return True
        except Exception:
            pass
    return isinstance(error, ValueError | KeyError) and "not found" in str(error).lower()


__all__ = ["API_KEY_ENV", "ServerEngine", "ServerOptions", "ServerStore", "open_server"]
