"""Who may call: an optional API key for everything but /health, /ready and the page's own
files, and CORS (off unless origins are configured).

The key comes in the ``X-API-Key`` header; ``<img>`` tags cannot send headers, so image
URLs may carry it as ``?api_key=`` instead. Keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from ilias.serve.settings import API_KEY_ENV, ServeSettings

API_KEY_HEADER = "X-API-Key"
OPEN_PATHS = ("/health", "/ready")
PROTECTED_PREFIXES = ("/api/", "/docs", "/redoc", "/openapi.json")


class ApiKeyMiddleware(BaseHTTPMiddleware):
    """401 with a one-line reason for a protected path without the right key."""

    def __init__(self, app: object, key: str):
        super().__init__(app)  # type: ignore[arg-type]
        self.key = key.encode()

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path in OPEN_PATHS or not path.startswith(PROTECTED_PREFIXES):
            return await call_next(request)
        given = request.headers.get(API_KEY_HEADER) or request.query_params.get("api_key") or ""
        if not hmac.compare_digest(given.encode(), self.key):
            return JSONResponse(
                {"detail": f"missing or wrong API key; send it in the {API_KEY_HEADER} header "
                           f"(the service reads it from {API_KEY_ENV})"},
                status_code=401,
            )  # fmt: skip
        return await call_next(request)


def install_security(app: FastAPI, settings: ServeSettings) -> None:
    """The API key check where a key is set; CORS only for the configured origins."""
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )
