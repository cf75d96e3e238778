"""Robust image decoding: one function that either returns an RGB image or says why not.

Large collections always contain a few files that are empty, truncated or not images at
all. A bad file must cost one skipped record (logged with its id and reason, counted by
the caller), never the run, so decoding reports failures as values instead of raising.

Two rules hold for loads and queries alike (both decode here):

- **One pixel limit, checked before decoding**: an image whose header declares more than
  ``max_pixels()`` pixels (100 million by default, ``ILIAS_MAX_PIXELS`` to change) is
  refused from its header, so a 275 KB PNG declaring 16000 x 16000 costs nothing.
- **Faithful 8-bit RGB from every mode**: 16-bit and 32-bit integer greyscale are scaled
  to 0-255 (a 16-bit PNG is not clipped to white), float images in [0, 1] are scaled by
  255 (a float TIFF is not black), transparency is put on white, palette and CMYK images
  are converted; a mode Pillow cannot convert is a skip with the reason.

**Reduced-size JPEG decoding** (``draft_to``, used by extraction): a JPEG's DCT can decode
directly at 1/2 or 1/4 of its size (Pillow's draft mode), skipping most of the decoding
work; the encoder resizes the larger side to its resolution anyway. See ``draft_scale``
for the rule and why it keeps twice the resolution. Measured on 22 real photos of 1280 to
5640 px (``bench/draft.py``, EfficientNet-Lite0), the draft decode's descriptor has a cosine
of at least 0.9979 to the full decode's at 384 px, 0.9988 at 512 px and 0.9996 at 724 px
(bf16 autocast moves the same descriptors further: 0.9970, 0.9971, 0.9934), and a 4000 px
JPEG decodes and resizes 5.1x faster for 384 px, 3.0x for 724 px. ``tests/test_devices.py``
holds cosine >= 0.997 at 384 px.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ilias.config import positive_int_env

logger = logging.getLogger(__name__)

MAX_PIXELS_ENV = "ILIAS_MAX_PIXELS"
# 100 megapixels: any camera photo (ILIAS and YFCC images are far smaller), 300 MB decoded.
DEFAULT_MAX_PIXELS = 100_000_000
_INTEGER_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# DCT reductions used, largest first. libjpeg also offers 1/8, but at 1/8 it keeps only each
# block's mean (a box filter) and fine patterns alias: cosine 0.956 to the full decode on
# one real photo at 384 px, where 1/4 gives 0.998 (bench/draft.py).
DRAFT_SCALES = (4, 2)
# The draft keeps at least this many times the target resolution, so the final resize still
# does the anti-aliasing: keeping only 1x gave cosines down to 0.981 at 384 and 724 px.
DRAFT_MARGIN = 2
# Where a drafted image keeps the size of the full decode (EXIF orientation applied): local
# descriptors map their patch centres back to original pixels with it.
FULL_SIZE_KEY = "ilias.full_size"
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees
# decode_image enforces the one limit itself, from the header, with a message that names
# it; Pillow's own bomb check (another number, another message, a warning below it) is off.
Image.MAX_IMAGE_PIXELS = None


def max_pixels() -> int:
    """The pixel limit in effect: ``$ILIAS_MAX_PIXELS`` or 100 million."""
    return positive_int_env(
        MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "a whole number of pixels, e.g. 100000000"
    )


@dataclass(frozen=True)
class DecodeFailure:
    """Why one record produced no image."""

    id: str
    reason: str


def draft_scale(size: tuple[int, int], target: int) -> int:
    """The JPEG DCT reduction (4 or 2) to decode an image of ``size`` at, for an encoder that
    resizes its larger side to ``target``: the largest one whose result keeps the larger side
    at or above twice ``target`` (``DRAFT_MARGIN``; never below ``target``, whatever the
    margin); 1 (full decode) for an image less than four times ``target``.

    The larger side is what the resize targets and is the same before and after an EXIF
    rotation, so the choice does not depend on the orientation.
    """
    larger = max(size)
    keep = DRAFT_MARGIN * target
    return next((scale for scale in DRAFT_SCALES if larger // scale >= keep), 1)


def original_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the full decode, EXIF orientation applied, also for an image
    decoded at reduced size (``decode_image(..., draft_to=...)``)."""
    width, height = image.info.get(FULL_SIZE_KEY, image.size)
    return int(width), int(height)


def decode_image(
    record_id: str, source: Path | bytes | str, *, draft_to: int | None = None
) -> Image.Image | DecodeFailure:
    """Decode ``source``, apply the EXIF orientation and convert to RGB.

    ``Image.load()`` is forced here so that a truncated file fails now, inside the
    worker, rather than later inside a batch where it would take its neighbours with it.

    ``draft_to``: the size the larger side is about to be resized to. A JPEG at least four
    times that large then decodes at a reduced size that keeps twice ``draft_to``
    (``draft_scale``), several times faster; ``original_size`` still gives the full
    decode's size.
    None (the default) always decodes every pixel.
    """
    limit = max_pixels()
    try:
        if isinstance(source, bytes):
            if not source:
                return DecodeFailure(record_id, "empty data (0 bytes)")
            handle: io.BytesIO | Path = io.BytesIO(source)
        else:
            path = Path(source)
            if path.stat().st_size == 0:
                return DecodeFailure(record_id, f"empty file (0 bytes): {path}")
            handle = path
        with Image.open(handle) as opened:
            pixels = opened.width * opened.height
            if pixels > limit:  # from the header: nothing is decoded
                return DecodeFailure(
                    record_id,
                    f"{opened.width} x {opened.height} = {pixels:,} pixels, above the "
                    f"limit of {limit:,}; raise {MAX_PIXELS_ENV} to load it",
                )
            full = opened.size
            scale = draft_scale(full, draft_to) if draft_to and opened.format == "JPEG" else 1
            if scale > 1:
                # Pillow picks the largest reduction that keeps both sides >= the request, so
                # asking for size // scale gives exactly ``scale`` (or less on a sliver).
                opened.draft("RGB", (max(1, full[0] // scale), max(1, full[1] // scale)))
                if opened.getexif().get(ExifTags.Base.Orientation) in _SWAPPING_ORIENTATIONS:
                    full = (full[1], full[0])
            opened.load()
            image = _to_rgb(ImageOps.exif_transpose(opened))
            if scale > 1:
                image.info[FULL_SIZE_KEY] = full
            return image
    except FileNotFoundError:
        return DecodeFailure(record_id, f"file not found: {source!s}")
    except UnidentifiedImageError:
        return DecodeFailure(record_id, "not a recognised image format")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return DecodeFailure(record_id, f"{type(error).__name__}: {error}")


def crop_to_box(
    record_id: str, image: Image.Image, box: Sequence[int]
) -> Image.Image | DecodeFailure:
    """``image`` cropped to ``[x, y, w, h]``, clipped to the image; a box with no pixel
    inside the image is a failure that says so (a crop would be empty or padded black)."""
    clipped = clip_box(box, image.size)
    if clipped is None:
        x, y, w, h = (int(v) for v in box)
        return DecodeFailure(
            record_id,
            f"box x={x} y={y} w={w} h={h} holds no pixel of the {image.width} x "
            f"{image.height} image",
        )
    return image.crop(clipped)


def clip_box(box: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``[x, y, w, h]`` clipped to an image of ``size`` (width, height), as (left, top,
    right, bottom); None when no pixel of the image is inside it."""
    x, y, w, h = (int(v) for v in box)
    left, top = max(0, x), max(0, y)
    right, bottom = min(x + w, size[0]), min(y + h, size[1])
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB conversion that puts transparent pixels on white, as a viewer would show them,
    and brings high-bit-depth and float images to 0-255 instead of clipping them."""
    if image.mode in _INTEGER_GREY or image.mode == "F":
        image = Image.fromarray(_grey_to_8bit(np.asarray(image), image.mode), "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _grey_to_8bit(values: np.ndarray, mode: str) -> np.ndarray:
    """One channel of 16/32-bit integers or floats as 0-255, keeping what the values mean.

    16-bit modes span 0-65535 (divided by 257); 32-bit integers are 8-bit or 16-bit data
    by their range (PNG decoders hand 16-bit greyscale over as ``I``), else scaled by their
    maximum; floats in [0, 1] are scaled by 255, floats in [0, 255] kept, others stretched
    from their minimum to their maximum. NaN becomes 0.
    """
    x = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if mode.startswith("I;16"):
        x = x / 257.0
    elif mode == "I":
        if low < 0 or high > 65535:
            x = (x - low) / max(high - low, 1.0) * 255.0
        elif high > 255:
            x = x / 257.0
    elif low >= 0 and high <= 1.0:
        x = x * 255.0
    elif low < 0 or high > 255:
        x = (x - low) / max(high - low, 1e-12) * 255.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
