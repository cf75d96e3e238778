"""The reference's HDF5 feature files: written and read in its form, faults named by file,
loaded into a collection that equals an image load of the same data, and exported back in
the layout the reference's kNN search reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.errors import DatasetError, StoreError
from ilias.eval import score_rankings
from ilias.indexing import (
    EdgeStore,
    ExtractionOptions,
    export_database,
    import_features,
    load_collection,
    read_features,
    write_features,
)
from ilias.loader import open_dataset, read_ilias
from ilias.query import evaluate_collection, export_features, ilias_ids_of

PAYLOAD_KEYS = ["id", "path", "instance", "role", "bbox", "scale", "clutter", "file_stamp"]


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_file(path: Path, ids: list[str], features: np.ndarray) -> Path:
    """A file exactly as the reference's extract.py stores one (h5py directly, not ilias):
    ASCII ``index``, float16 ``features`` with its default gzip level 0."""
    with h5py.File(path, "w") as out:
        out.create_dataset("index", data=ids, dtype=h5py.string_dtype(encoding="ascii"))
        out.create_dataset(
            "features", data=features.astype(np.float16), dtype=np.float16,
            compression="gzip", compression_opts=0,
        )  # fmt: skip
    return path


def read_like_the_reference_search(folder: Path, total_distractors: int):
    """What knn_search/search.py reads: the positives file, then the distractor files
    named by its template with ``{idx}`` formatted ``05d``, concatenated in that order."""
    feats, ids = [], []
    names = ["features_positives.hdf5"] + [
        "features_distractors_{idx}.hdf5".format(idx=f"{i:05d}") for i in range(total_distractors)
    ]
    for name in names:
        with h5py.File(folder / name) as f:
            feats.append(f["features"][:].astype(np.float32))
            ids += f["index"].asstr()[:].tolist()
    return np.concatenate(feats), ids


def test_written_as_the_reference_and_read_back(tmp_path):
    ids = ["obj/pos/P000.jpg", "00000.tar/1001", "café/pos/東.jpg", "x/pos/\U0001f600.jpg"]
    x = unit(4, 8)
    path = write_features(tmp_path / "f.hdf5", ids, x)
    with h5py.File(path) as raw:
        assert raw["features"].dtype == np.float16  # the reference's default
        assert h5py.check_string_dtype(raw["index"].dtype).encoding == "ascii"
        # Non-ASCII escaped as the reference's extract_ilias escapes it.
        assert raw["index"].asstr()[:].tolist() == [
            "obj/pos/P000.jpg", "00000.tar/1001", "caf#U00e9/pos/#U6771.jpg",
            "x/pos/\\\\U0001f600.jpg",
        ]  # fmt: skip
    found = read_features(path)
    assert found.ids == ids and found.dim == 8
    np.testing.assert_array_equal(found.features, x.astype(np.float16).astype(np.float32))


def test_faults_are_one_line_naming_the_file(tmp_path):
    text = tmp_path / "notes.hdf5"
    text.write_text("hello")
    cases = {text: f"{text} is not an HDF5 file (expected 'index' and 'features')"}
    short = tmp_path / "short.hdf5"
    with h5py.File(short, "w") as out:
        out["index"] = np.array([b"a", b"b", b"c"])
        out["features"] = unit(2, 4)
    cases[short] = (
        f"{short}: 'index' holds 3 ids but 'features' has shape (2, 4); the file is "
        "incomplete or not from the reference's extraction"
    )
    bare = tmp_path / "bare.hdf5"
    with h5py.File(bare, "w") as out:
        out["features"] = unit(2, 4)
    cases[bare] = (
        f"{bare}: no 'index' dataset; a reference feature file holds 'index' (ids) and "
        "'features' (one row per id)"
    )
    numbers = tmp_path / "numbers.hdf5"
    with h5py.File(numbers, "w") as out:
        out["index"] = np.arange(2)
        out["features"] = unit(2, 4)
    cases[numbers] = f"{numbers}: 'index' is not a list of string ids"
    twice = write_features(tmp_path / "twice.hdf5", ["a", "a"], unit(2, 4))
    cases[twice] = f"{twice}: 'index' repeats ids; each id must appear once"
    gone = tmp_path / "gone.hdf5"
    cases[gone] = f"{gone}: no such feature file"
    for path, message in cases.items():
        with pytest.raises(DatasetError) as raised:
            read_features(path)
        assert str(raised.value) == message


def test_import_resumes_skips_query_files_and_refuses_a_wrong_dimension(tmp_path):
    positives = write_features(tmp_path / "pos.hdf5", ["a/pos/P0.jpg", "b/pos/P0.jpg"], unit(2, 8))
    distractors = write_features(
        tmp_path / "dis.hdf5", [f"00000.tar/{i}" for i in range(5)], unit(5, 8, seed=1)
    )
    other = write_features(tmp_path / "other.hdf5", ["00001.tar/9"], unit(1, 16))
    queries = write_features(tmp_path / "q.hdf5", ["a/query/Q0.jpg", "a/query/T0.txt"], unit(2, 8))
    mixed = write_features(tmp_path / "mixed.hdf5", ["a/query/Q0.jpg", "00002.tar/1"], unit(2, 8))
    with EdgeStore(tmp_path / "q") as store:
        report = import_features([queries, positives, distractors], store, "c", encoder="timm:x")
        assert (report.loaded, report.already_present) == (7, 0)
        assert report.query_files == [str(queries)]
        again = import_features([positives, distractors], store, "c", encoder="timm:x")
        assert (again.loaded, again.already_present) == (0, 7)
        hit = store.search("c", unit(2, 8)[:1], k=1)[0][0]
        assert hit.id == "a/pos/P0.jpg"
        assert hit.payload == {"id": "a/pos/P0.jpg", "role": "positive", "instance": "a"}
        assert store.collection_config("c").metadata["encoder"] == "timm:x"
        with pytest.raises(DatasetError) as wrong:
            import_features([distractors, other], store, "c", encoder="timm:x")
        assert str(wrong.value) == (
            f"{other}: 16-d features, but 'c' holds 8-d vectors; one collection holds the "
            "features of one encoder"
        )
        with pytest.raises(DatasetError, match="mixes query ids"):
            import_features([mixed], store, "c", encoder="timm:x")
        with pytest.raises(StoreError, match="holds descriptors of timm:x, not timm:y"):
            import_features([positives], store, "c", encoder="timm:y")
        nan = unit(2, 8)
        nan[1, 3] = np.nan
        broken = write_features(tmp_path / "nan.hdf5", ["00003.tar/1", "00003.tar/2"], nan)
        with pytest.raises(DatasetError, match=f"^{broken}: .*00003.tar/2"):
            import_features([broken], store, "c", encoder="timm:x")
        assert store.count("c") == 7
        # Files of one new collection must agree with each other, before anything is made.
        with pytest.raises(DatasetError, match=f"{other}: 16-d features, but {positives} has"):
            import_features([positives, other], store, "new", encoder="timm:x")
        assert not store.collection_exists("new")


def test_payload_comes_from_the_dataset_as_an_image_load_gives_it(tiny_ilias, tmp_path):
    """Reference files carry ids only: with the dataset given, each point gets the payload
    an image load of it would store (path, instance, role, bbox, scale, clutter), minus
    the file stamp of a file that was never read; ids the dataset lacks get their role."""
    core, distractor_dir = tiny_ilias / "core", tiny_ilias / "distractors"
    source = open_dataset(core, distractor_dir)
    bench = source.benchmark
    assert bench is not None
    positives = sorted(r.id for r in bench.database if r.payload["role"] == "positive")
    broken = {"distractors/empty.jpg", "distractors/truncated.jpg"}  # an image load skips them
    good = [r.id for r in bench.database if r.payload["role"] == "distractor"
            and r.id not in broken]  # fmt: skip
    feats = tmp_path / "feats"
    feats.mkdir()
    reference_file(feats / "features_image_queries.hdf5",
                   sorted(q.id for q in bench.image_queries), unit(3, 8, 3))  # fmt: skip
    reference_file(feats / "features_positives.hdf5", positives, unit(len(positives), 8))
    reference_file(feats / "features_distractors_00000.hdf5", good[:5], unit(5, 8, 1))
    reference_file(
        feats / "features_distractors_00001.hdf5", [*good[5:], "00000.tar/k1"], unit(4, 8, 2)
    )
    store = f"edge:{tmp_path / 'q'}"
    args = ["load", str(core), "--distractors", str(distractor_dir), "--features", str(feats),
            "--encoder", "timm:x", "--store", store, "-c", "c"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"c: {len(positives) + len(good) + 1} loaded, 0 already present, from 3" in said
    assert "skipped 1 query files" in said and "features_image_queries.hdf5" in said
    with EdgeStore(tmp_path / "q") as opened:
        stored = opened.stored_payloads("c", [*positives, *good], PAYLOAD_KEYS)
        expected = {r.id: {**r.payload, "id": r.id} for r in source.records}
        assert stored == {i: expected[i] for i in [*positives, *good]}
        assert opened.stored_payloads("c", ["00000.tar/k1"], PAYLOAD_KEYS) == {
            "00000.tar/k1": {"id": "00000.tar/k1", "role": "distractor"}
        }
        meta = opened.collection_config("c").metadata
        assert meta["dataset"] == str(core.resolve()) and meta["encoder"] == "timm:x"
        assert meta["features"] == [str(feats.resolve())]

    # A positive the given dataset lacks: the files belong to another dataset.
    stray = reference_file(tmp_path / "stray.hdf5", ["zebra/pos/P000.jpg"], unit(1, 8))
    again = ["load", str(core), "--features", str(stray), "--encoder", "timm:x"]
    refused = CliRunner().invoke(app, [*again, "--store", store, "-c", "c"])
    assert refused.exit_code == 1
    assert str(refused.exception) == (
        f"{stray}: zebra/pos/P000.jpg is not in the dataset given; pass the dataset these "
        "features were extracted from"
    )


@pytest.mark.parametrize("fault", ["lengths", "dimension", "missing", "not-hdf5", "mixed"])
def test_bad_files_are_one_line_and_lose_nothing_stored(tmp_path, fault):
    """Every file is inspected before anything is written: a bad one among good ones leaves
    the collection exactly as it was, and the error names that file."""
    good = reference_file(tmp_path / "good.hdf5", [f"00000.tar/{i}" for i in range(4)],
                          unit(4, 8))  # fmt: skip
    store = f"edge:{tmp_path / 'q'}"
    base = ["load", "--encoder", "timm:x", "--store", store, "-c", "c"]
    assert CliRunner().invoke(app, [*base, "--features", str(good)]).exit_code == 0
    with EdgeStore(tmp_path / "q") as opened:
        before = opened.retrieve_vectors("c", ["00000.tar/0", "00000.tar/3"])
    bad = tmp_path / "bad.hdf5"
    if fault == "lengths":
        with h5py.File(bad, "w") as out:
            out.create_dataset("index", data=["00001.tar/1", "00001.tar/2"],
                               dtype=h5py.string_dtype(encoding="ascii"))  # fmt: skip
            out.create_dataset("features", data=unit(3, 8).astype(np.float16))
        message = (
            f"{bad}: 'index' holds 2 ids but 'features' has shape (3, 8); the file is "
            "incomplete or not from the reference's extraction"
        )
    elif fault == "dimension":
        reference_file(bad, ["00001.tar/1"], unit(1, 16))
        message = (
            f"{bad}: 16-d features, but 'c' holds 8-d vectors; one collection holds the "
            "features of one encoder"
        )
    elif fault == "mixed":
        reference_file(bad, ["a/query/Q000.jpg", "00001.tar/1"], unit(2, 8))
        message = (
            f"{bad}: mixes query ids (a/query/Q000.jpg, ...) with database ids; queries and "
            "the database come in separate files"
        )
    elif fault == "missing":
        message = f"{bad}: no such feature file"
    else:
        bad.write_bytes(b"\x89HDF but not really")
        message = f"{bad} is not an HDF5 file (expected 'index' and 'features')"
    fresh = reference_file(tmp_path / "fresh.hdf5", ["00002.tar/1"], unit(1, 8, 5))
    result = CliRunner().invoke(app, [*base, "--features", str(fresh), "--features", str(bad)])
    assert result.exit_code == 1
    assert str(result.exception) == message
    with EdgeStore(tmp_path / "q") as opened:
        assert opened.count("c") == 4  # not even the good file given first was written
        after = opened.retrieve_vectors("c", ["00000.tar/0", "00000.tar/3"])
    for key, vector in before.items():
        np.testing.assert_array_equal(after[key], vector)


def test_globs_and_folders_name_the_files(tmp_path):
    for i in range(3):
        reference_file(tmp_path / f"features_distractors_{i:05d}.hdf5", [f"{i}.tar/a"], unit(1, 8))
    store = f"edge:{tmp_path / 'q'}"
    base = ["load", "--encoder", "timm:x", "--store", store, "-c", "c"]
    pattern = str(tmp_path / "features_distractors_*.hdf5")
    result = CliRunner().invoke(app, [*base, "--features", pattern])
    assert result.exit_code == 0, result.output
    assert "3 loaded, 0 already present, from 3 feature files" in " ".join(result.output.split())
    nothing = CliRunner().invoke(app, [*base, "--features", str(tmp_path / "nope_*.hdf5")])
    assert (
        str(nothing.exception) == f"{tmp_path / 'nope_*.hdf5'}: no feature files match this pattern"
    )
    neither = CliRunner().invoke(app, base)
    assert (
        str(neither.exception)
        == "pass a dataset (folder, list file, shards) or --features FILE to load"
    )


def test_export_writes_the_reference_layout_and_refuses_to_mix_with_an_old_one(tmp_path):
    """Positives sorted by id into one file, the rest over numbered distractor files of at
    most ``per_file`` rows; float16 within fp16 precision of the stored originals; no
    dataset recorded, so no queries, with the reason."""
    positives = [f"{name}/pos/P{j}.jpg" for name in ("b", "a") for j in range(2)]
    distractors = [f"00000.tar/{i}" for i in range(7)]
    x = unit(11, 8)
    feats = tmp_path / "in"
    feats.mkdir()
    reference_file(feats / "features_positives.hdf5", positives, x[:4])
    reference_file(feats / "features_distractors_00000.hdf5", distractors, x[4:])
    out = tmp_path / "out"
    with EdgeStore(tmp_path / "q") as store:
        import_features(sorted(feats.iterdir()), store, "c", encoder="timm:x")
        done = export_features(store, "c", out, per_file=3)
        assert (done.database.positives, done.database.distractors) == (4, 7)
        assert done.skipped == dict.fromkeys(
            ("image", "text"),
            "collection 'c' records no ILIAS dataset; pass the dataset folder (ilias export "
            "DATASET ...) to write its queries",
        )
        with pytest.raises(DatasetError) as again:
            export_database(store, "c", out)
        assert str(again.value) == (
            f"{out} already holds features_distractors_00000.hdf5 and 3 more from an earlier "
            "export; choose another folder or pass --overwrite to replace them"
        )
        # --overwrite removes the earlier files first: no stale _00002 beside a new _00000.
        export_database(store, "c", out, per_file=10, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "features_distractors_00000.hdf5", "features_positives.hdf5",
    ]  # fmt: skip
    shutil.rmtree(out)
    with EdgeStore(tmp_path / "q") as store:
        done = export_features(store, "c", out, per_file=3)
    assert [p.name for p in done.database.distractor_files] == [
        f"features_distractors_{i:05d}.hdf5" for i in range(3)
    ]
    with h5py.File(out / "features_positives.hdf5") as f:
        assert f["index"].asstr()[:].tolist() == sorted(positives)
        assert f["features"].dtype == np.float16
    rows, ids = read_like_the_reference_search(out, total_distractors=3)
    assert ids[:4] == sorted(positives) and sorted(ids[4:]) == sorted(distractors)
    assert len(ids) == len(set(ids)) == 11
    truth = dict(zip([*positives, *distractors], x, strict=True))
    np.testing.assert_allclose(rows, np.stack([truth[i] for i in ids]), atol=1e-3)


@pytest.mark.slow
def test_features_in_export_out_and_the_reference_search_agree(tiny_ilias, tmp_path, encoder):
    """An image load exported (float32), loaded back with --features and the dataset, and
    exported again: the same ids, payloads and vectors; the query file holds the queries
    as ilias eval encodes them; and an exact kNN over the files read the way the
    reference's search reads them gives ilias eval's rankings and mAP to the digit."""
    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync")
    first, second = tmp_path / "first", tmp_path / "second"
    with EdgeStore(tmp_path / "q") as store:
        load_collection(bench.database, store, "direct", options,
                        metadata={"dataset": str((tiny_ilias / "core").resolve())})  # fmt: skip
        done = export_features(store, "direct", first, fp16=False, per_file=4)
        assert done.queries == {"image": 3} and "no text tower" in done.skipped["text"]
        evaluation = evaluate_collection(store, "direct", bench).run("image")
    store_spec = f"edge:{tmp_path / 'q'}"
    loaded = CliRunner().invoke(app, [
        "load", str(tiny_ilias / "core"), "--distractors", str(tiny_ilias / "distractors"),
        "--features", str(first), "--encoder", DEFAULT_ENCODER, "--resolution", "224",
        "--store", store_spec, "-c", "imported",
    ])  # fmt: skip
    assert loaded.exit_code == 0, loaded.output
    export = ["export", "--store", store_spec, "-c", "imported", "--out", str(second)]
    exported = CliRunner().invoke(app, [*export, "--fp32", "--per-file", "4"])
    assert exported.exit_code == 0, exported.output
    assert "--total_distractors 2" in " ".join(exported.output.split())

    with EdgeStore(tmp_path / "q") as store:
        ids = sorted(r.id for r in bench.database if store.existing_ids("direct", [r.id]))
        keys = PAYLOAD_KEYS[:-1]  # an image load stamps its files; features have none
        assert store.stored_payloads("imported", ids, keys) == store.stored_payloads(
            "direct", ids, keys
        )
        imported = evaluate_collection(store, "imported", bench).run("image")
    assert imported.scores.per_query_ap == evaluation.scores.per_query_ap
    a, a_ids = read_like_the_reference_search(first, 2)
    b, b_ids = read_like_the_reference_search(second, 2)
    assert a_ids[:9] == b_ids[:9] and sorted(a_ids) == sorted(b_ids) == ids
    order = [b_ids.index(i) for i in a_ids]
    np.testing.assert_allclose(a, b[order], atol=1e-6)

    # The query file: sorted ids, the collection's encoder on the whole images.
    queries = read_features(first / "features_image_queries.hdf5")
    assert queries.ids == sorted(q.id for q in bench.image_queries)
    by_id = {q.id: q for q in bench.image_queries}
    pictures = [Image.open(by_id[i].source).convert("RGB") for i in queries.ids]
    np.testing.assert_allclose(queries.features, encoder.encode_images(pictures), atol=1e-5)
    # The reference's search: inner products, top k, positives file first.
    scores = queries.features @ a.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :1000]
    pairs = {q: [(a_ids[j], float(scores[n, j])) for j in row]
             for n, (q, row) in enumerate(zip(queries.ids, top, strict=True))}  # fmt: skip
    reference = score_rankings(pairs, ilias_ids_of(bench)).image
    assert reference is not None
    assert reference.map == evaluation.scores.map
    assert {q: [i for i, _ in hits] for q, hits in pairs.items()} == {
        q: [h.id for h in hits] for q, hits in evaluation.rankings.items()
    }
