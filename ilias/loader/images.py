"""Robust image decoding: one function that either returns an RGB image or says why not.

Large collections always contain a few files that are empty, truncated or not images at
all. A bad file must cost one skipped record (logged with its id and reason, counted by
the caller), never the run, so decoding reports failures as values instead of raising.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# Decompression bombs are refused by PIL above this many pixels; ILIAS images are far below.
Image.MAX_IMAGE_PIXELS = 200_000_000


@dataclass(frozen=True)
class DecodeFailure:
    """Why one record produced no image."""

    id: str
    reason: str


def decode_image(record_id: str, source: Path | bytes | str) -> Image.Image | DecodeFailure:
    """Decode ``source`` fully, apply the EXIF orientation and convert to RGB.

    ``Image.load()`` is forced here so that a truncated file fails now, inside the
    worker, rather than later inside a batch where it would take its neighbours with it.
    """
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(handle) as opened:
                opened.load()
                return _to_rgb(ImageOps.exif_transpose(opened))
    except FileNotFoundError:
        return DecodeFailure(record_id, f"file not found: {source!s}")
    except UnidentifiedImageError:
        return DecodeFailure(record_id, "not a recognised image format")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        return DecodeFailure(record_id, f"{type(error).__name__}: {error}")


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB conversion that puts transparent pixels on white, as a viewer would show them."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
