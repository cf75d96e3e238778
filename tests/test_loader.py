from pathlib import Path

import pytest
from PIL import Image

from ilias.errors import DatasetError
from ilias.loader import DecodeFailure, Role, decode_image, read_bbox, read_ilias, read_images


def test_ilias_layout_records(tiny_ilias: Path):
    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    assert [q.id for q in bench.image_queries] == [
        "cat/query/Q000.jpg",
        "coffee/query/Q000.jpg",
        "rocket/query/Q000.jpg",
    ]
    assert bench.text_queries[0].text == "a photo of a cat"
    assert bench.positives_for("cat/query/Q000.jpg") == {
        "cat/pos/P000.jpg",
        "cat/pos/P001.jpg",
        "cat/pos/P002.jpg",
    }
    roles = [r.payload["role"] for r in bench.database]
    assert roles.count(Role.POSITIVE) == 9 and roles.count(Role.DISTRACTOR) == 10
    query = bench.image_queries[0]
    assert query.payload["instance"] == "cat" and len(query.payload["bbox"]) == 4
    assert "distractors/moon.jpg" in {r.id for r in bench.database}


def test_plain_folder_and_list_file(tiny_ilias: Path, tmp_path: Path):
    folder = read_images(tiny_ilias / "distractors")
    names = ["astronaut", "brick", "camera", "clock", "coins", "empty", "grass", "hubble"]
    names += ["moon", "truncated"]
    assert [r.id for r in folder] == [f"distractors/{n}.jpg" for n in names]
    assert folder[0].source == tiny_ilias / "distractors" / "astronaut.jpg"
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\n{tiny_ilias / 'distractors' / 'moon.jpg'}\nmissing.jpg\n")
    records = read_images(listing)
    assert [r.payload["role"] for r in records] == ["image", "image"]
    # sources: an absolute path as given, a relative one resolved against the list's folder
    assert [r.source for r in records] == [
        tiny_ilias / "distractors" / "moon.jpg",
        tmp_path / "missing.jpg",
    ]


def test_not_an_ilias_layout_is_refused_with_advice(tiny_ilias: Path):
    with pytest.raises(DatasetError, match="ILIAS layout"):
        read_ilias(tiny_ilias / "distractors")


def test_bbox_union_and_bad_lines(tmp_path: Path):
    path = tmp_path / "Q_bbox.txt"
    path.write_text("10 20 30 40\n5 25 10 10\n")
    assert read_bbox(path) == [5, 20, 35, 40]
    path.write_text("10 20 thirty 40\n")
    with pytest.raises(DatasetError, match="x y w h"):
        read_bbox(path)


def test_decode_failures_are_values_not_exceptions(tiny_ilias: Path, tmp_path: Path):
    folder = tiny_ilias / "distractors"
    assert isinstance(decode_image("e", folder / "empty.jpg"), DecodeFailure)
    truncated = decode_image("t", folder / "truncated.jpg")
    assert isinstance(truncated, DecodeFailure) and truncated.id == "t"
    assert isinstance(decode_image("m", tmp_path / "missing.jpg"), DecodeFailure)
    assert isinstance(decode_image("b", b"not an image"), DecodeFailure)
    assert decode_image("ok", folder / "moon.jpg").mode == "RGB"  # grey photo -> RGB


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert decode_image("r", path).size == (20, 40)
