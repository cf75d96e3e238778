"""Qdrant stores behind one interface, chosen from a spec string."""

from pathlib import Path

from ilias.errors import StoreError
from ilias.indexing.store.base import (
    GLOBAL_VECTOR,
    CollectionConfig,
    CollectionInfo,
    Filter,
    Hit,
    Range,
    SearchParams,
    Store,
    point_id,
    validate_vectors,
)
from ilias.indexing.store.edge import EdgeStore


def open_store(spec: str) -> Store:
    """``edge:PATH`` (embedded Qdrant Edge, the default) or a Qdrant server URL."""
    kind, sep, rest = spec.partition(":")
    if kind == "edge" and sep and rest:
        return EdgeStore(Path(rest))
    if kind in {"http", "https", "grpc"}:
        raise StoreError(
            f"store {spec!r}: the Qdrant server backend is not built yet; use edge:PATH"
        )
    raise StoreError(f"cannot read store spec {spec!r}: use edge:PATH or http://host:6333")


__all__ = [
    "GLOBAL_VECTOR",
    "CollectionConfig",
    "CollectionInfo",
    "EdgeStore",
    "Filter",
    "Hit",
    "Range",
    "SearchParams",
    "Store",
    "open_store",
    "point_id",
    "validate_vectors",
]
