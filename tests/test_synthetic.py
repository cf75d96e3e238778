"""The demo benchmark generator: ILIAS layout contract, determinism, fallback, caching."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from ilias.demo import DemoBenchmark, build_demo_benchmark, generate
from ilias.errors import DatasetError
from ilias.loader import read_ilias

SMALL = {"n_instances": 3, "positives_per_instance": 2, "n_distractors": 10}


@pytest.fixture(scope="module")
def auto_build(tmp_path_factory: pytest.TempPathFactory) -> DemoBenchmark:
    """The richest installed source (clip art where the Debian package is present)."""
    return build_demo_benchmark(tmp_path_factory.mktemp("auto"), **SMALL)


@pytest.fixture(scope="module")
def skimage_build(tmp_path_factory: pytest.TempPathFactory) -> DemoBenchmark:
    return build_demo_benchmark(
        tmp_path_factory.mktemp("skimage"), image_source="scikit-image", **SMALL
    )


def _read_box(path: Path) -> tuple[int, int, int, int]:
    lines = path.read_text().splitlines()
    assert len(lines) == 1
    x, y, w, h = (int(v) for v in lines[0].split())
    return x, y, w, h


def _assert_box_inside(image_path: Path) -> tuple[int, int, int, int, Image.Image]:
    image = Image.open(image_path)
    x, y, w, h = _read_box(image_path.with_name(f"{image_path.stem}_bbox.txt"))
    assert w > 0 and h > 0
    assert x >= 0 and y >= 0 and x + w <= image.width and y + h <= image.height
    return x, y, w, h, image


def _assert_consistent(result: DemoBenchmark) -> None:
    core = result.core_dir
    ids = core / "image_ids"
    image_query_lines = (ids / "image_query_ids.txt").read_text().splitlines()
    image_queries = [line.split(",")[0] for line in image_query_lines]
    # two columns, as ILIAS's own file (the reference reads it with loadtxt(...)[:, 0])
    assert all(line.split(",")[1] == line.split("/")[0] for line in image_query_lines)
    text_queries = (ids / "text_query_ids.txt").read_text().splitlines()
    positives = (ids / "positive_ids.txt").read_text().splitlines()
    assert len(image_queries) == len(text_queries) == result.n_instances
    assert len(positives) == result.n_positives

    instances = sorted(p.name for p in core.iterdir() if (p / "query").is_dir())
    assert len(instances) == result.n_instances
    assert all(re.fullmatch(r"[a-z0-9_]+", name) for name in instances)
    assert sorted(i.split("/")[0] for i in image_queries) == instances

    for query_id in image_queries:
        assert re.fullmatch(r"[a-z0-9_]+/query/Q000\.jpg", query_id)
        _assert_box_inside(core / query_id)
    for text_id in text_queries:
        text = (core / text_id).read_text(encoding="utf-8")
        assert text.strip() and "\n" not in text.strip()
    for line in positives:
        positive_id, scale_text, clutter_text = line.split(",")
        assert re.fullmatch(r"[a-z0-9_]+/pos/P\d{3}\.jpg", positive_id)
        _, _, w, h, image = _assert_box_inside(core / positive_id)
        scale = float(scale_text)
        assert 0.0 < scale < 1.0
        assert scale == pytest.approx(w * h / (image.width * image.height), abs=1e-6)
        assert int(clutter_text) >= 0 and str(int(clutter_text)) == clutter_text

    distractors = sorted(result.distractor_dir.glob("*.jpg"))
    assert len(distractors) == result.n_distractors
    sizes = {Image.open(p).size for p in distractors}
    sizes |= {Image.open(core / i).size for i in image_queries}
    assert sizes <= set(generate.IMAGE_SIZES)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_layout_and_id_files_are_consistent(auto_build: DemoBenchmark) -> None:
    assert auto_build.image_source in (generate.SOURCE_OPENCLIPART, generate.SOURCE_SKIMAGE)
    assert (auto_build.n_instances, auto_build.n_positives, auto_build.n_distractors) == (3, 6, 10)
    _assert_consistent(auto_build)


def test_ilias_loader_reads_the_build(auto_build: DemoBenchmark) -> None:
    benchmark = read_ilias(auto_build.core_dir, auto_build.distractor_dir)
    assert len(benchmark.image_queries) == len(benchmark.text_queries) == 3
    assert benchmark.n_positives == 6
    assert len(benchmark.database) == 6 + 10
    positive = next(r for r in benchmark.database if r.payload["role"] == "positive")
    assert 0 < positive.payload["scale"] < 1 and "bbox" in positive.payload


def test_two_builds_are_byte_identical(tmp_path: Path, auto_build: DemoBenchmark) -> None:
    again = build_demo_benchmark(tmp_path, image_source=auto_build.image_source, **SMALL)
    first = auto_build.core_dir.parent
    assert _tree_bytes(first) == _tree_bytes(tmp_path)
    assert again.n_instances == auto_build.n_instances


def test_another_seed_gives_other_images(tmp_path: Path, auto_build: DemoBenchmark) -> None:
    other = build_demo_benchmark(tmp_path, seed=1, image_source=auto_build.image_source, **SMALL)
    assert _tree_bytes(other.distractor_dir) != _tree_bytes(auto_build.distractor_dir)


def test_scikit_image_fallback_when_forced(skimage_build: DemoBenchmark) -> None:
    assert skimage_build.image_source == generate.SOURCE_SKIMAGE
    _assert_consistent(skimage_build)
    readme = (skimage_build.core_dir / "README.txt").read_text()
    assert "scikit-image" in readme


def test_fallback_lowers_instances_to_what_exists(tmp_path: Path) -> None:
    result = build_demo_benchmark(
        tmp_path,
        n_instances=500,
        positives_per_instance=1,
        n_distractors=2,
        image_source="scikit-image",
    )
    assert 10 <= result.n_instances < 500
    assert result.n_positives == result.n_instances
    _assert_consistent(result)
    assert (
        f"instances: {result.n_instances} (requested 500)"
        in (result.core_dir / "README.txt").read_text()
    )


def test_positive_is_not_its_query(auto_build: DemoBenchmark, skimage_build: DemoBenchmark) -> None:
    for result in (auto_build, skimage_build):
        for instance in (p for p in result.core_dir.iterdir() if (p / "query").is_dir()):
            query = Image.open(instance / "query" / "Q000.jpg").convert("RGB")
            for positive_path in sorted((instance / "pos").glob("P*.jpg")):
                positive = Image.open(positive_path).convert("RGB")
                assert positive.size != query.size or positive.tobytes() != query.tobytes()


def test_readme_says_it_is_not_ilias(auto_build: DemoBenchmark) -> None:
    readme = (auto_build.core_dir / "README.txt").read_text()
    assert "NOT THE ILIAS DATASET" in readme
    assert "seed: 0" in readme
    assert "generated from real images" in readme


def test_rerun_with_same_parameters_is_reused(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    first = build_demo_benchmark(
        tmp_path,
        image_source="scikit-image",
        progress=lambda d, t: calls.append((d, t)),
        **SMALL,
    )
    assert calls[-1] == (3 + 6 + 10, 3 + 6 + 10)
    assert [d for d, _ in calls] == list(range(1, 20))
    stamp = (first.core_dir / "README.txt").stat().st_mtime_ns

    calls.clear()
    again = build_demo_benchmark(
        tmp_path,
        image_source="scikit-image",
        progress=lambda d, t: calls.append((d, t)),
        **SMALL,
    )
    assert again == first and not calls
    assert (first.core_dir / "README.txt").stat().st_mtime_ns == stamp

    changed = build_demo_benchmark(
        tmp_path,
        image_source="scikit-image",
        n_instances=2,
        positives_per_instance=1,
        n_distractors=3,
    )
    assert (changed.n_instances, changed.n_positives, changed.n_distractors) == (2, 2, 3)
    _assert_consistent(changed)
    assert not (tmp_path / ".demo_build").exists()


def test_forced_openclipart_without_the_package_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generate, "OPENCLIPART_DIR", tmp_path / "absent")
    with pytest.raises(DatasetError, match="openclipart-png"):
        build_demo_benchmark(tmp_path / "out", image_source="openclipart", **SMALL)
    result = build_demo_benchmark(
        tmp_path / "auto",
        image_source="auto",
        n_instances=1,
        positives_per_instance=1,
        n_distractors=1,
    )
    assert result.image_source == generate.SOURCE_SKIMAGE


def test_refuses_to_replace_folders_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "core" / "some_instance").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not written by the demo generator"):
        build_demo_benchmark(tmp_path, image_source="scikit-image", **SMALL)
    assert (tmp_path / "core" / "some_instance").is_dir()


def test_bad_arguments_are_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown image source"):
        build_demo_benchmark(tmp_path, image_source="ilias")
    with pytest.raises(DatasetError, match="n_instances"):
        build_demo_benchmark(tmp_path, n_instances=0)
