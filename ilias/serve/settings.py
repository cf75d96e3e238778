"""What the service is configured with: the CLI's settings plus limits of its own.

Store and collection come from the same place as every command's (option > environment >
``ilias.toml`` > default, ``ilias.config.Settings``); the API key only from the
environment (``ILIAS_API_KEY``), never from a file or a command line that ``ps`` shows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ilias.config import Settings, positive_int_env

API_KEY_ENV = "ILIAS_API_KEY"
CORS_ENV = "ILIAS_CORS_ORIGINS"
MAX_UPLOAD_ENV = "ILIAS_MAX_UPLOAD_BYTES"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # 20 MiB: any photo; far below what would hurt memory
MAX_K = 1000  # the benchmark's k; larger answers are pages nobody reads over HTTP


def _upload_limit() -> int:
    return positive_int_env(
        MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD, "a whole number of bytes, e.g. 20971520"
    )


def _origins() -> tuple[str, ...]:
    raw = os.environ.get(CORS_ENV, "")
    return tuple(o.strip() for o in raw.split(",") if o.strip())


@dataclass(frozen=True)
class ServeSettings:
    """One service process: one store, a default collection, optional evaluation runs.

    ``cors_origins`` is empty by default (no cross-origin access); ``api_key`` None means
    no key is asked for. ``max_upload_bytes`` bounds an uploaded query image before it is
    read whole; the pixel limit is the loader's (``ILIAS_MAX_PIXELS``), as for loads.
    """

    store: str = field(default_factory=lambda: Settings().store)
    collection: str = field(default_factory=lambda: Settings().collection)
    runs: Path | None = None
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    cors_origins: tuple[str, ...] = field(default_factory=_origins)
    max_upload_bytes: int = field(default_factory=_upload_limit)
    max_k: int = MAX_K
    writes: bool = False  # add and delete points through the API (ilias serve --writes)
