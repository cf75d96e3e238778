"""Image files to HTTP answers, served only from inside the folders a caller allows.

A stored payload's ``path`` (or a run's query id) is resolved, symlinks and ``..``
included, and must land inside one of the given roots; anything else is a 404, whatever
the reason (the answer does not tell a prober which files exist). Answers carry an ETag
from the file's identity and a Cache-Control, so a browser revisiting a result grid
asks with If-None-Match and gets a 304.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from fastapi import Request, Response
from fastapi.responses import FileResponse

from ilias.serve.errors import NotFound, Unprocessable
from ilias.serve.limits import DecodeGate
from ilias.serve.schemas import clean_text
from ilias.serve.uploads import decode_bounded

CACHE_CONTROL = "private, max-age=3600"
THUMBNAIL_SIZES = (64, 512)  # the smallest and largest thumbnail side served
# Thumbnails kept in memory: at most ~60 KB each at 512 px, so ~30 MB, part of the base of
# the memory budget (see settings); a grid of 50 results at two sizes fits many times.
THUMBNAIL_CACHE = 512


def contained_path(raw: str, roots: Sequence[str | Path], what: str) -> Path:
    """``raw`` resolved inside one of ``roots`` (relative paths are read against each root),
    or a 404: an absolute path elsewhere, a ``..`` escape or a symlink out are refused."""
    try:
        clean_text(raw)
    except ValueError:  # a NUL or a lone surrogate names no file (and os calls raise on it)
        raise NotFound(
            f"no image for {what} inside the dataset folders this service serves"
        ) from None
    candidate = Path(raw)
    for root in roots:
        base = Path(root).resolve()
        try:
            full = (candidate if candidate.is_absolute() else base / candidate).resolve()
            if full.is_relative_to(base) and full.is_file():
                return full
        except OSError:  # a name too long for the file system, a loop of links: no file
            continue
    raise NotFound(f"no image for {what} inside the dataset folders this service serves")


def _etag(path: Path, variant: str) -> str:
    stat = path.stat()
    key = f"{path}:{stat.st_mtime_ns}:{stat.st_size}:{variant}"
    return '"' + hashlib.sha1(key.encode()).hexdigest()[:20] + '"'


def _not_modified(request: Request, etag: str) -> Response | None:
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL})
    return None


def file_response(request: Request, path: Path) -> Response:
    """The file as stored, with its media type, an ETag and a Cache-Control."""
    etag = _etag(path, "original")
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path, media_type=media, headers={"ETag": etag, "Cache-Control": CACHE_CONTROL}
    )


def thumbnail_response(
    request: Request, path: Path, size: int, gate: DecodeGate, max_pixels: int
) -> Response:
    """A JPEG no larger than ``size`` on its longer side (cached in memory by file identity),
    decoded in one of the ``gate``'s slots within ``max_pixels``."""
    low, high = THUMBNAIL_SIZES
    if not low <= size <= high:
        raise Unprocessable(f"size: give a thumbnail side between {low} and {high} pixels")
    etag = _etag(path, f"thumb{size}")
    cached = _not_modified(request, etag)
    if cached is not None:
        return cached
    stat = path.stat()
    with gate.slot():
        data = _thumbnail(str(path), stat.st_mtime_ns, stat.st_size, size, max_pixels)
    return Response(
        data, media_type="image/jpeg", headers={"ETag": etag, "Cache-Control": CACHE_CONTROL}
    )


@lru_cache(maxsize=THUMBNAIL_CACHE)
def _thumbnail(path: str, mtime_ns: int, file_size: int, size: int, max_pixels: int) -> bytes:
    image = decode_bounded("stored image", Path(path), max_pixels, target=size)
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()
