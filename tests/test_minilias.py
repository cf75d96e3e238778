"""mini-ILIAS from feature files: a graph-less collection for evaluation, query features
ranked with no model and no images, adaptation layers on both sides, and a fast (WAL-less)
import that survives a kill -9 and resumes to the exact set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ilias.indexing import CollectionConfig, EdgeStore, import_features
from ilias.indexing.features import feature_file_name, write_features
from ilias.indexing.store.search_index import resolve_index

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def ilias(*args: str, home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ilias", *args],
        capture_output=True,
        text=True,
        env={**ENV, "ILIAS_HOME": str(home)},
    )


def core_and_features(root: Path, dim: int = 16, distractors: int = 400, seed: int = 0):
    """An ILIAS core folder (empty image files: only ids matter) and its feature files,
    where each query sits on its own instance's positives."""
    rng = np.random.default_rng(seed)
    core, feats = root / "core", root / "features"
    feats.mkdir(parents=True)
    centres = unit(rng.standard_normal((4, dim)))
    queries, texts, positives = [], [], []
    for i, name in enumerate(["a", "b", "c", "d"]):
        (core / name / "query").mkdir(parents=True)
        (core / name / "pos").mkdir()
        (core / name / "query" / "Q000.jpg").touch()
        (core / name / "query" / "T000.txt").write_text(f"object {name}")
        queries.append((f"{name}/query/Q000.jpg", centres[i]))
        texts.append((f"{name}/query/T000.txt", centres[i]))
        for p in range(2):
            (core / name / "pos" / f"P{p:03d}.jpg").touch()
            positives.append(
                (f"{name}/pos/P{p:03d}.jpg", unit(centres[i] + 0.05 * rng.standard_normal(dim)))
            )
    for part, pairs in (
        ("image_queries", queries),
        ("text_queries", texts),
        ("positives", positives),
    ):
        write_features(
            feats / feature_file_name(part), [i for i, _ in pairs], np.stack([v for _, v in pairs])
        )
    noise = unit(rng.standard_normal((distractors, dim)))
    write_features(feats / feature_file_name("distractors", 0),
                   [f"00000.tar/{j:06d}" for j in range(distractors)], noise)  # fmt: skip
    return core, feats


def test_a_scan_collection_of_any_size_builds_no_graph(tmp_path):
    # auto would build a graph at mini-ILIAS size; scan never does, whatever the size
    assert resolve_index(None, dim=1024, expected_points=5_000_000) == "hnsw"
    assert resolve_index("scan", dim=1024, expected_points=5_000_000) == "scan"
    data = unit(np.random.default_rng(1).standard_normal((3_000, 32)))
    with EdgeStore(tmp_path) as store:
        config = CollectionConfig(
            dim=32, payload_indexes={}, index="scan", expected_points=50_000_000, storage="compact"
        )
        store.create_collection("c", config)
        ids = [f"p{i}" for i in range(3_000)]
        store.upsert("c", ids, data, [{} for _ in ids])
        store.finish_load("c")
        assert store.collection_config("c").graph_m == 0
        assert store.count("c") == 3_000
    segments = list((tmp_path / "c" / "shard" / "segments").glob("*/segment.json"))
    indexes = [
        json.loads(p.read_text())["config"]["vector_data"]["global"]["index"] for p in segments
    ]
    built = [i for i in indexes if i.get("type") == "hnsw"]
    assert built and all(i["options"]["m"] == 0 for i in built)  # quantized, no links


def test_query_features_evaluate_with_no_model_and_no_images(tmp_path):
    core, feats = core_and_features(tmp_path)
    store = f"edge:{tmp_path / 'store'}"
    done = ilias("load", str(core), "--features", str(feats), "--for-eval", "--store", store,
                 "-c", "mini", "--encoder", "timm:made-elsewhere", home=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with EdgeStore(tmp_path / "store") as opened:
        assert opened.collection_config("mini").index == "scan"
        assert not opened.collection_config("mini").wal  # the fast import's collection
    out = tmp_path / "metrics.json"
    done = ilias("eval", str(core), "--queries", "image,text", "--query-features", str(feats),
                 "--store", store, "-c", "mini", "--output", str(out), "--device", "cpu",
                 home=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    # every query sits on its instance's two positives: both rank first, AP 1
    assert {kind: r["map"] for kind, r in written["queries"].items()} == {
        "image": 100.0,
        "text": 100.0,
    }
    assert written["queries"]["image"]["n_queries"] == 4
    # a query file of another width: one line naming it, exit 1
    other = tmp_path / "other"
    other.mkdir()
    write_features(other / feature_file_name("image_queries"), ["a/query/Q000.jpg"],
                   np.ones((1, 8), np.float32))  # fmt: skip
    done = ilias("eval", str(core), "--query-features", str(other), "--store", store, "-c",
                 "mini", home=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = (done.stdout + done.stderr).strip()
    assert "8-d query features" in message and "16-d" in message
    # a query file that names another encoder
    write_features(other / feature_file_name("image_queries"), ["a/query/Q000.jpg"],
                   np.ones((1, 16), np.float32), encoder="timm:another")  # fmt: skip
    done = ilias("eval", str(core), "--query-features", str(other), "--store", store, "-c",
                 "mini", home=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "timm:another" in done.stdout + done.stderr


def test_an_adaptation_layer_applies_to_imported_and_query_features_alike(tmp_path):
    torch = pytest.importorskip("torch")
    from ilias.indexing.adaptation import LinearAdaptation, save_adaptation
    from ilias.loader import read_ilias
    from ilias.query import evaluate_collection

    core, feats = core_and_features(tmp_path, dim=16)
    torch.manual_seed(0)
    layer = LinearAdaptation(16, 8)
    path = save_adaptation(layer, tmp_path / "layer.pth")
    spec = f"timm:frozen|adapt={path}"
    files = sorted(feats.glob("features_*.hdf5"))
    with EdgeStore(tmp_path / "store") as store:
        import_features(files, store, "adapted", encoder=spec, index="scan")
        assert store.collection_config("adapted").dim == 8
        from ilias.indexing.features import read_features

        positives = read_features(feats / feature_file_name("positives"))
        stored = store.retrieve_vectors("adapted", positives.ids)
        expected = layer.apply_numpy(positives.features)
        got = np.stack([stored[i] for i in positives.ids])
        np.testing.assert_allclose(got, expected, atol=1e-6)
        evaluation = evaluate_collection(
            store, "adapted", read_ilias(core), kinds=("image", "text"), query_features=feats,
            device="cpu",
        )  # fmt: skip
        run = evaluation.run("image")
        query = read_features(feats / feature_file_name("image_queries"))
        adapted_query = layer.apply_numpy(query.features[:1])[0]
        top = run.rankings[query.ids[0]][0]
        assert top.score == pytest.approx(float(adapted_query @ stored[top.id]), abs=1e-5)
        # frozen features of the wrong width for the layer: one line naming the file
        wide = tmp_path / "wide.hdf5"
        write_features(wide, ["00000.tar/x"], np.ones((1, 12), np.float32))
        from ilias.errors import DatasetError

        with pytest.raises(DatasetError, match=r"adaptation layer .* takes 16-d"):
            import_features([wide], store, "other", encoder=spec)
        assert not store.collection_exists("other")


KILLER = """
import os, signal, sys
from ilias.indexing import EdgeStore, import_features
files = sys.argv[2:]
total = 0
def progress(done, _total):
    if done > 3_000 + 1_500:  # the first file checkpointed, half of the second read
        os.kill(os.getpid(), signal.SIGKILL)
store = EdgeStore(sys.argv[1])
import_features(files, store, "fast", encoder="timm:x", chunk=500, progress=progress,
                checkpoint_rows=3_000)
"""


@pytest.mark.faults
def test_an_interrupted_fast_import_resumes_to_the_exact_set(tmp_path):
    rng = np.random.default_rng(5)
    files, ids, rows = [], [], []
    for number in range(3):
        chunk_ids = [f"{number:05d}.tar/{j:05d}" for j in range(3_000)]
        chunk = unit(rng.standard_normal((3_000, 24)))
        files.append(write_features(tmp_path / feature_file_name("distractors", number),
                                    chunk_ids, chunk))  # fmt: skip
        ids += chunk_ids
        rows.append(chunk)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(tmp_path / "store"), *map(str, files)], env=ENV
    )
    assert killed.returncode == -9
    with EdgeStore(tmp_path / "store") as store:
        survived = store.count("fast")
        assert not store.collection_config("fast").wal
        report = import_features(files, store, "fast", encoder="timm:x")
        assert survived >= 3_000  # the first file's checkpoint held
        assert report.already_present == survived and report.loaded == 9_000 - survived
        assert store.count("fast") == 9_000
        stored = store.retrieve_vectors("fast", ids)
    assert set(stored) == set(ids)
    expected = np.concatenate(rows)
    got = np.stack([stored[i] for i in ids])
    np.testing.assert_allclose(got, expected, atol=1e-3)  # float16 files
    # the payload indexes, deferred to the end of a bulk import, were built by the rerun
    import qdrant_edge as qe

    from ilias.indexing.store.schema import default_payload_indexes

    shard = qe.EdgeShard.load(str(tmp_path / "store" / "fast" / "shard"))
    assert set(shard.info().payload_schema) == set(default_payload_indexes())
    shard.close()


def test_feature_import_faults_are_one_line_and_leave_nothing_behind(tmp_path):
    import h5py

    from ilias.errors import DatasetError, StoreError

    good = write_features(tmp_path / "good.hdf5", ["00000.tar/a", "00000.tar/b"],
                          unit(np.ones((2, 4), np.float32)))  # fmt: skip
    bad_rows = np.ones((2, 4), np.float32)
    bad_rows[1] = np.nan
    nan = write_features(tmp_path / "nan.hdf5", ["00000.tar/c", "00000.tar/d"], bad_rows)
    with EdgeStore(tmp_path / "store") as store:
        with pytest.raises(DatasetError, match=r"nan\.hdf5"):
            import_features([nan], store, "fresh", encoder="timm:x")
        assert not store.collection_exists("fresh")  # no empty collection left behind
        import_features([good], store, "made", encoder="timm:x", resolution=512)
        with pytest.raises(StoreError, match="made at 512px, not 384px"):
            import_features([good], store, "made", encoder="timm:x", resolution=384)
    for name, raw in (("latin.hdf5", b"caf\xe9"), ("cut.hdf5", b"\xe6\x9d")):
        path = tmp_path / name
        with h5py.File(path, "w") as out:
            out.create_dataset("index", data=np.array([raw], dtype="S"),
                               dtype=h5py.string_dtype("ascii"))  # fmt: skip
            out.create_dataset("features", data=np.ones((1, 4), np.float16))
        with EdgeStore(tmp_path / "store") as store, pytest.raises(DatasetError) as caught:
            import_features([path], store, "other", encoder="timm:x")
        assert name in str(caught.value) and "entry 0" in str(caught.value)
    done = ilias("load", "--features", str(tmp_path / "latin.hdf5"), "--store",
                 f"edge:{tmp_path / 'store'}", "-c", "x", home=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    said = " ".join(done.stderr.split())  # one message (the console wraps long lines)
    assert said.startswith("error:") and "latin.hdf5: 'index' entry 0" in said
