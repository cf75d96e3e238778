"""Run descriptions for the tiny dataset, shared by the CLI and service tests."""

from __future__ import annotations

from pathlib import Path

from ilias.config import DEFAULT_ENCODER


def write_tiny_run(
    tiny_ilias: Path,
    folder: Path,
    name: str,
    extra: str = "",
    output: Path | None = None,
    plots: bool = True,
) -> Path:
    """``folder/<name>.toml``: the tiny dataset, sync extraction at 224 px, collection
    "tiny" in ``folder/qdrant``, results in ``output`` (default ``folder/<name>``)."""
    config = folder / f"{name}.toml"
    config.write_text(
        f"""
[run]
name = "{name}"
[dataset]
path = "{tiny_ilias / "core"}"
distractors = "{tiny_ilias / "distractors"}"
[encoder]
spec = "{DEFAULT_ENCODER}"
resolution = 224
[extraction]
scheduler = "sync"
[store]
spec = "edge:{folder / "qdrant"}"
collection = "tiny"
[metrics]
check_ids = false
[output]
dir = "{output or folder / name}"
plots = {str(plots).lower()}
{extra}
"""
    )
    return config
