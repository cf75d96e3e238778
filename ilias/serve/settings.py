"""What the service is configured with: the CLI's settings plus limits of its own.

Store and collection come from the same place as every command's (option > environment >
``ilias.toml`` > default, ``ilias.config.Settings``); the API key only from the
environment (``ILIAS_API_KEY``), never from a file or a command line that ``ps`` shows.

The limits make the service's memory a budget rather than a hope (README, "Limits"):

    peak RSS <= base + decodes x (DECODE_BYTES_PER_PIXEL x max_pixels + max_upload_bytes)

``base`` is the process after its first query (model, store, allocator caches); every
picture decoded on behalf of a request (an upload, a thumbnail) holds one of ``decodes``
slots while it is read, decoded, encoded and answered; at most ``queue`` more requests
wait for a slot (503 with Retry-After beyond that). No decode exceeds ``max_pixels``
(larger JPEGs are decoded at 1/2 or 1/4 of their size, other formats refused), and no
request body is read beyond its limit, whatever its Content-Length or chunking says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilias.config import Settings, positive_int_env

API_KEY_ENV = "ILIAS_API_KEY"
CORS_ENV = "ILIAS_CORS_ORIGINS"
MAX_UPLOAD_ENV = "ILIAS_MAX_UPLOAD_BYTES"
MAX_JSON_ENV = "ILIAS_SERVE_MAX_JSON_BYTES"
MAX_PIXELS_ENV = "ILIAS_SERVE_MAX_PIXELS"
DECODES_ENV = "ILIAS_SERVE_DECODES"
QUEUE_ENV = "ILIAS_SERVE_QUEUE"
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024  # 20 MiB: any photo; far below what would hurt memory
DEFAULT_MAX_JSON = 1024 * 1024  # 1 MiB: a search request is a few hundred bytes
# 8 MiP (2**23 = 8,388,608 pixels): a 4K frame (3840 x 2160) or an 8 MP photo decodes whole;
# larger JPEGs decode at 1/2 or 1/4 (the encoder resizes to at most ~1k pixels anyway).
# One decode of 8 MiP costs at most ~345 MB (a 32-bit float TIFF, the worst mode), 100 MB
# for an RGB photo.
DEFAULT_MAX_PIXELS = 8_388_608
DEFAULT_DECODES = 2  # concurrent decode+encode: the CPU cores the model uses well anyway
DEFAULT_QUEUE = 16  # requests waiting for a decode slot before 503s (their bodies on disk)
QUEUE_WAIT_S = 30.0  # a queued request waits at most this long, then 503
# Peak bytes one decode holds per pixel of its input, measured on the worst mode (a 32-bit
# float TIFF: the image, a float64 copy for the 0-255 scaling, its temporaries, the RGB
# result: 41 B/px; 16-bit PNG 35, RGBA 24, RGB 12, one-bit 6; python bench/serve.py
# --decode-cost) and rounded up with room for the encoder's input.
DECODE_BYTES_PER_PIXEL = 48
MAX_K = 1000  # the benchmark's k; larger answers are pages nobody reads over HTTP


def _origins() -> tuple[str, ...]:
    raw = os.environ.get(CORS_ENV, "")
    return tuple(o.strip() for o in raw.split(",") if o.strip())


def _env(name: str, default: int, example: str) -> Any:
    """A limit read from ``name`` when the settings are made (not when imported)."""
    return field(default_factory=lambda: positive_int_env(name, default, example))


@dataclass(frozen=True)
class ServeSettings:
    """One service process: one store, a default collection, optional evaluation runs.

    ``cors_origins`` is empty by default (no cross-origin access); ``api_key`` None means
    no key is asked for. The limits are described in the module docstring; each has an
    environment variable (the names above) and ``ilias serve`` options for the common ones.
    """

    store: str = field(default_factory=lambda: Settings().store)
    collection: str = field(default_factory=lambda: Settings().collection)
    runs: Path | None = None
    api_key: str | None = field(default_factory=lambda: os.environ.get(API_KEY_ENV) or None)
    cors_origins: tuple[str, ...] = field(default_factory=_origins)
    max_upload_bytes: int = _env(
        MAX_UPLOAD_ENV, DEFAULT_MAX_UPLOAD, "a number of bytes, e.g. 20971520"
    )
    max_json_bytes: int = _env(MAX_JSON_ENV, DEFAULT_MAX_JSON, "a number of bytes, e.g. 1048576")
    max_pixels: int = _env(MAX_PIXELS_ENV, DEFAULT_MAX_PIXELS, "a number of pixels, e.g. 8388608")
    decodes: int = _env(DECODES_ENV, DEFAULT_DECODES, "a number of decodes at once, e.g. 2")
    queue: int = _env(QUEUE_ENV, DEFAULT_QUEUE, "a number of waiting requests, e.g. 16")
    max_k: int = MAX_K
    writes: bool = False  # add and delete points through the API (ilias serve --writes)

    @property
    def decode_bytes(self) -> int:
        """What one decode slot may hold at its peak: the decode and the upload's bytes."""
        return DECODE_BYTES_PER_PIXEL * self.max_pixels + self.max_upload_bytes

    def budget_bytes(self, base: int) -> int:
        """The memory budget over a ``base`` RSS: every decode slot at its peak at once."""
        return base + self.decodes * self.decode_bytes
