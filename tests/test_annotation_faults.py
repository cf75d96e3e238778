"""Faulty ILIAS annotations: decided when the dataset is read, one line naming file and line.

Choices (README, Reliability): a bbox line that is not four finite numbers, and a
``positive_ids.txt`` line that is not ``id,scale,clutter``, refuse the dataset; a box with no
area is skipped with a warning; a box with no pixel inside its image refuses that query
when queries are cropped (``--crop-queries``), naming the image.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image

from ilias.errors import DatasetError
from ilias.indexing import load_image_for
from ilias.loader import Record, read_bbox, read_ilias
from ilias.loader.images import DecodeFailure

pytestmark = pytest.mark.faults


def layout(root: Path, bbox: str | None = None, positives: str | None = None) -> Path:
    query = root / "core" / "obj" / "query"
    query.mkdir(parents=True)
    (root / "core" / "obj" / "pos").mkdir()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(query / "Q000.jpg")
    Image.new("RGB", (40, 30), (10, 200, 10)).save(root / "core" / "obj" / "pos" / "P000.jpg")
    if bbox is not None:
        (query / "Q000_bbox.txt").write_text(bbox)
    if positives is not None:
        (root / "core" / "image_ids").mkdir()
        (root / "core" / "image_ids" / "positive_ids.txt").write_text(positives)
    return root / "core"


@pytest.mark.parametrize(
    ("line", "shown"),
    [("1 2 inf 4", "'1 2 inf 4'"), ("nan 2 3 4", "'nan 2 3 4'"), ("1 2 x 4", "'1 2 x 4'"),
     ("1 2 3", "'1 2 3'"), ("1e400 0 1 1", "'1e400 0 1 1'")],
)  # fmt: skip
def test_a_bbox_line_that_is_not_four_finite_numbers_refuses_the_dataset(tmp_path, line, shown):
    core = layout(tmp_path, bbox=f"0 0 10 10\n{line}\n")
    path = core / "obj" / "query" / "Q000_bbox.txt"
    with pytest.raises(DatasetError) as raised:
        read_ilias(core)
    assert str(raised.value) == (
        f"{path}:2: expected 'x y w h' (four finite numbers), got {shown}; fix or delete the file"
    )


def test_boxes_with_no_area_are_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "Q_bbox.txt"
    path.write_text("5 5 0 10\n2 3 10 8\n1 1 4 -2\n")
    with caplog.at_level(logging.WARNING):
        assert read_bbox(path) == [2, 3, 10, 8]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:1: box '5 5 0 10' has no area; skipped",
        f"{path}:3: box '1 1 4 -2' has no area; skipped",
    ]
    path.write_text("5 5 0 10\n")
    assert read_bbox(path) is None  # nothing left: the query is used whole


MALFORMED = [
    "obj/pos/P000.jpg,big,3",
    "obj/pos/P000.jpg,0.5",
    ",0.5,3",
    "obj/pos/P000.jpg,inf,3",
    "obj/pos/P000.jpg,0.5,2.5",
]


@pytest.mark.parametrize("line", MALFORMED)
def test_a_malformed_positive_ids_line_refuses_the_dataset(tmp_path, line):
    core = layout(tmp_path, positives=f"obj/pos/P000.jpg,0.1,2\n{line}\n")
    with pytest.raises(DatasetError) as raised:
        read_ilias(core)
    assert str(raised.value) == (
        f"{core / 'image_ids' / 'positive_ids.txt'}:2: expected 'id,scale,clutter' (a finite "
        f"scale, a whole clutter count), got {line!r}; fix the line"
    )


def test_well_formed_annotations_still_read(tmp_path):
    core = layout(tmp_path, bbox="3 4 10 8\n", positives="obj/pos/P000.jpg,0.25,7\n")
    bench = read_ilias(core)
    assert bench.image_queries[0].payload["bbox"] == [3, 4, 10, 8]
    assert (bench.database[0].payload["scale"], bench.database[0].payload["clutter"]) == (0.25, 7)


def test_a_box_with_no_pixel_in_the_image_is_a_failure_naming_it(tmp_path):
    picture = tmp_path / "q.jpg"
    Image.new("RGB", (40, 30)).save(picture)
    outside = Record("obj/query/Q000.jpg", picture, {"bbox": [50, 5, 10, 10]})
    assert load_image_for(outside, crop_to_bbox=True) == DecodeFailure(
        "obj/query/Q000.jpg", "box x=50 y=5 w=10 h=10 holds no pixel of the 40 x 30 image"
    )
    partly = Record("obj/query/Q000.jpg", picture, {"bbox": [30, 20, 100, 100]})
    assert load_image_for(partly, crop_to_bbox=True).size == (10, 10)  # clipped to the image
