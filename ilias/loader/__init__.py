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
    read_boxes,
    read_ilias,
    read_images,
    read_labelled,
)
from ilias.loader.gpr1200 import Gpr1200Dataset, is_gpr1200_layout, load_gpr1200
from ilias.loader.images import DecodeFailure, crop_to_box, decode_image
from ilias.loader.records import FILE_STAMP, Record, Role, TextQuery, file_stamp
from ilias.loader.sources import RecordChunk, Shard, TarShard, selection_tag
from ilias.loader.uned import UNED_TEST_SPLITS, UnedDataset, UnedSplits, is_uned_layout, load_uned
from ilias.loader.webdataset import (
    ShardReport,
    expand_shards,
    is_shard_spec,
    read_selection,
    read_shard,
    sample_key,
    shard_name,
)

__all__ = [
    "FILE_STAMP",
    "IMAGE_EXTENSIONS",
    "UNED_TEST_SPLITS",
    "Benchmark",
    "DatasetSource",
    "DecodeFailure",
    "Gpr1200Dataset",
    "Record",
    "RecordChunk",
    "Role",
    "Shard",
    "ShardReport",
    "TarShard",
    "TextQuery",
    "UnedDataset",
    "UnedSplits",
    "benchmark_for_collection",
    "crop_to_box",
    "decode_image",
    "expand_shards",
    "file_stamp",
    "ilias_metadata",
    "instance_of",
    "is_gpr1200_layout",
    "is_ilias_layout",
    "is_shard_spec",
    "is_uned_layout",
    "load_gpr1200",
    "load_uned",
    "open_dataset",
    "read_bbox",
    "read_boxes",
    "read_ilias",
    "read_images",
    "read_labelled",
    "read_selection",
    "read_shard",
    "sample_key",
    "selection_tag",
    "shard_name",
]
