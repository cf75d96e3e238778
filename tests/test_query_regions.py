"""Image queries whole (the reference's default), cropped, or masked outside their boxes.

The reference's ``--masking`` draws a mask of the boxes at the original size, resizes it
to the resized image by nearest-neighbour interpolation and multiplies the normalised
input by it; a ViT pads afterwards (tests/test_reference_order.py checks that order). The
unit cases below are computed by hand from that rule; the real photo checks what the
network then sees: the photo with its outside at the dataset mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import IliasError
from ilias.indexing import (
    mask_outside_boxes,
)
from ilias.loader import Record, read_boxes, read_ilias
from ilias.query import QueryImage, Retriever, evaluate_collection, query_images_of

runner = CliRunner()


def test_the_mask_is_drawn_at_the_original_size_and_resized_nearest():
    ones = torch.ones(3, 8, 8)
    # 4 x 4 original, left half kept: the left 4 of 8 input columns survive.
    left = mask_outside_boxes(ones, (4, 4), [[0, 0, 2, 4]])
    assert torch.equal(left[:, :, :4], torch.ones(3, 8, 4))
    assert torch.equal(left[:, :, 4:], torch.zeros(3, 8, 4))
    # 3 x 3 original -> 7 x 7 input: output index i reads source floor(i * 3 / 7), so the
    # centre pixel (1, 1) covers input rows and columns 3 and 4 only.
    centre = mask_outside_boxes(torch.ones(1, 7, 7), (3, 3), [[1, 1, 1, 1]])
    expected = torch.zeros(1, 7, 7)
    expected[:, 3:5, 3:5] = 1
    assert torch.equal(centre, expected)
    # Two boxes are two kept areas, not their union; a box past the left edge is clipped.
    parts = mask_outside_boxes(ones, (4, 4), [[-2, 0, 3, 1], [3, 3, 1, 1]])
    expected = torch.zeros(3, 8, 8)
    expected[:, 0:2, 0:2] = 1  # x -2..1 clipped to column 0, row 0
    expected[:, 6:8, 6:8] = 1
    assert torch.equal(parts, expected)
    # Values inside are untouched (a multiplication by exactly one).
    values = torch.randn(3, 8, 8)
    assert torch.equal(mask_outside_boxes(values, (4, 4), [[0, 0, 4, 4]]), values)


def test_every_box_of_a_file_is_kept_for_masking(tmp_path: Path):
    core = tmp_path / "core" / "cup" / "query"
    core.mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(core / "Q000.jpg")
    (core / "Q000_bbox.txt").write_text("2 3 10 8\n20 15 5 5\n")
    assert read_boxes(core / "Q000_bbox.txt") == [[2, 3, 10, 8], [20, 15, 5, 5]]
    (query,) = read_ilias(tmp_path / "core").image_queries
    assert query.payload["bbox"] == [2, 3, 23, 17]  # the union: what a crop uses
    assert query.payload["boxes"] == [[2, 3, 10, 8], [20, 15, 5, 5]]
    whole, crop, mask = (
        query_images_of([query], region)[0] for region in ("whole", "crop", "mask")
    )
    assert (whole.bbox, whole.mask) == (None, None)
    assert (crop.bbox, crop.mask) == ([2, 3, 23, 17], None)
    assert (mask.bbox, mask.mask) == (None, [[2, 3, 10, 8], [20, 15, 5, 5]])
    one = Record("x", "x.jpg", {"bbox": [1, 2, 3, 4]})  # one box: no "boxes" key stored
    assert query_images_of([one], "mask")[0].mask == [[1, 2, 3, 4]]
    with pytest.raises(IliasError, match="query region 'masked': use whole, crop, mask"):
        query_images_of([one], "masked")


@pytest.fixture(scope="module")
def store(tiny_store):
    return tiny_store


def test_a_masked_photo_is_the_photo_with_its_outside_at_the_mean(store, tiny_ilias: Path):
    retriever = Retriever(store, "tiny")
    path = tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg"
    photo = Image.open(path).convert("RGB")
    box = [0, 0, photo.width // 2, photo.height]  # the left half: the cup's saucer side
    masked, whole, cropped = retriever.encode_images(
        [QueryImage(path, mask=[box]), QueryImage(path), QueryImage(path, bbox=box)]
    )
    mean = retriever.encoder.mean.flatten().numpy()  # type: ignore[attr-defined]
    filled = np.asarray(photo).copy()
    filled[:, box[2] :] = np.round(mean * 255).astype(np.uint8)
    (at_mean,) = retriever.encode_images([Image.fromarray(filled)])
    # What the network sees: the same photo with the right half at the mean (up to the
    # rounding of the mean to 8 bits and the resize blending the edge), not the whole photo
    # and not the crop (another size, another framing).
    # Measured: 0.997 to the mean-filled photo, 0.830 to the whole one, 0.823 to the crop.
    assert float(masked @ at_mean) > 0.99
    assert float(masked @ whole) < 0.9
    assert float(masked @ cropped) < 0.9
    # A mask covering the whole image changes nothing in the input, bit for bit (the
    # descriptors may still differ in the last bit: oneDNN's kernels depend on batch size).
    full = [0, 0, photo.width, photo.height]
    encoder = retriever.encoder
    assert torch.equal(encoder.preprocess_masked(photo, [full]), encoder.preprocess(photo))
    (all_kept,) = retriever.encode_images([QueryImage(path, mask=[full])])
    assert float(all_kept @ whole) > 1 - 1e-6
    with pytest.raises(IliasError, match=r"no mask box .* holds a pixel"):
        retriever.encode_images([QueryImage(path, mask=[[photo.width, 0, 5, 5]])])
    with pytest.raises(IliasError, match=r"crop \(bbox\) or mask, not both"):
        retriever.encode_images([QueryImage(path, bbox=box, mask=[box])])


def test_an_evaluation_masks_or_crops_on_request_only(store) -> None:
    # tiny_ilias' boxes cover their whole photos: masking keeps every value, so the run
    # is the whole-query run exactly; asking for both is one clear refusal.
    whole = evaluate_collection(store, "tiny").run("image")
    masked = evaluate_collection(store, "tiny", mask_queries=True).run("image")
    assert masked.scores.per_query_ap == whole.scores.per_query_ap
    ranked = {q: [(h.id, h.score) for h in hits] for q, hits in whole.rankings.items()}
    assert {q: [(h.id, h.score) for h in hits] for q, hits in masked.rankings.items()} == ranked
    with pytest.raises(IliasError, match="--crop-queries and --mask-queries: choose one"):
        evaluate_collection(store, "tiny", crop_queries=True, mask_queries=True)


def test_the_cli_refuses_both_regions_in_one_line(store, tiny_ilias: Path) -> None:
    store_dir = str(store.engine.root)
    store.close()  # Edge allows one process handle: the CLI opens its own
    result = runner.invoke(
        app,
        ["eval", "--store", f"edge:{store_dir}", "-c", "tiny", "--crop-queries", "--mask-queries"],
    )
    assert result.exit_code == 1
    message = str(result.exception)
    assert message.startswith("--crop-queries and --mask-queries: choose one"), message
    assert "\n" not in message
