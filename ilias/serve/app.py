"""The app factory: routers, error handlers, security, the page, and the store's lifetime.

``create_app(settings)`` opens the store when the app starts and closes it when it stops
(Qdrant Edge: this process owns the shard until then). It builds nothing else: routers
live in the ``api_*`` modules, the page in ``static/``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from ilias import __version__
from ilias.serve import (
    api_collections,
    api_images,
    api_match,
    api_page,
    api_runs,
    api_search,
    api_writes,
)
from ilias.serve.errors import ErrorGuard, install_error_handlers
from ilias.serve.limits import BodyLimitMiddleware, bound_allocator
from ilias.serve.security import install_security
from ilias.serve.settings import ServeSettings
from ilias.serve.state import ServiceState

STATIC = Path(__file__).resolve().parent / "static"


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """The service over ``settings.store`` (the configured default store if None)."""
    settings = settings or ServeSettings()
    bound_allocator()
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.open()
        logging.getLogger("uvicorn.error").info(
            "limits: %s decodes of at most %s pixels (%d MB each with the upload), %s "
            "waiting; memory budget: this process after its first queries + %d MB",
            settings.decodes,
            f"{settings.max_pixels:,}",
            settings.decode_bytes // 2**20,
            settings.queue,
            settings.decodes * settings.decode_bytes // 2**20,
        )
        try:
            yield
        finally:
            state.close()

    # /docs and /redoc with their scripts served from the fastapi-offline package, not a
    # CDN: the interactive docs work on a machine with no internet.
    app = FastAPIOffline(
        static_url="/docs/assets",
        title="ilias query service",
        version=__version__,
        description="Instance-level image search over one Qdrant store, and the evaluation "
        "runs of `ilias eval run`.",
        lifespan=lifespan,
    )
    app.state.service = state
    install_error_handlers(app)
    # Innermost first: body limits, then the key (and CORS) around them, then the guard
    # that answers any bug itself, outermost, so no exception reaches the server.
    app.add_middleware(
        BodyLimitMiddleware,
        upload_limit=settings.max_upload_bytes,
        json_limit=settings.max_json_bytes,
    )
    install_security(app, settings)
    app.add_middleware(ErrorGuard)
    for module in (api_collections, api_search, api_images, api_runs):
        app.include_router(module.router)
    app.include_router(api_collections.health_router)
    app.include_router(api_writes.router)  # refused (403) unless settings.writes
    app.include_router(api_page.router)
    app.include_router(api_page.runs_router)
    app.include_router(api_match.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    return app
