"""The reference's HDF5 feature files: written and read in its form, faults named by file,
and imported into a collection that evaluates exactly like one ilias extracted itself."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.errors import DatasetError
from ilias.indexing import (
    EdgeStore,
    ExtractionOptions,
    import_features,
    load_collection,
    read_features,
    write_features,
)
from ilias.loader import read_ilias
from ilias.query import evaluate_collection


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_written_as_the_reference_and_read_back(tmp_path):
    ids = ["obj/pos/P000.jpg", "00000.tar/1001"]
    x = unit(2, 8)
    path = write_features(tmp_path / "f.hdf5", ids, x)
    with h5py.File(path) as raw:
        assert raw["features"].dtype == np.float16  # the reference's default
        assert h5py.check_string_dtype(raw["index"].dtype).encoding == "ascii"
        assert [i.decode() for i in raw["index"][:]] == ids
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
    twice = write_features(tmp_path / "twice.hdf5", ["a", "a"], unit(2, 4))
    cases[twice] = f"{twice}: 'index' repeats ids; each id must appear once"
    for path, message in cases.items():
        with pytest.raises(DatasetError) as raised:
            read_features(path)
        assert str(raised.value) == message


def test_import_resumes_and_refuses_a_wrong_dimension(tmp_path):
    positives = write_features(tmp_path / "pos.hdf5", ["a/pos/P0.jpg", "b/pos/P0.jpg"], unit(2, 8))
    distractors = write_features(
        tmp_path / "dis.hdf5", [f"00000.tar/{i}" for i in range(5)], unit(5, 8, seed=1)
    )
    other = write_features(tmp_path / "other.hdf5", ["00001.tar/9"], unit(1, 16))
    queries = write_features(tmp_path / "q.hdf5", ["a/query/Q0.jpg"], unit(1, 8))
    with EdgeStore(tmp_path / "q") as store:
        report = import_features([positives, distractors], store, "c", encoder="timm:x")
        assert (report.loaded, report.already_present) == (7, 0)
        again = import_features([positives, distractors], store, "c", encoder="timm:x")
        assert (again.loaded, again.already_present) == (0, 7)
        hit = store.search("c", unit(2, 8)[:1], k=1)[0][0]
        assert hit.id == "a/pos/P0.jpg"
        assert hit.payload == {"id": "a/pos/P0.jpg", "role": "positive", "instance": "a"}
        assert store.collection_config("c").metadata["encoder"] == "timm:x"
        with pytest.raises(DatasetError) as wrong:
            import_features([other], store, "c", encoder="timm:x")
        assert str(wrong.value) == (
            f"{other}: 16-d features, but 'c' holds 8-d vectors; import it into a collection "
            "of its own encoder"
        )
        with pytest.raises(DatasetError, match="holds query features"):
            import_features([queries], store, "c", encoder="timm:x")
        assert store.count("c") == 7


@pytest.mark.slow
def test_imported_features_evaluate_as_an_ilias_load(tiny_ilias, tmp_path, encoder):
    """Features computed outside (here: the same encoder, written to the reference's file
    form in float32) give the collection a direct load gives: the same mAP to the digit."""
    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync")
    with EdgeStore(tmp_path / "q") as store:
        load_collection(bench.database, store, "direct", options)
        ids = [r.id for r in bench.database if store.existing_ids("direct", [r.id])]
        vectors = store.retrieve_vectors("direct", ids)
        path = write_features(tmp_path / "db.hdf5", ids, np.stack([vectors[i] for i in ids]),
                              fp16=False)  # fmt: skip
        import_features([path], store, "imported", encoder=DEFAULT_ENCODER, resolution=224)
        direct = evaluate_collection(store, "direct", bench).run("image")
        imported = evaluate_collection(store, "imported", bench).run("image")
    assert imported.scores.per_query_ap == direct.scores.per_query_ap
    assert imported.pairs() == direct.pairs()


def test_the_cli_imports_reference_files(tmp_path):
    path = write_features(tmp_path / "dis.hdf5", [f"00000.tar/{i}" for i in range(3)], unit(3, 8))
    store = f"edge:{tmp_path / 'q'}"
    args = ["import-features", str(path), "--encoder", "timm:x", "--store", store, "-c", "c"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "c: 3 imported, 0 already present, from 1 files; 3 points" in " ".join(
        first.output.split()
    )
    broken = tmp_path / "broken.hdf5"
    broken.write_text("x")
    refused = CliRunner().invoke(app, [*args[:1], str(broken), *args[2:]])
    assert refused.exit_code == 1
    assert str(refused.exception) == (
        f"{broken} is not an HDF5 file (expected 'index' and 'features')"
    )
