"""Every failure as one line of JSON, ``{"detail": "..."}``, and never a stack trace.

A mistake the caller can fix (an ``IliasError``: unknown collection, malformed filter,
unreadable image, k out of range) is a 4xx whose detail names the fix; anything else is a
bug, logged here with its traceback and answered with a generic 500.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ilias.errors import IliasError

logger = logging.getLogger(__name__)


class ServiceError(IliasError):
    """An ``IliasError`` with the HTTP status it answers with (400 unless said)."""

    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class TooLarge(ServiceError):
    status_code = 413


class Unprocessable(ServiceError):
    status_code = 422


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def validation_detail(error: RequestValidationError) -> str:
    """The first invalid field as ``field: reason`` (pydantic's own words, one line)."""
    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = first.get("msg", "invalid request")
    return _one_line(f"{where}: {message}" if where else message)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into one-line JSON answers."""

    @app.exception_handler(IliasError)
    async def ilias_error(request: Request, error: IliasError) -> JSONResponse:
        status = getattr(error, "status_code", 400)
        return JSONResponse({"detail": _one_line(str(error))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": _one_line(str(error.detail))},
            status_code=error.status_code,
            headers=getattr(error, "headers", None),
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; the service log has the details"}, status_code=500
        )
