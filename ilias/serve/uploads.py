"""Uploaded query images: bounded in bytes before they are read whole, in pixels from the
header (the loader's one limit, ``ILIAS_MAX_PIXELS``), then decoded as database images are."""

from __future__ import annotations

from fastapi import UploadFile
from PIL import Image

from ilias.loader.images import MAX_PIXELS_ENV, DecodeFailure, decode_image
from ilias.serve.errors import TooLarge, Unprocessable


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or a 413 naming the limit (never more than limit + 1 read)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(
            f"upload larger than the limit of {limit:,} bytes; send a smaller image "
            "(ILIAS_MAX_UPLOAD_BYTES sets the limit)"
        )
    return data


def decode_upload(data: bytes) -> Image.Image:
    """An RGB image, or a 422 that says why not (corrupt data, the pixel limit by name)."""
    image = decode_image("upload", data)
    if isinstance(image, DecodeFailure):
        if MAX_PIXELS_ENV in image.reason:
            raise Unprocessable(f"uploaded image is {image.reason}")
        raise Unprocessable(f"cannot read the uploaded image: {image.reason}")
    return image
