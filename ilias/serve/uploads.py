"""Uploaded query images: bounded in bytes before they are read whole, in pixels from the
header (the loader's one limit, ``ILIAS_MAX_PIXELS``), then decoded as database images are."""

from __future__ import annotations

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from ilias.loader.images import MAX_PIXELS_ENV, DecodeFailure, decode_image
from ilias.serve.errors import TooLarge, Unprocessable

# Room for the multipart framing and the query field around the image itself.
FORM_OVERHEAD = 64 * 1024


def _too_large(limit: int) -> str:
    return (
        f"upload larger than the limit of {limit:,} bytes; send a smaller image "
        "(ILIAS_MAX_UPLOAD_BYTES sets the limit)"
    )


def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, or a 413 naming the limit (never more than limit + 1 read)."""
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(_too_large(limit))
    return data


class UploadSizeMiddleware(BaseHTTPMiddleware):
    """A 413 before the body is read when Content-Length already says it is too large, so
    that a huge upload is not spooled to disk first (``read_limited`` checks the rest)."""

    def __init__(self, app: object, limit: int):
        super().__init__(app)  # type: ignore[arg-type]
        self.limit = limit

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        declared = request.headers.get("content-length", "")
        if (
            request.method == "POST"
            and declared.isdigit()
            and int(declared) > self.limit + FORM_OVERHEAD
        ):
            return JSONResponse({"detail": _too_large(self.limit)}, status_code=413)
        return await call_next(request)


def install_upload_limit(app: FastAPI, limit: int) -> None:
    app.add_middleware(UploadSizeMiddleware, limit=limit)


def decode_upload(data: bytes) -> Image.Image:
    """An RGB image, or a 422 that says why not (corrupt data, the pixel limit by name)."""
    image = decode_image("upload", data)
    if isinstance(image, DecodeFailure):
        if MAX_PIXELS_ENV in image.reason:
            raise Unprocessable(f"uploaded image is {image.reason}")
        raise Unprocessable(f"cannot read the uploaded image: {image.reason}")
    return image
