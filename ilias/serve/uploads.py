"""Pictures decoded on behalf of a request (an uploaded query, a thumbnail), within the
service's per-decode cap.

The cap is the service's own (``ILIAS_SERVE_MAX_PIXELS``, ``ServeSettings.max_pixels``),
checked from the header before any pixel is decoded: above it a JPEG is decoded at 1/2 or
1/4 of its size (libjpeg's DCT scaling, the loader's ``draft_to``; the encoder resizes to
its resolution anyway), any other format is refused with a 413 that names the cap. The
loader's own limit (``ILIAS_MAX_PIXELS``, for loads) still applies on top. Bytes are read
only inside a decode slot (``DecodeGate``), so waiting requests hold nothing but their
spooled upload.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from fastapi import UploadFile
from PIL import Image
from pydantic import BaseModel, ValidationError

from ilias.loader.images import (
    DRAFT_SCALES,
    MAX_PIXELS_ENV as LOADER_MAX_PIXELS_ENV,
    DecodeFailure,
    decode_image,
    draft_scale,
)
from ilias.serve.errors import ServiceError, TooLarge
from ilias.serve.limits import note_decode
from ilias.serve.settings import MAX_PIXELS_ENV, MAX_UPLOAD_ENV


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or a 413 naming the limit (never more than limit + 1 read)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(
            f"upload larger than the limit of {limit:,} bytes; send a smaller image "
            f"({MAX_UPLOAD_ENV} sets the limit)"
        )
    return data


def _reduction(size: tuple[int, int], fmt: str | None, cap: int) -> int:
    """1 if ``size`` is within ``cap`` pixels, else the JPEG DCT reduction (2 or 4) that
    brings it within; 0 if none can (not a JPEG, or too large even at 1/4)."""
    width, height = size
    if width * height <= cap:
        return 1
    if fmt != "JPEG":
        return 0
    for scale in sorted(DRAFT_SCALES):
        if (width // scale) * (height // scale) <= cap:
            return scale
    return 0


def _probe(handle: Any) -> tuple[tuple[int, int], str | None]:
    """(size, format) from the header, or ((0, 0), None) for data that is no image."""
    try:
        with Image.open(handle) as probe:
            return probe.size, probe.format
    except Exception:  # not an image at all: decode_image says why, in its own words
        return (0, 0), None


def _refuse(
    what: str, size: tuple[int, int], fmt: str | None, cap: int, jpeg: str = "even at 1/4"
) -> TooLarge:
    width, height = size
    kind = f"a JPEG too large {jpeg}" if fmt == "JPEG" else f"a {fmt or 'non-JPEG'}"
    return TooLarge(
        f"{what} is {width} x {height} = {width * height:,} pixels ({kind}), above the "
        f"service's decode limit of {cap:,}; send a smaller image ({MAX_PIXELS_ENV} sets "
        "the limit)"
    )


def check_upload(upload: UploadFile, cap: int) -> None:
    """Refuse an upload above the cap from its header alone, before it waits for a decode
    slot: a decompression bomb costs a header read, not a place in the queue."""
    upload.file.seek(0)
    size, fmt = _probe(upload.file)
    upload.file.seek(0)
    if _reduction(size, fmt, cap) == 0:
        raise _refuse("uploaded image", size, fmt, cap)


def decode_bounded(
    what: str, source: bytes | Path, cap: int, target: int | None = None
) -> Image.Image:
    """An RGB image of at most ``cap`` pixels (a larger JPEG decoded reduced), or a 413
    naming the cap, or a 400 that says why the data is not an image. ``target``: the side
    the caller shrinks to next (a thumbnail's), so a JPEG may be decoded reduced below
    the cap too."""
    size, fmt = _probe(io.BytesIO(source) if isinstance(source, bytes) else source)
    scale = _reduction(size, fmt, cap)
    if scale == 0:
        raise _refuse(what, size, fmt, cap)
    if target is not None and fmt == "JPEG":
        scale = max(scale, draft_scale(size, target))
    draft_to = max(size) // (2 * scale) if scale > 1 else None
    if draft_to is not None and draft_scale(size, draft_to) != scale:  # pragma: no cover
        raise AssertionError(f"draft_scale disagrees for {size} at {draft_to}")
    image = decode_image(what, source, draft_to=draft_to)
    note_decode(size[0] * size[1] // (scale * scale))
    if isinstance(image, DecodeFailure):
        if LOADER_MAX_PIXELS_ENV in image.reason:
            raise TooLarge(f"{what} is {image.reason}")
        raise ServiceError(f"cannot read the {what}: {image.reason}")
    return image


def decode_upload(data: bytes, cap: int) -> Image.Image:
    """An uploaded query image (see ``decode_bounded``)."""
    return decode_bounded("uploaded image", data, cap)


def check_load_decode(
    what: str, source: bytes | Path | BinaryIO, cap: int, draft_to: int | None
) -> int:
    """The pixels a load's decode of this image takes (a JPEG reduced for ``draft_to`` as
    a load reduces it, ``draft_scale``), read from the header; a 413 naming the cap if that
    is above it. An image added through the service is decoded exactly as a load would
    decode it (so its vector is a load's), which is why the reduction is the load's, not
    the least one that fits the cap. Data that is no image is a 400 saying why, before
    any model is built (from a file handle, a header read before the upload waits for a
    slot, it passes: the read inside the slot says it)."""
    size, fmt = _probe(io.BytesIO(source) if isinstance(source, bytes) else source)
    if fmt is None and isinstance(source, bytes | Path):
        failure = decode_image(what, source)
        if isinstance(failure, DecodeFailure):
            raise ServiceError(f"cannot read the {what}: {failure.reason}")
    scale = draft_scale(size, draft_to) if draft_to and fmt == "JPEG" else 1
    pixels = (size[0] // scale) * (size[1] // scale)
    if pixels > cap:
        at = f"at the scale a load of this collection decodes it at (1/{scale})"
        raise _refuse(what, size, fmt, cap, at)
    return pixels


Model = TypeVar("Model", bound=BaseModel)


def form_model(model: type[Model], raw: str | None) -> Model:
    """The JSON ``query`` field of a multipart request read as ``model``: not JSON, nested
    too deeply for the parser, or an invalid field is a one-line 400 naming the field."""
    name = model.__name__
    try:
        return model.model_validate(json.loads(raw or "{}"))
    except json.JSONDecodeError as error:
        raise ServiceError(f"query: not JSON ({error.msg}); send a {name} object") from None
    except RecursionError:
        raise ServiceError(f"query: nested too deeply; send a flat {name} object") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ServiceError(f"query: {where}: {first['msg']}") from None
