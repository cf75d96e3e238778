"""ServerStore: the Store interface on a Qdrant server (one node, a cluster, or the cloud).

The same operations as ``EdgeStore``, through ``qdrant-client`` over REST or gRPC. What the
server adds, and this class exposes through one spec string (``open_store``):

- sharding and replication (``shards``, ``replicas``, ``write_consistency``), decided when a
  collection is created;
- int8 scalar quantization (quantile 0.99, quantized vectors always in RAM) with the float32
  originals optionally on disk (``on_disk=true``): at 100M vectors the originals are the
  memory bill, and int8 search only reads them to rescore the shortlist;
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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

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
    SnapshotInfo,
    Store,
    point_id,
    stored_local,
    validate_local,
    validate_vectors,
)
from ilias.indexing.store.retry import RetryPolicy, call_with_retry

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_KEY_ENV = "QDRANT_API_KEY"
METADATA_KEY = "ilias"
# Where the official Qdrant image keeps snapshots (storage.snapshots_path, /qdrant/snapshots).
SERVER_SNAPSHOTS = "/qdrant/snapshots"
_RETRIEVE_CHUNK = 1024
_QUERY_CHUNK = 64
_SCHEMA_TYPES = ("keyword", "integer", "float", "bool", "text")

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
    on_disk: bool = False  # float32 originals on disk (mmap); int8 copies stay in RAM
    payload_on_disk: bool = False  # payload on disk; indexed fields stay in RAM
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


class ServerStore(Store):
    """Collections on a Qdrant server, through qdrant-client (REST, or gRPC with ``grpc``)."""

    shared_across_processes = True

    def __init__(
        self,
        url: str,
        options: ServerOptions | None = None,
        *,
        api_key: str | None = None,
        client: Any | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """``url``: ``http(s)://host:port`` (REST) or ``grpc(s)://host:port`` (gRPC port).

        ``client`` replaces the QdrantClient this would build (tests inject the in-process
        engine or a transport that fails on purpose); ``api_key`` defaults to
        ``$QDRANT_API_KEY``.
        """
        self.options = options or ServerOptions()
        self.url = url.rstrip("/")
        self.location = self.url
        self._retry = retry or RetryPolicy(attempts=self.options.attempts)
        self._sleep = sleep
        self._api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        self._local = False
        self._client = client if client is not None else self._connect()

    @classmethod
    def memory(
        cls, name: str = "", options: ServerOptions | None = None, *, client: Any | None = None
    ) -> ServerStore:
        """qdrant-client's in-process engine: ``name``d ones are shared within this process.

        ``client``: a wrapper around an in-process client to use instead (tests record the
        calls this store sends through it).
        """
        from qdrant_client import QdrantClient

        if client is not None:
            pass
        elif name:
            with _MEMORY_LOCK:
                client = _MEMORY_CLIENTS.get(name)
                if client is None:
                    client = _MEMORY_CLIENTS[name] = QdrantClient(":memory:")
        else:
            client = QdrantClient(":memory:")
        store = cls(f"memory:{name}", options, client=client, api_key="")
        store._local = True
        # Each process has its own in-memory engine: workers writing "memory:NAME" write
        # their own copy, so loads funnel through this process unless told otherwise.
        store.shared_across_processes = False
        return store

    def _connect(self) -> Any:
        from qdrant_client import QdrantClient

        parts = urlsplit(self.url)
        if parts.scheme not in {"http", "https", "grpc", "grpcs"} or not parts.hostname:
            raise StoreError(
                f"cannot read server URL {self.url!r}: use http://host:6333 (REST) or "
                "grpc://host:6334 (gRPC)"
            )
        https = parts.scheme in {"https", "grpcs"}
        prefer_grpc = self.options.grpc or parts.scheme.startswith("grpc")
        grpc_port = self.options.grpc_port
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
            api_key=self._api_key,
            timeout=self.options.timeout,
            # The version check is a blocking GET in a thread at construction; every Dask
            # worker opening the store would repeat it. ``server_version()`` asks on demand.
            check_compatibility=False,
        )

    @property
    def spec(self) -> str:
        """The ``open_store`` spec of this store (without the API key)."""
        query = self.options.to_query()
        return f"{self.url}?{query}" if query else self.url

    def worker_spec(self) -> str | None:
        return self.spec

    def server_version(self) -> str:
        return str(self._call(lambda: self._client.info(), "the version request").version)

    # -- collections -----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        answer = self._call(lambda: self._client.get_collections(), "listing collections")
        return sorted(c.name for c in answer.collections)

    def collection_exists(self, name: str) -> bool:
        exists = self._call(lambda: self._client.collection_exists(name), f"a lookup of {name!r}")
        return bool(exists) or name in self.list_aliases()

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        from qdrant_client import models

        if name in self.list_aliases():
            raise StoreError(
                f"{name!r} is an alias on {self.location}; create the collection under another "
                "name (a versioned load does this for you) or delete the alias"
            )
        if self.collection_exists(name):
            raise StoreError(f"collection {name!r} already exists in {self.location}")
        opts = self.options
        quantization = (
            models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(
                    type=models.ScalarType.INT8, quantile=config.quantile, always_ram=True
                )
            )
            if config.quantization
            else None
        )
        vectors_config = {
            GLOBAL_VECTOR: models.VectorParams(
                size=config.dim, distance=models.Distance.COSINE, on_disk=opts.on_disk
            )
        }
        if config.local_dim:
            # Re-scored only, never searched: no HNSW graph for the local multivector.
            vectors_config[LOCAL_VECTOR] = models.VectorParams(
                size=config.local_dim,
                distance=models.Distance.COSINE,
                on_disk=opts.on_disk,
                multivector_config=models.MultiVectorConfig(
                    comparator=models.MultiVectorComparator.MAX_SIM
                ),
                hnsw_config=models.HnswConfigDiff(m=0),
            )
        create = dict(
            collection_name=name,
            vectors_config=vectors_config,
            shard_number=opts.shards,
            replication_factor=opts.replicas,
            write_consistency_factor=opts.write_consistency,
            on_disk_payload=opts.payload_on_disk,
            hnsw_config=models.HnswConfigDiff(
                m=config.hnsw_m, ef_construct=config.hnsw_ef_construct
            ),
            # Deferred indexing: no HNSW is built while the load streams points in;
            # finish_load re-enables it and the server indexes everything once.
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0),
            quantization_config=quantization,
            metadata={METADATA_KEY: config.to_dict()},
            timeout=opts.timeout,
        )
        try:
            self._call(lambda: self._client.create_collection(**create), f"creating {name!r}")
        except StoreError:
            # A creation whose answer was lost (timeout) and then retried meets its own
            # collection; it did not exist a moment ago, so it is ours.
            if not self._raw_exists(name):
                raise
        self._ensure_payload_indexes(name, config, existing=set())

    def _raw_exists(self, name: str) -> bool:
        try:
            return bool(self._client.collection_exists(name))
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
            self._call(
                lambda f=field_name, s=schema: self._client.create_payload_index(
                    collection_name=name,
                    field_name=f,
                    field_schema=models.PayloadSchemaType(s),
                    wait=True,
                ),
                f"a payload index on {field_name!r} of {name!r}",
            )

    def collection_config(self, name: str) -> CollectionConfig:
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
        # A collection made by other tools with a ``global`` vector: usable, recipe unknown.
        return CollectionConfig(dim=params.size, metadata={})

    def info(self, name: str) -> CollectionInfo:
        details = self._collection(name)
        params = details.config.params
        return CollectionInfo(
            name=name,
            points=details.points_count or 0,
            indexed_vectors=details.indexed_vectors_count or 0,
            segments=details.segments_count or 0,
            config=self.collection_config(name),
            location=f"{self.location}/collections/{self.resolve(name)}",
            quantization=_describe_quantization(details.config.quantization_config),
            status=getattr(details.status, "value", str(details.status)),
            shards=params.shard_number,
            replicas=params.replication_factor,
        )

    def _collection(self, name: str) -> Any:
        return self._call(
            lambda: self._client.get_collection(name), f"reading {name!r}", collection=name
        )

    def drop(self, name: str) -> None:
        aliases = self.list_aliases()
        if name in aliases:
            raise StoreError(
                f"{name!r} is an alias of {aliases[name]!r}, not a collection; drop "
                f"{aliases[name]!r} or delete the alias"
            )
        self._call(
            lambda: self._client.delete_collection(name, timeout=self.options.timeout),
            f"dropping {name!r}",
        )

    def close(self) -> None:
        if not self.location.startswith("memory:") or self.location == "memory:":
            self._client.close()

    # -- aliases -----------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        answer = self._call(lambda: self._client.get_aliases(), "listing aliases")
        return {a.alias_name: a.collection_name for a in answer.aliases}

    def set_alias(self, alias: str, collection: str) -> None:
        from qdrant_client import models

        aliases = self.list_aliases()
        if collection in aliases:
            raise StoreError(
                f"{collection!r} is an alias; point {alias!r} at a collection "
                f"({aliases[collection]!r})"
            )
        collections = set(self.list_collections())
        if collection not in collections:
            raise StoreError(f"no collection {collection!r} in {self.location} to alias")
        if alias in collections:
            raise StoreError(
                f"{alias!r} is a collection in {self.location}; an alias needs a name of its own"
            )
        operations: list[Any] = []
        if alias in aliases:
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
            lambda: self._client.update_collection_aliases(
                change_aliases_operations=operations, timeout=self.options.timeout
            ),
            f"pointing alias {alias!r} at {collection!r}",
        )

    def delete_alias(self, alias: str) -> None:
        from qdrant_client import models

        if alias not in self.list_aliases():
            return
        operation = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
        self._call(
            lambda: self._client.update_collection_aliases(change_aliases_operations=[operation]),
            f"deleting alias {alias!r}",
        )

    # -- snapshots ---------------------------------------------------------------------
    def create_snapshot(self, name: str) -> SnapshotInfo:
        self._require_server_snapshots()
        collection = self.resolve(name)
        self._collection(collection)  # clear error for a missing collection
        description = self._call(
            lambda: self._client.create_snapshot(collection_name=collection, wait=True),
            f"a snapshot of {collection!r}",
        )
        return self._snapshot_info(collection, description)

    def list_snapshots(self, name: str) -> list[SnapshotInfo]:
        self._require_server_snapshots()
        collection = self.resolve(name)
        found = self._call(
            lambda: self._client.list_snapshots(collection_name=collection),
            f"listing snapshots of {collection!r}",
            collection=collection,
        )
        return [self._snapshot_info(collection, d) for d in found]

    def restore_snapshot(self, name: str, source: str) -> None:
        """Recover collection ``name`` from ``source``, replacing what it holds.

        ``source``: a snapshot name of ``name`` on this server (``ilias snapshot list``;
        read from ``/qdrant/snapshots`` as the official image lays it out), an ``http(s)://``
        URL or ``file:///`` path the *server* can read, or a file on this machine, which is
        uploaded.
        """
        self._require_server_snapshots()
        if name in self.list_aliases():
            raise StoreError(
                f"{name!r} is an alias; restore into the collection itself "
                f"({self.resolve(name)!r}) or into a new name and move the alias"
            )
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
            lambda: self._client.recover_snapshot(
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
                return self._client.http.snapshots_api.recover_from_uploaded_snapshot(
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

    def _require_server_snapshots(self) -> None:
        if self._local:
            raise StoreError(self._no_snapshots())

    def _no_snapshots(self) -> str:
        if self._local:
            return (
                f"{self.location} (qdrant-client's in-process engine) has no snapshots; they "
                "need a Qdrant server (--store http://host:6333)"
            )
        return super()._no_snapshots()

    # -- points ----------------------------------------------------------------------
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict],
        local: Sequence[LocalFeatures] | None = None,
    ) -> None:
        from qdrant_client import models

        config = self.collection_config(name)
        vectors = validate_vectors(vectors, config.dim, ids)
        if len(payloads) != len(ids):
            raise StoreError(f"{len(payloads)} payloads for {len(ids)} ids")
        if not len(ids):
            return
        payloads = [dict(p) for p in payloads]
        named: dict[str, list] = {GLOBAL_VECTOR: vectors.tolist()}
        if config.local_dim:
            if local is None:
                raise StoreError(
                    f"collection {name!r} stores local descriptors: extract them too (--local)"
                )
            validate_local(local, config.local_dim, ids)
            named[LOCAL_VECTOR] = [f.descriptors.tolist() for f in local]
            for payload, features in zip(payloads, local, strict=True):
                payload[LOCAL_XY] = features.xy.reshape(-1).round(1).tolist()
        size = self.options.batch
        batches = [
            models.Batch(
                ids=[point_id(i) for i in ids[start : start + size]],
                vectors={key: rows[start : start + size] for key, rows in named.items()},
                payloads=payloads[start : start + size],
            )
            for start in range(0, len(ids), size)
        ]

        def send(batch: Any) -> None:
            self._call(
                # wait=True: acknowledged means applied, so a resumed load that asks which
                # ids exist gets the truth, and counts after a load are exact.
                lambda: self._client.upsert(
                    collection_name=name, points=batch, wait=True, timeout=self.options.timeout
                ),
                f"an upsert of {len(batch.ids)} points into {name!r}",
            )

        for _ in self._map(send, batches):
            pass

    def existing_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        by_point = {point_id(i): i for i in ids}

        def lookup(chunk: list[str]) -> list[str]:
            records = self._call(
                lambda: self._client.retrieve(
                    collection_name=name, ids=chunk, with_payload=False, with_vectors=False
                ),
                f"a lookup of {len(chunk)} ids in {name!r}",
                collection=name,
            )
            return [by_point[str(r.id)] for r in records]

        # Resuming a 100M-image load asks about 100k chunks: keep several in flight.
        chunks = list(_chunks(list(by_point), _RETRIEVE_CHUNK))
        found: set[str] = set()
        for present in self._map(lookup, chunks):
            found.update(present)
        return found

    def finish_load(self, name: str) -> None:
        """Turn indexing back on; the server builds HNSW and int8 in the background.

        Also creates any payload index a crashed creation left out. ``wait_indexed`` blocks
        until the server reports the collection green.
        """
        from qdrant_client import models

        self._call(
            lambda: self._client.update_collection(
                collection_name=name,
                optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=self.options.indexing_threshold
                ),
                timeout=self.options.timeout,
            ),
            f"re-enabling indexing of {name!r}",
            collection=name,
        )
        details = self._collection(name)
        self._ensure_payload_indexes(
            name, self.collection_config(name), existing=set(details.payload_schema or {})
        )

    def wait_indexed(self, name: str, timeout: float = 3600.0, poll: float = 2.0) -> bool:
        """Block until the collection is green (indexed); False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.info(name).status
            if status in (None, "green"):
                return True
            if time.monotonic() >= deadline:
                return False
            self._sleep(poll)

    def search(
        self,
        name: str,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        from qdrant_client import models

        vectors = self._query_vectors(name, vectors)
        server_filter = to_filter(filter)
        server_params = to_search_params(params or SearchParams())
        out: list[list[Hit]] = []
        for chunk in _chunks(vectors, _QUERY_CHUNK):
            requests = [
                models.QueryRequest(
                    query=v.tolist(),
                    using=GLOBAL_VECTOR,
                    limit=k,
                    filter=server_filter,
                    params=server_params,
                    with_payload=_hit_payload(),
                )
                for v in chunk
            ]
            answers = self._call(
                lambda r=requests: self._client.query_batch_points(
                    collection_name=name, requests=r, timeout=self.options.timeout
                ),
                f"a search of {name!r}",
                collection=name,
            )
            out.extend([_hit(p) for p in answer.points] for answer in answers)
        return out

    def retrieve_vectors(self, name: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        by_point = {point_id(i): i for i in ids}
        out: dict[str, np.ndarray] = {}
        for chunk in _chunks(list(by_point), _RETRIEVE_CHUNK):
            records = self._call(
                lambda c=chunk: self._client.retrieve(
                    collection_name=name, ids=c, with_payload=False, with_vectors=[GLOBAL_VECTOR]
                ),
                f"reading {len(chunk)} vectors of {name!r}",
                collection=name,
            )
            for record in records:
                vector = record.vector[GLOBAL_VECTOR] if isinstance(record.vector, dict) else None
                if vector is not None:
                    out[by_point[str(record.id)]] = np.asarray(vector, dtype=np.float32)
        return out

    def retrieve_local(self, name: str, ids: Sequence[str]) -> dict[str, LocalFeatures]:
        by_point = {point_id(i): i for i in ids}
        out: dict[str, LocalFeatures] = {}
        for chunk in _chunks(list(by_point), _RETRIEVE_CHUNK):
            records = self._call(
                lambda c=chunk: self._client.retrieve(
                    collection_name=name,
                    ids=c,
                    with_payload=[LOCAL_XY],
                    with_vectors=[LOCAL_VECTOR],
                ),
                f"reading local descriptors of {len(chunk)} points of {name!r}",
                collection=name,
            )
            for record in records:
                vectors = (
                    record.vector.get(LOCAL_VECTOR) if isinstance(record.vector, dict) else None
                )
                if vectors is None:
                    continue
                out[by_point[str(record.id)]] = stored_local(vectors, record.payload)
        return out

    def rescore_local(self, name: str, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]:
        from qdrant_client import models

        if not ids:
            return []
        self._require_local(name, query_local)
        answer = self._call(
            lambda: self._client.query_points(
                collection_name=name,
                query=np.asarray(query_local).tolist(),
                using=LOCAL_VECTOR,
                query_filter=models.Filter(
                    must=[models.HasIdCondition(has_id=[point_id(i) for i in ids])]
                ),
                limit=len(ids),
                search_params=models.SearchParams(exact=True),
                with_payload=_hit_payload(),
                timeout=self.options.timeout,
            ),
            f"a local re-scoring in {name!r}",
            collection=name,
        )
        return [_hit(p) for p in answer.points]

    def search_local(
        self,
        name: str,
        vector: np.ndarray,
        query_local: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        from qdrant_client import models

        self._require_local(name, query_local)
        prefetch = models.Prefetch(
            query=np.asarray(vector).tolist(),
            using=GLOBAL_VECTOR,
            limit=k,
            filter=to_filter(filter),
            params=to_search_params(params or SearchParams()),
        )
        answer = self._call(
            lambda: self._client.query_points(
                collection_name=name,
                prefetch=prefetch,
                query=np.asarray(query_local).tolist(),
                using=LOCAL_VECTOR,
                limit=k,
                search_params=models.SearchParams(exact=True),
                with_payload=_hit_payload(),
                timeout=self.options.timeout,
            ),
            f"a global + local search of {name!r}",
            collection=name,
        )
        return [_hit(p) for p in answer.points]

    def count(self, name: str, filter: Filter | None = None) -> int:
        answer = self._call(
            lambda: self._client.count(
                collection_name=name, count_filter=to_filter(filter), exact=True
            ),
            f"a count of {name!r}",
            collection=name,
        )
        return int(answer.count)

    # -- internals -------------------------------------------------------------------
    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> Iterator[T]:
        """``fn`` over ``items`` with up to ``parallel`` requests in flight, results in order.

        The in-process engine is plain Python objects without locks: one call at a time.
        """
        parallel = 1 if self._local else min(self.options.parallel, len(items))
        if parallel <= 1:
            yield from map(fn, items)
            return
        with ThreadPoolExecutor(parallel, thread_name_prefix="qdrant") as pool:
            yield from pool.map(fn, items)  # re-raises the first failure

    def _call(self, fn: Callable[[], T], what: str, collection: str | None = None) -> T:
        """One server call with retries; a missing collection gets the same error as Edge."""
        try:
            return call_with_retry(
                fn, what=what, url=self.location, policy=self._retry, sleep=self._sleep
            )
        except StoreError as error:
            if collection is not None and _is_not_found(error.__cause__):
                known = ", ".join(self._names_quietly()) or "none"
                raise StoreError(
                    f"no collection {collection!r} in {self.location} (collections and "
                    f"aliases: {known}); create it with 'ilias load'"
                ) from error.__cause__
            raise

    def _names_quietly(self) -> list[str]:
        """Collection and alias names for an error message; nothing if the server is gone."""
        try:
            names = [c.name for c in self._client.get_collections().collections]
            names += [a.alias_name for a in self._client.get_aliases().aliases]
        except Exception:
            return []
        return sorted(names)


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


def to_filter(filter: Filter | None) -> Any:
    """Our filter mapping as a Qdrant filter: served by payload indexes, never post-filtered."""
    from qdrant_client import models

    if not filter:
        return None
    conditions = []
    for key, value in filter.items():
        if isinstance(value, Range):
            condition = models.FieldCondition(
                key=key, range=models.Range(gte=value.gte, lte=value.lte, gt=value.gt, lt=value.lt)
            )
        elif isinstance(value, list | tuple | set | frozenset):
            condition = models.FieldCondition(key=key, match=models.MatchAny(any=list(value)))
        else:
            condition = models.FieldCondition(key=key, match=models.MatchValue(value=value))
        conditions.append(condition)
    return models.Filter(must=conditions)


def to_search_params(params: SearchParams) -> Any:
    from qdrant_client import models

    return models.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=params.exact,
        quantization=models.QuantizationSearchParams(
            ignore=params.ignore_quantization,
            rescore=params.rescore,
            oversampling=params.oversampling,
        ),
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


def _hit_payload() -> Any:
    """Hits carry the payload a user reads, not the patch coordinates kept for re-ranking."""
    from qdrant_client import models

    return models.PayloadSelectorExclude(exclude=[LOCAL_XY])


def _hit(point: Any) -> Hit:
    payload = dict(point.payload or {})
    return Hit(id=str(payload.get("id", point.id)), score=float(point.score), payload=payload)


def _chunks(items: Sequence[T] | np.ndarray, size: int) -> Iterator[Any]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


__all__ = ["API_KEY_ENV", "ServerOptions", "ServerStore", "open_server"]
