"""Small real-photo crops (scikit-image photos), a different picture for every seed, shared
by the tests of a collection's lifecycle (sync, writes through the service)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOS = [np.asarray(Image.fromarray(f()).convert("RGB"))
          for f in (data.astronaut, data.coffee, data.chelsea, data.rocket)]  # fmt: skip


def picture(seed: int) -> Image.Image:
    """A 40 x 40 crop of a real photo, different for every seed."""
    rng = np.random.default_rng(seed)
    photo = PHOTOS[seed % len(PHOTOS)]
    y, x = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
    return Image.fromarray(photo[y : y + 96, x : x + 96]).resize((40, 40))


def write(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    picture(seed).save(path, quality=92)
    return path


def replace_picture(path: Path, seed: int) -> None:
    """Another picture at the same path, with a later modification time."""
    before = os.stat(path).st_mtime_ns
    picture(seed).save(path, quality=92)
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))
