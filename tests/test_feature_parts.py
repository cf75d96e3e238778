"""A bulk feature import written by several processes (parts adopted by the collection):
the same collection as one process writes, its segments as planned, a child's error one
line, and a kill at any point resumed to the exact set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from ilias.errors import DatasetError
from ilias.indexing import EdgeStore, import_features
from ilias.indexing.feature_parts import split_rows
from ilias.indexing.features import FeatureHeader, feature_file_name, write_features
from ilias.indexing.store.layout import segment_plan
from ilias.indexing.store.schema import default_payload_indexes
from ilias.types import SearchParams

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
DIM = 24


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def feature_files(folder: Path, distractor_files: int = 3, rows: int = 3_000, seed: int = 0):
    """A positives file (40 rows of 4 instances) and numbered distractor files; the files,
    and every id with its row as the collection stores it."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, np.ndarray] = {}
    positives = [f"{name}/pos/P{p:03d}.jpg" for name in "abcd" for p in range(10)]
    parts = [("positives", None, positives)]
    parts += [("distractors", n, [f"{n:05d}.tar/{j:06d}" for j in range(rows)])
              for n in range(distractor_files)]  # fmt: skip
    files = []
    for part, number, ids in parts:
        vectors = unit(rng.standard_normal((len(ids), DIM)))
        files.append(write_features(folder / feature_file_name(part, number), ids, vectors))
        # as stored: float16 in the file, normalized by the engine (cosine)
        expected.update(zip(ids, unit(vectors.astype(np.float16).astype(np.float32)), strict=True))
    return files, expected


def stored(store: EdgeStore, name: str) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for page in store.scroll(name):
        found.update(zip(page.ids, page.vectors, strict=True))
    return found


def test_rows_are_cut_into_equal_runs_across_files():
    headers = [FeatureHeader(Path(name), rows, DIM, "float16")
               for name, rows in (("p", 40), ("d0", 3_000), ("d1", 3_000))]  # fmt: skip
    runs = split_rows(headers, 2)
    assert [[(r.path.name, r.start, r.stop) for r in run] for run in runs] == [
        [("p", 0, 40), ("d0", 0, 2_980)],
        [("d0", 2_980, 3_000), ("d1", 0, 3_000)],
    ]
    assert [sum(r.rows for r in run) for run in split_rows(headers, 3)] == [2_014, 2_014, 2_012]


def test_each_part_gets_its_share_of_equal_segments_and_the_collection_room_for_all():
    one = segment_plan("compact", 1024, 5_004_715, index="scan")
    two = segment_plan("compact", 1024, 5_004_715, index="scan", parts=2)
    # one process: sealed every 1M (its files' checkpoints fall there too), 6 + 1 segments
    assert (one.seal_points, one.number) == (1_000_000, 7)
    # two: 2.5M each as 3 segments of 834,120 (not 1M, 1M, 0.5M), room for 6 + 1, and a
    # cap of one such segment, so nothing adopted is merged (rewritten)
    assert (two.seal_points, two.number) == (834_120, 7)
    assert two.max_size_kb == 834_120 * 1024 * 2 // 1024


def test_a_parallel_import_equals_the_one_a_single_process_writes(tmp_path):
    files, expected = feature_files(tmp_path / "features")
    with EdgeStore(tmp_path / "one") as one, EdgeStore(tmp_path / "two") as two:
        serial = import_features(files, one, "c", encoder="timm:x", index="scan", workers=1)
        seen: list[int] = []
        parallel = import_features(files, two, "c", encoder="timm:x", index="scan", workers=2,
                                   progress=lambda done, total: seen.append(done))  # fmt: skip
        assert serial.loaded == parallel.loaded == len(expected) == 9_040
        assert two.collection_config("c").import_parts == 2
        assert seen[-1] == 9_040 and seen == sorted(seen)
        a, b = stored(one, "c"), stored(two, "c")
        assert a.keys() == b.keys() == expected.keys()
        for key, row in expected.items():
            np.testing.assert_array_equal(b[key], a[key])
            np.testing.assert_allclose(b[key], row, atol=1e-6)
        # the same payloads, filters and exact rankings
        for store in (one, two):
            assert store.count("c", {"role": "positive"}) == 40
            assert store.count("c", {"instance": "b"}) == 10
        query = unit(np.random.default_rng(9).standard_normal((3, DIM)))
        exact = SearchParams(exact=True)
        ranked = [store.search("c", query, k=50, params=exact) for store in (one, two)]
        assert [[h.id for h in hits] for hits in ranked[0]] == [
            [h.id for h in hits] for hits in ranked[1]
        ]
        assert not (tmp_path / "two" / "c" / "parts").exists() or not any(
            (tmp_path / "two" / "c" / "parts").iterdir()
        )
    # one sealed segment per part, each with every payload index, beside the appendable one
    shard = qe.EdgeShard.load(str(tmp_path / "two" / "c" / "shard"))
    assert shard.info().segments_count == 3
    assert set(shard.info().payload_schema) == set(default_payload_indexes())
    shard.close()
    segments = list((tmp_path / "two" / "c" / "shard" / "segments").iterdir())
    indexed = [s for s in segments if (s / "id_tracker.mappings").is_file()]
    assert len(indexed) == 2
    for segment in indexed:
        names = {p.name for p in (segment / "payload_index").iterdir()}
        assert any("role" in name for name in names), names


def test_an_error_in_one_process_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    files, _ = feature_files(tmp_path / "features")
    rng = np.random.default_rng(3)
    rows = unit(rng.standard_normal((3_000, DIM)))
    rows[2_500, 4] = np.nan
    ids = [f"00009.tar/{j:06d}" for j in range(3_000)]
    broken = write_features(tmp_path / "features" / feature_file_name("distractors", 9), ids, rows)
    with EdgeStore(tmp_path / "store") as store:
        named = r"features_distractors_00009\.hdf5.*00009\.tar/002500"
        with pytest.raises(DatasetError, match=named):
            import_features([*files, broken], store, "c", encoder="timm:x", index="scan",
                            workers=2)  # fmt: skip
        assert not store.collection_exists("c")
    assert not (tmp_path / "store" / "c").exists()


KILLER = """
import os, signal, sys
from ilias.indexing import EdgeStore, import_features
from ilias.indexing.store.edge import EdgeEngine
where, store, files = sys.argv[1], sys.argv[2], sys.argv[3:]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
def progress(done, total):
    if where == "writing" and done >= total // 3:
        die()
if where == "adopting":  # every part written and sealed, none adopted yet
    EdgeEngine.adopt_parts = die
import_features(files, EdgeStore(store), "c", encoder="timm:x", index="scan", workers=2,
                chunk=500, progress=progress)
"""


@pytest.mark.faults
@pytest.mark.parametrize("where", ["writing", "adopting"])
def test_a_killed_parallel_import_resumes_to_the_exact_set(tmp_path, where):
    files, expected = feature_files(tmp_path / "features", rows=6_000)
    killed = subprocess.run([sys.executable, "-c", KILLER, where, str(tmp_path / "store"),
                             *map(str, files)], env=ENV)  # fmt: skip
    assert killed.returncode == -9
    with EdgeStore(tmp_path / "store") as store:
        # the rerun opens every part: no process of the killed import holds one
        report = import_features(files, store, "c", encoder="timm:x", index="scan", workers=2)
        assert report.loaded + report.already_present == len(expected)
        if where == "adopting":  # all of it was sealed in the parts: adopted, nothing read
            assert report.loaded == 0
        assert store.count("c") == len(expected)
        found = stored(store, "c")
    assert found.keys() == expected.keys()
    for key, row in expected.items():
        np.testing.assert_allclose(found[key], row, atol=1e-6)
    assert not any((tmp_path / "store" / "c" / "parts").iterdir())


def test_ilias_load_features_takes_workers(tmp_path):
    _, expected = feature_files(tmp_path / "features", distractor_files=2, rows=2_000)
    done = subprocess.run(
        [sys.executable, "-m", "ilias", "load", "--features", str(tmp_path / "features"),
         "--workers", "2", "--for-eval", "--store", f"edge:{tmp_path / 'store'}", "-c", "c"],
        capture_output=True, text=True, env={**ENV, "ILIAS_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"c: {len(expected)} loaded, 0 already present, from 3 feature files" in done.stdout
    assert "Traceback" not in done.stderr
    with EdgeStore(tmp_path / "store") as store:
        assert store.collection_config("c").import_parts == 2
        assert store.count("c") == len(expected)
