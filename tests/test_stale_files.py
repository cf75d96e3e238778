"""A file replaced at the same path is extracted again on reload, not kept with its old
vector; unchanged files are skipped as before."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from ilias.config import DEFAULT_ENCODER
from ilias.indexing import EdgeStore, ExtractionOptions, load_collection
from ilias.loader import FILE_STAMP, read_images

pytestmark = [pytest.mark.slow, pytest.mark.faults]
OPTIONS = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync")


def test_a_replaced_image_is_extracted_again(tiny_ilias, tmp_path, encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "camera", "moon"):
        shutil.copy(tiny_ilias / "distractors" / f"{name}.jpg", folder / f"{name}.jpg")
    with EdgeStore(tmp_path / "q") as store:
        first = load_collection(read_images(folder), store, "c", OPTIONS)
        assert (first.loaded, first.already_present, first.changed) == (3, 0, 0)
        again = load_collection(read_images(folder), store, "c", OPTIONS)
        assert (again.loaded, again.already_present, again.changed) == (0, 3, 0)

        moon = folder / "moon.jpg"
        before = os.stat(moon)
        shutil.copy(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg", moon)  # same path
        os.utime(moon, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
        reloaded = load_collection(read_images(folder), store, "c", OPTIONS)
        assert (reloaded.loaded, reloaded.already_present, reloaded.changed) == (1, 2, 1)
        assert store.count("c") == 3
        stored = store.retrieve_vectors("c", ["photos/moon.jpg"])["photos/moon.jpg"]
        now = encoder.encode_images([Image.open(moon).convert("RGB")])[0]
        np.testing.assert_allclose(stored, now, atol=1e-5)  # the new picture's vector
        stamp = store.stored_payloads("c", ["photos/moon.jpg"], [FILE_STAMP])
        stat = os.stat(moon)
        assert stamp == {"photos/moon.jpg": {FILE_STAMP: f"{stat.st_size}:{stat.st_mtime_ns}"}}
