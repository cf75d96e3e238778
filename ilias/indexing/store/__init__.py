"""Qdrant stores behind one interface, chosen from one spec string.

| spec | engine |
|---|---|
| ``edge:PATH`` | Qdrant Edge embedded in this process (the default) |
| ``http://host:6333``, ``https://...`` | a Qdrant server over REST |
| ``grpc://host:6334``, or ``http://host:6333?grpc=true`` | a Qdrant server over gRPC |
| ``memory:`` / ``memory:NAME`` | qdrant-client's in-process engine (tests, experiments) |

Server specs take options as a query string (``?shards=6&replicas=2&on_disk=true``, see
``ServerOptions``); the API key comes from ``QDRANT_API_KEY``. The same string works for
``--store``, ``ILIAS_STORE``, ``store =`` in ``ilias.toml`` and ``open_store()``.
"""

from pathlib import Path
from typing import TYPE_CHECKING

from ilias.errors import StoreError
from ilias.indexing.store.base import (
    Collection,
    PointPage,
    Store,
    aliases_by_collection,
    check_k,
    validate_vectors,
)
from ilias.indexing.store.engine import Capabilities, Engine
from ilias.indexing.store.schema import (
    GLOBAL_VECTOR,
    CollectionConfig,
    CollectionInfo,
    SnapshotInfo,
    point_id,
)
from ilias.types import Filter, Hit, Range, SearchParams

if TYPE_CHECKING:  # loaded on first use by __getattr__ below
    from ilias.indexing.store.edge import EdgeStore
    from ilias.indexing.store.retry import RetryPolicy
    from ilias.indexing.store.server import API_KEY_ENV, ServerOptions, ServerStore

_SERVER_SCHEMES = {"http", "https", "grpc", "grpcs", "memory"}


def open_store(spec: str | None = None) -> Store:
    """Open the store a spec names; without one, the configured default (``Settings().store``)."""
    if spec is None:
        from ilias.config import Settings

        spec = Settings().store
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if kind == "edge" and sep and rest:
        from ilias.indexing.store.edge import EdgeStore

        return EdgeStore(Path(rest))
    if spec == ":memory:" or kind in _SERVER_SCHEMES:
        from ilias.indexing.store.server import open_server

        return open_server(spec)
    raise StoreError(
        f"cannot read store spec {spec!r}: use edge:PATH (embedded) or http://host:6333 "
        "(a Qdrant server)"
    )


def __getattr__(name: str) -> object:
    """The engine modules load on first use: naming a store type costs no Qdrant import."""
    if name == "EdgeStore":
        from ilias.indexing.store.edge import EdgeStore

        return EdgeStore
    if name in {"ServerStore", "ServerOptions", "API_KEY_ENV"}:
        from ilias.indexing.store import server

        return getattr(server, name)
    if name == "RetryPolicy":
        from ilias.indexing.store.retry import RetryPolicy

        return RetryPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "API_KEY_ENV",
    "GLOBAL_VECTOR",
    "Capabilities",
    "Collection",
    "CollectionConfig",
    "CollectionInfo",
    "EdgeStore",
    "Engine",
    "Filter",
    "Hit",
    "PointPage",
    "Range",
    "RetryPolicy",
    "SearchParams",
    "ServerOptions",
    "ServerStore",
    "SnapshotInfo",
    "Store",
    "aliases_by_collection",
    "check_k",
    "open_store",
    "point_id",
    "validate_vectors",
]
