"""Every failure as one line of JSON, ``{"detail": "..."}``, and never a stack trace.

A mistake the caller can fix (an ``IliasError``: unknown collection, malformed filter,
unreadable image, k out of range) is a 4xx whose detail names the fix; anything else is a
bug, logged here with its traceback and answered with a generic 500. Either way the
connection stays usable: ``ErrorGuard`` answers a bug itself instead of letting the
exception reach the server (uvicorn closes a keep-alive connection on one, without
telling the client). The OpenAPI document describes every error body with one schema,
``ErrorModel``, on the routes and statuses that can answer it (``error_responses``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ilias.errors import IliasError

logger = logging.getLogger(__name__)


BUG_DETAIL = "internal error; the service log has the details"


async def send_detail(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """A whole ``{"detail": ...}`` answer sent from ASGI middleware, where no route's
    response class is at hand (the bug guard, the body limit, the key check)."""
    body = json.dumps({"detail": detail}).encode()
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


class ErrorModel(BaseModel):
    """Every error answer: one line that says what was wrong and what to do."""

    detail: str


_MEANINGS = {
    400: "the request cannot be done as asked (the detail says why)",
    401: "missing or wrong API key (a service started with ILIAS_API_KEY)",
    403: "writes are off (ilias serve --writes turns them on), or a write came without the "
    "X-API-Key or X-Requested-With header",
    404: "no such collection, point, run or file",
    413: "the request body or the image is larger than the service's limit",
    422: "a field is missing, of the wrong type or out of range",
    503: "busy (every decode slot taken): retry after Retry-After seconds",
}


# FastAPI's own words for a body it cannot parse, said with what to do.
_PLAIN_WORDS = {
    "There was an error parsing the body": "the body cannot be read (malformed, or JSON "
    "nested too deeply, or a form part too large); send one JSON object of plain fields",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with ``ErrorModel``."""
    return {s: {"model": ErrorModel, "description": _MEANINGS[s]} for s in statuses}


class ServiceError(IliasError):
    """An ``IliasError`` with the HTTP status it answers with (400 unless said)."""

    status_code = 400
    headers: dict[str, str] | None = None


class Forbidden(ServiceError):
    status_code = 403


class NotFound(ServiceError):
    status_code = 404


class TooLarge(ServiceError):
    status_code = 413


class Unprocessable(ServiceError):
    status_code = 422


def _one_line(text: str) -> str:
    """One line of valid UTF-8 (a lone surrogate a client sent is shown escaped)."""
    line = " ".join(str(text).split())
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_detail(error: RequestValidationError) -> str:
    """The first invalid field as ``field: reason`` (pydantic's own words, one line; a
    pattern in the schema is said in words)."""
    from ilias.serve.schemas import NO_NUL

    first = error.errors()[0] if error.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = first.get("msg", "invalid request")
    if (first.get("ctx") or {}).get("pattern") == NO_NUL:
        message = "holds a NUL character; remove it"
    return _one_line(f"{where}: {message}" if where else message)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into one-line JSON answers."""

    @app.exception_handler(IliasError)
    async def ilias_error(request: Request, error: IliasError) -> JSONResponse:
        status = getattr(error, "status_code", 400)
        headers = getattr(error, "headers", None)
        return JSONResponse({"detail": _one_line(str(error))}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(error)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(error, "headers", None) or {})
        detail = _PLAIN_WORDS.get(str(error.detail), str(error.detail))
        if error.status_code == 405:
            headers["Allow"] = _allowed_methods(app, request.scope)
        return JSONResponse(
            {"detail": _one_line(detail)},
            status_code=error.status_code,
            headers=headers or None,
        )


def _allowed_methods(app: FastAPI, scope: Scope) -> str:
    """Every method the OpenAPI document gives this path (Starlette's 405 names only the
    first route's, and a path such as /api/session has one route per method). Where
    templates overlap, the most concrete wins, as OpenAPI matches paths:
    ``.../points/delete`` is the bulk delete's path (POST), not a point named "delete"."""
    # The path as sent: an id's %2F stays inside its segment (a path parameter may hold "/")
    path = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
    matched: dict[int, set[str]] = {}
    for template, item in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            matched.setdefault(template.count("{"), set()).update(m.upper() for m in item)
    return ", ".join(sorted(matched[min(matched)])) if matched else ""


class ErrorGuard:
    """The outermost middleware of the app: an exception nobody handled becomes a logged
    generic 500 answered here, so the server never sees it and keeps the connection."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: nothing valid can follow on this connection
                raise
            await send_detail(send, 500, BUG_DETAIL)
