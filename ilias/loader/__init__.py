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

__all__ = [
    "FILE_STAMP",
    "IMAGE_EXTENSIONS",
    "Benchmark",
    "DatasetSource",
    "DecodeFailure",
    "Record",
    "Role",
    "TextQuery",
    "benchmark_for_collection",
    "crop_to_box",
    "decode_image",
    "file_stamp",
    "ilias_metadata",
    "instance_of",
    "is_ilias_layout",
    "open_dataset",
    "read_bbox",
    "read_ilias",
    "read_images",
    "read_labelled",
]
