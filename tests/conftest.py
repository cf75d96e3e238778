"""Shared fixtures: a tiny ILIAS-layout dataset of real scikit-image photos, built once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from ilias.indexing import DEFAULT_ENCODER, cached_encoder

OBJECTS = {"cat": data.chelsea, "coffee": data.coffee, "rocket": data.rocket}
DISTRACTORS = {
    "astronaut": data.astronaut,
    "camera": data.camera,
    "coins": data.coins,
    "clock": data.clock,
    "brick": data.brick,
    "grass": data.grass,
    "moon": data.moon,
    "hubble": data.hubble_deep_field,
}


def _save(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(path, quality=92)


def _views(image: Image.Image) -> list[Image.Image]:
    """Harder views of the same object: a crop, a flip + rotation, a small paste into noise."""
    w, h = image.size
    crop = image.crop((w // 8, h // 8, w - w // 8, h - h // 8))
    turned = ImageOps.mirror(image).rotate(12, expand=True, fillcolor=(128, 128, 128))
    canvas = Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))
    canvas.paste(image.resize((w // 2, h // 2)), (w // 4, h // 4))
    return [crop, turned, canvas]


@pytest.fixture(scope="session")
def tiny_ilias(tmp_path_factory) -> Path:
    """``root/core`` in the ILIAS layout (3 instances x 3 positives) and ``root/distractors``
    with 8 real photos plus two broken files (one zero-byte, one truncated JPEG)."""
    root = tmp_path_factory.mktemp("tiny_ilias")
    ids = {"image_query_ids.txt": [], "text_query_ids.txt": [], "positive_ids.txt": []}
    for name, loader in OBJECTS.items():
        image = Image.fromarray(loader()).convert("RGB")
        query = root / "core" / name / "query" / "Q000.jpg"
        _save(image, query)
        (query.parent / "Q000_bbox.txt").write_text(f"0 0 {image.width} {image.height}\n")
        (query.parent / "T000.txt").write_text(f"a photo of a {name}")
        ids["image_query_ids.txt"].append(f"{name}/query/Q000.jpg,{name}")
        ids["text_query_ids.txt"].append(f"{name}/query/T000.txt")
        for index, view in enumerate(_views(image)):
            _save(view, root / "core" / name / "pos" / f"P{index:03d}.jpg")
            scale = (0.56, 1.0, 0.25)[index]  # crop, rotated copy, half-size paste
            ids["positive_ids.txt"].append(f"{name}/pos/P{index:03d}.jpg,{scale},{index}")
    (root / "core" / "image_ids").mkdir()
    for file_name, lines in ids.items():
        (root / "core" / "image_ids" / file_name).write_text("\n".join(lines) + "\n")
    for name, loader in DISTRACTORS.items():
        _save(Image.fromarray(loader()), root / "distractors" / f"{name}.jpg")
    (root / "distractors" / "empty.jpg").write_bytes(b"")
    whole = (root / "distractors" / "astronaut.jpg").read_bytes()
    (root / "distractors" / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    return root


@pytest.fixture(scope="session")
def encoder():
    """The offline default encoder (real ImageNet weights), at a small resolution for speed."""
    return cached_encoder(DEFAULT_ENCODER, 224)


@pytest.fixture(scope="module")
def tiny_store(tiny_ilias: Path, tmp_path_factory):
    """An Edge store holding ``tiny``: tiny_ilias' database loaded through the real pipeline
    (default encoder at 224, in process), its dataset recorded for evaluations."""
    from ilias.indexing import ExtractionOptions, load_collection, open_store
    from ilias.loader import read_ilias

    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    options = ExtractionOptions(DEFAULT_ENCODER, resolution=224, scheduler="sync")
    with open_store(f"edge:{tmp_path_factory.mktemp('tiny-store')}") as opened:
        metadata = {"dataset": str(tiny_ilias / "core")}
        load_collection(bench.database, opened, "tiny", options, metadata=metadata)
        yield opened
