"""Tables at the width of the terminal they are printed on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.indexing import CollectionConfig, EdgeStore

runner = CliRunner()


def one_collection(folder: Path) -> str:
    with EdgeStore(folder) as store:
        meta = {"encoder": DEFAULT_ENCODER, "resolution": 224}
        store.create_collection("demo-lite0", CollectionConfig(dim=1280, metadata=meta))
        store.upsert("demo-lite0", ["a"], np.eye(1, 1280, dtype=np.float32), [{}])
    return f"edge:{folder}"


def test_info_at_80_columns_cuts_no_word(tmp_path: Path) -> None:
    store = one_collection(tmp_path / "store")
    done = runner.invoke(app, ["info", "--store", store], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    header = next(line for line in lines if "collection" in line and "┃" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][:4] == [
        "collection", "points", "indexed", "quantization",
    ]  # fmt: skip
    assert any(line.startswith("│ demo-lite0 │") for line in lines)
    text = " ".join(done.output.split())
    assert f"demo-lite0: encoder {DEFAULT_ENCODER}, res 224" in text  # under the table, whole
    wide = runner.invoke(app, ["collections", "--store", store], env={"COLUMNS": "200"})
    row = next(line for line in wide.output.splitlines() if line.startswith("│ demo-lite0"))
    assert [c.strip() for c in row.strip("│ ").split("│")][-2:] == [DEFAULT_ENCODER, "224"]


def test_a_collection_of_feature_files_shows_no_none(tmp_path: Path) -> None:
    with EdgeStore(tmp_path / "store") as store:
        meta = {"encoder": DEFAULT_ENCODER, "resolution": None}  # as --features records it
        store.create_collection("f", CollectionConfig(dim=8, metadata=meta))
    done = runner.invoke(app, ["collections", "--store", f"edge:{tmp_path / 'store'}"],
                         env={"COLUMNS": "200"})  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "None" not in done.output
