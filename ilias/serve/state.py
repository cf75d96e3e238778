"""What one service process holds: the open store, one Retriever per collection.

Qdrant Edge lets one process own a shard directory, so the store is opened once, when the
app starts, and closed when it stops; to scale out, point several service processes at a
Qdrant server store instead. The encoder is built once per process (``cached_encoder``
behind ``Retriever.encoder``) and each collection's retriever is built once, under a
lock, so concurrent first requests never build it twice. Engine calls go through one
lock too: encoding (the slow part) runs in parallel, the store sees one call at a time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from ilias.serve.errors import NotFound
from ilias.serve.limits import DecodeGate
from ilias.serve.settings import ServeSettings

if TYPE_CHECKING:
    from ilias.indexing import Store
    from ilias.query import Retriever

T = TypeVar("T")
_PAYLOAD_CACHE = 4096


class ServiceState:
    """The store, the retrievers, a small cache of payloads looked up by id, and the decode
    slots every picture decoded for a request takes (``decodes``)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.decodes = DecodeGate(settings.decodes, settings.queue, settings.max_pixels)
        self._store: Store | None = None
        self._retrievers: dict[str, Retriever] = {}
        self._build_lock = threading.Lock()
        self._store_lock = threading.RLock()
        self._cache_lock = threading.Lock()
        self._payloads: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    # -- lifecycle -------------------------------------------------------------------
    def open(self) -> None:
        from ilias.indexing import open_store

        self._store = open_store(self.settings.store)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def ready(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> Store:
        if self._store is None:
            raise NotFound("the store is not open yet; retry when /ready answers 200")
        return self._store

    def engine(self, call: Callable[[], T]) -> T:
        """Run ``call`` with the store to itself (one engine call at a time)."""
        with self._store_lock:
            return call()

    # -- collections -----------------------------------------------------------------
    def check_collection(self, name: str) -> str:
        """``name`` if it is a collection or an alias, else a 404 naming what exists."""
        names = self.engine(self.store.list_collections)
        aliases = self.engine(self.store.list_aliases)
        if name not in names and name not in aliases:
            known = ", ".join(sorted([*names, *aliases])) or "none"
            raise NotFound(f"no collection {name!r} in this store; known: {known}")
        return name

    def retriever(self, name: str) -> Retriever:
        """The collection's retriever, built once per process (its encoder with it)."""
        found = self._retrievers.get(name)
        if found is not None:
            return found
        self.check_collection(name)
        with self._build_lock:
            found = self._retrievers.get(name)
            if found is None:
                from ilias.query import Retriever

                found = self.engine(lambda: Retriever(self.store, name))
                self._retrievers[name] = found
        return found

    def payload(self, collection: str, dataset_id: str) -> dict[str, Any]:
        """A stored point's payload by its dataset id (404 if there is no such point)."""
        key = (collection, dataset_id)
        with self._cache_lock:
            cached = self._payloads.get(key)
        if cached is not None:
            return cached
        retriever = self.retriever(collection)
        vectors = self.engine(lambda: retriever.view.retrieve_vectors([dataset_id]))
        if dataset_id not in vectors:
            raise NotFound(f"no point with id {dataset_id!r} in {collection!r}")
        hits = self.engine(
            lambda: retriever.search_vectors(vectors[dataset_id][None], 1, {"id": dataset_id})
        )[0]
        if not hits:
            raise NotFound(f"no point with id {dataset_id!r} in {collection!r}")
        payload = dict(hits[0].payload)
        with self._cache_lock:
            self._payloads[key] = payload
            if len(self._payloads) > _PAYLOAD_CACHE:
                self._payloads.popitem(last=False)
        return payload

    def image_roots(self, collection: str) -> list[str]:
        """The folders a collection's images may be served from: the dataset roots its
        metadata records (``dataset``, ``distractors``, ``images``), nothing else."""
        retriever = self.retriever(collection)
        metadata = retriever.view.config.metadata
        return [str(metadata[k]) for k in ("dataset", "distractors", "images") if metadata.get(k)]

    def forget(self, collection: str) -> None:
        """Drop the cached payloads of ``collection`` (its points were written or deleted)."""
        with self._cache_lock:
            for key in [key for key in self._payloads if key[0] == collection]:
                del self._payloads[key]

    def served_roots(self) -> list[str]:
        """Every dataset folder a collection of the store records (``image_roots`` of each),
        read from the store's configs: the only folders a run's query image may come from."""
        roots: list[str] = []
        store = self.store
        for name in self.engine(store.list_collections):
            metadata = self.engine(partial(store.collection_config, name)).metadata
            roots += [
                str(metadata[k]) for k in ("dataset", "distractors", "images") if metadata.get(k)
            ]
        return roots
