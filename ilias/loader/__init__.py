"""loader: datasets -> lazy records with payload; dataset detection; robust image decoding."""

from ilias.loader.datasets import (
    IMAGE_EXTENSIONS,
    Benchmark,
    DatasetSource,
    benchmark_for_collection,
    ilias_metadata,
    instance_of,
    is_ilias_layout,
    open_dataset,
    read_bbox,
    read_ilias,
    read_images,
    read_labelled,
)
from ilias.loader.images import DecodeFailure, crop_to_box, decode_image
from ilias.loader.records import FILE_STAMP, Record, Role, TextQuery, file_stamp
from ilias.loader.webdataset import (
    ShardReport,
    expand_shards,
    read_selection,
    read_shard,
    sample_key,
    shard_name,
)

__all__ = [
    "FILE_STAMP",
    "IMAGE_EXTENSIONS",
    "Benchmark",
    "DatasetSource",
    "DecodeFailure",
    "Record",
    "Role",
    "ShardReport",
    "TextQuery",
    "benchmark_for_collection",
    "crop_to_box",
    "decode_image",
    "expand_shards",
    "file_stamp",
    "ilias_metadata",
    "instance_of",
    "is_ilias_layout",
    "open_dataset",
    "read_bbox",
    "read_ilias",
    "read_images",
    "read_labelled",
    "read_selection",
    "read_shard",
    "sample_key",
    "shard_name",
]
