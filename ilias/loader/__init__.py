"""loader: datasets -> lazy records with payload; robust image decoding."""

from ilias.loader.datasets import (
    IMAGE_EXTENSIONS,
    Benchmark,
    instance_of,
    read_bbox,
    read_ilias,
    read_images,
    read_labelled,
)
from ilias.loader.images import DecodeFailure, decode_image
from ilias.loader.records import Record, Role, TextQuery

__all__ = [
    "IMAGE_EXTENSIONS",
    "Benchmark",
    "DecodeFailure",
    "Record",
    "Role",
    "TextQuery",
    "decode_image",
    "instance_of",
    "read_bbox",
    "read_ilias",
    "read_images",
    "read_labelled",
]
