"""indexing: encoders, Dask extraction, Qdrant stores and the bulk load."""

from ilias.indexing.encoders import (
    DEFAULT_ENCODER,
    Encoder,
    EncoderSpec,
    build_encoder,
    cached_encoder,
)
from ilias.indexing.extract import ExtractedPartition, ExtractionOptions, extract, load_image_for
from ilias.indexing.load import LoadReport, VersionedLoad, load_collection, load_versioned
from ilias.indexing.local_features import LocalConfig, LocalFeatures
from ilias.indexing.resolution import resize_larger_side, resolution_for
from ilias.indexing.store import (
    CollectionConfig,
    CollectionInfo,
    EdgeStore,
    Filter,
    Hit,
    Range,
    SearchParams,
    ServerStore,
    SnapshotInfo,
    Store,
    open_store,
    point_id,
)

__all__ = [
    "DEFAULT_ENCODER",
    "CollectionConfig",
    "CollectionInfo",
    "EdgeStore",
    "Encoder",
    "EncoderSpec",
    "ExtractedPartition",
    "ExtractionOptions",
    "Filter",
    "Hit",
    "LoadReport",
    "LocalConfig",
    "LocalFeatures",
    "Range",
    "SearchParams",
    "ServerStore",
    "SnapshotInfo",
    "Store",
    "VersionedLoad",
    "build_encoder",
    "cached_encoder",
    "extract",
    "load_collection",
    "load_image_for",
    "load_versioned",
    "open_store",
    "point_id",
    "resize_larger_side",
    "resolution_for",
]
