"""ilias.toml settings: what a file may set, and one-line errors naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ilias.config import DEFAULT_ENCODER, Settings, read_config
from ilias.errors import IliasError

KNOWN = "store, collection, encoder (the Qdrant API key goes in QDRANT_API_KEY)"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ilias.toml"
    path.write_text(text)
    return path


def test_top_level_or_ilias_table(tmp_path: Path) -> None:
    assert read_config(_file(tmp_path, 'store = "edge:/q"\ncollection = "c"\n')) == {
        "store": "edge:/q",
        "collection": "c",
    }
    assert read_config(_file(tmp_path, '[ilias]\nencoder = "timm:x"\n')) == {"encoder": "timm:x"}
    assert read_config(_file(tmp_path, "")) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('stroe = "edge:/q"\n', f"unknown setting 'stroe'; known: {KNOWN}"),
        ('api_key = "secret"\n', f"unknown setting 'api_key'; known: {KNOWN}"),
        ('[ilias]\ncolection = "c"\n', f"unknown setting 'colection'; known: {KNOWN}"),
        ("store = 5\n", "store: expected a string, not 5"),
        ('ilias = "x"\n', "[ilias] must be a table of settings"),
        ('store = "a"\n[ilias]\ncollection = "c"\n', "store outside [ilias]"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(IliasError) as raised:
        read_config(path)
    assert str(raised.value).startswith(f"{path}: {message}"), str(raised.value)
    assert "\n" not in str(raised.value)


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ILIAS_CONFIG", raising=False)
    for name in ("ILIAS_STORE", "ILIAS_COLLECTION", "ILIAS_ENCODER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ILIAS_HOME", str(tmp_path / "home"))
    assert Settings() == Settings(f"edge:{tmp_path / 'home' / 'qdrant'}", "ilias", DEFAULT_ENCODER)
    _file(tmp_path, 'collection = "from-file"\nstore = "edge:/file"\n')
    monkeypatch.setenv("ILIAS_STORE", "edge:/env")
    assert Settings() == Settings("edge:/env", "from-file", DEFAULT_ENCODER)


def test_a_bad_file_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    _file(tmp_path, 'stroe = "edge:/q"\n')
    done = subprocess.run(
        [sys.executable, "-m", "ilias", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env_without_config(),
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: {tmp_path / 'ilias.toml'}: unknown setting 'stroe'; known: {KNOWN}"
    )


def _env_without_config() -> dict[str, str]:
    root = str(Path(__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "ILIAS_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "200"
    return env
