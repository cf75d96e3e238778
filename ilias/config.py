"""Typed settings with one precedence order: command-line option > environment > default.

``ILIAS_STORE`` (``edge:PATH`` or a Qdrant URL), ``ILIAS_COLLECTION`` and ``ILIAS_ENCODER``
set the defaults every command and ``Settings()`` use; ``ILIAS_HOME`` moves the default
data folder (``~/.local/share/ilias``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ilias.indexing.encoders import DEFAULT_ENCODER


def data_home() -> Path:
    return Path(os.environ.get("ILIAS_HOME", Path.home() / ".local" / "share" / "ilias"))


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Settings:
    store: str = field(
        default_factory=lambda: _env("ILIAS_STORE", f"edge:{data_home() / 'qdrant'}")
    )
    collection: str = field(default_factory=lambda: _env("ILIAS_COLLECTION", "ilias"))
    encoder: str = field(default_factory=lambda: _env("ILIAS_ENCODER", DEFAULT_ENCODER))
