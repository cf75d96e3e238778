"""Dataset detection for `ilias load` / `ilias eval`, as library functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilias.errors import DatasetError
from ilias.loader import benchmark_for_collection, is_ilias_layout, open_dataset

POSITIVES = [f"{name}/pos/P00{i}.jpg" for name in ("cat", "coffee", "rocket") for i in range(3)]
DISTRACTORS = [
    f"distractors/{name}.jpg"
    for name in (
        "astronaut", "brick", "camera", "clock", "coins", "empty", "grass", "hubble", "moon",
        "truncated",
    )
]  # fmt: skip


def test_an_ilias_folder_gives_positives_then_distractors(tiny_ilias: Path) -> None:
    source = open_dataset(tiny_ilias / "core", tiny_ilias / "distractors")
    assert [r.id for r in source.records] == POSITIVES + DISTRACTORS
    assert source.metadata == {
        "dataset": str((tiny_ilias / "core").resolve()),
        "distractors": str((tiny_ilias / "distractors").resolve()),
    }
    assert source.benchmark is not None
    assert [q.id for q in source.benchmark.image_queries] == [
        "cat/query/Q000.jpg",
        "coffee/query/Q000.jpg",
        "rocket/query/Q000.jpg",
    ]


def test_an_ilias_folder_without_distractors(tiny_ilias: Path) -> None:
    source = open_dataset(str(tiny_ilias / "core"))
    assert [r.id for r in source.records] == POSITIVES
    assert source.metadata == {"dataset": str((tiny_ilias / "core").resolve())}


def test_a_plain_folder_is_an_image_collection(tiny_ilias: Path) -> None:
    source = open_dataset(tiny_ilias / "distractors")
    assert [r.id for r in source.records] == DISTRACTORS
    assert source.metadata == {"images": str((tiny_ilias / "distractors").resolve())}
    assert source.benchmark is None
    assert {r.payload["role"] for r in source.records} == {"image"}


def test_distractors_need_the_ilias_layout(tiny_ilias: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        open_dataset(tiny_ilias / "distractors", tiny_ilias / "distractors")
    assert str(raised.value) == (
        f"--distractors needs an ILIAS-layout dataset; {tiny_ilias / 'distractors'} is not one"
    )


def test_layout_detection(tiny_ilias: Path, tmp_path: Path) -> None:
    assert is_ilias_layout(tiny_ilias / "core")
    assert not is_ilias_layout(tiny_ilias / "distractors")
    assert not is_ilias_layout(tmp_path / "absent")
    assert not is_ilias_layout(tiny_ilias / "core" / "image_ids" / "positive_ids.txt")


def test_the_benchmark_of_a_collection(tiny_ilias: Path) -> None:
    meta = {"dataset": str(tiny_ilias / "core"), "encoder": "x"}
    from_meta = benchmark_for_collection(meta)
    assert from_meta.name == "core"
    assert sorted(from_meta.ground_truth) == ["cat", "coffee", "rocket"]
    assert sorted(p for ids in from_meta.ground_truth.values() for p in ids) == POSITIVES
    assert from_meta.database == [r for r in from_meta.database if r.id in POSITIVES]
    given = benchmark_for_collection({}, tiny_ilias / "core")
    assert given.ground_truth == from_meta.ground_truth


def test_a_collection_of_plain_images_has_no_benchmark(tiny_ilias: Path) -> None:
    with pytest.raises(DatasetError) as raised:
        benchmark_for_collection({"images": str(tiny_ilias / "distractors")})
    assert str(raised.value) == (
        "this collection was not loaded from an ILIAS-layout dataset; pass the dataset "
        "folder: ilias eval PATH"
    )
