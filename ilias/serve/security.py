"""Who may call: an optional API key for everything but /health, /ready and the page's own
files, and CORS (off unless origins are configured).

The key comes in the ``X-API-Key`` header, and only there: a key in a URL ends up in
access logs, browser history and Referer headers. The page cannot put headers on
``<img>`` requests, so it trades the key once for a session cookie (``POST /api/session``
with the header): the cookie is HttpOnly (scripts cannot read it), SameSite=Strict (no
other site's page sends it), holds no key (an expiry and an HMAC of it under the key) and
expires after ``SESSION_S``. Keys and cookies are compared in constant time. The access
log never carries a key either: ``redact_access_log`` masks any ``api_key=`` a client
still puts in a URL (where it grants nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from http.cookies import SimpleCookie

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from ilias.serve.errors import error_responses, send_detail
from ilias.serve.settings import API_KEY_ENV, ServeSettings

API_KEY_HEADER = "X-API-Key"
COOKIE = "ilias_session"
SESSION_S = 12 * 3600  # a working day; the page asks for the key again after it
OPEN_PATHS = ("/health", "/ready")
PROTECTED_PREFIXES = ("/api/", "/docs", "/redoc", "/openapi.json")
_KEY_IN_URL = re.compile(r"(?i)(api[_-]?key=)[^&\s\"]*")

router = APIRouter(prefix="/api/session", tags=["session"])


def _signature(key: bytes, expiry: int) -> str:
    return hmac.new(key, f"ilias-session:{expiry}".encode(), hashlib.sha256).hexdigest()


def session_token(key: str, now: float | None = None) -> str:
    """A cookie value that proves the key was shown, until its expiry (not the key)."""
    expiry = int(now if now is not None else time.time()) + SESSION_S
    return f"{expiry}.{_signature(key.encode(), expiry)}"


def _valid_token(key: bytes, token: str) -> bool:
    expiry, _, signature = token.partition(".")
    if not expiry.isdigit() or len(expiry) > 12 or int(expiry) < time.time():
        return False
    return hmac.compare_digest(signature.encode(), _signature(key, int(expiry)).encode())


def _unauthorized_detail() -> str:
    return (
        f"missing or wrong API key; send it in the {API_KEY_HEADER} header (the page: "
        f"enter it once, it is exchanged for a session cookie); the service reads it from "
        f"{API_KEY_ENV}"
    )


class ApiKeyMiddleware:
    """401 with a one-line reason for a protected path without the key (header) or a valid
    session cookie. ``POST /api/session`` itself needs the header."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode()

    def _allowed(self, scope: Scope) -> bool:
        headers: dict[str, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.decode("latin-1").lower(), value)
        given = headers.get(API_KEY_HEADER.lower())
        if given is not None:
            return hmac.compare_digest(given, self.key)
        if scope["path"] == router.prefix:
            return False  # the exchange takes the key itself, not an older cookie
        raw_cookie = headers.get("cookie")
        if raw_cookie is None:
            return False
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(raw_cookie.decode("latin-1"))
        except Exception:  # a malformed Cookie header is no session
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and _valid_token(self.key, morsel.value)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in OPEN_PATHS
            or not path.startswith(PROTECTED_PREFIXES)
            or self._allowed(scope)
        ):
            await self.app(scope, receive, send)
            return
        await send_detail(send, 401, _unauthorized_detail())


@router.post("", status_code=204, response_class=Response, responses=error_responses(401, 413))
def start_session(request: Request) -> Response:
    """Trade the key (``X-API-Key`` header) for an HttpOnly, SameSite=Strict session cookie,
    so that the page's image URLs carry no key (without a key configured: nothing to do)."""
    answer = Response(status_code=204)
    key = request.app.state.service.settings.api_key
    if key:
        answer.set_cookie(
            COOKIE,
            session_token(key),
            max_age=SESSION_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return answer


@router.delete("", status_code=204, response_class=Response, responses=error_responses(401))
def end_session() -> Response:
    """Forget the session cookie (the page's "sign out")."""
    answer = Response(status_code=204)
    answer.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return answer


class _RedactKeys(logging.Filter):
    """Masks ``api_key=...`` in access-log lines (uvicorn passes the path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _KEY_IN_URL.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        elif isinstance(record.msg, str):
            record.msg = _KEY_IN_URL.sub(r"\1***", record.msg)
        return True


def redact_access_log() -> None:
    """Install the mask on uvicorn's access logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactKeys) for f in access.filters):
        access.addFilter(_RedactKeys())


def install_security(app: FastAPI, settings: ServeSettings) -> None:
    """The API key check where a key is set; CORS only for the configured origins."""
    redact_access_log()
    app.include_router(router)
    if settings.api_key:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=[API_KEY_HEADER, "Content-Type"],
        )
