"""What the store holds (collections, aliases, counts, encoders) and whether the service is
alive (/health, never behind the API key) and ready (/ready: the store is open)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ilias.indexing.store import aliases_by_collection
from ilias.serve.errors import error_responses
from ilias.serve.schemas import CollectionModel, CollectionsResponse
from ilias.serve.state import ServiceState

router = APIRouter(
    prefix="/api/collections", tags=["collections"], responses=error_responses(401, 404, 422)
)
health_router = APIRouter(tags=["health"])


class ReadyStatus(BaseModel):
    status: str
    collections: int | None = None


def _collection(state: ServiceState, name: str, aliases: list[str]) -> CollectionModel:
    details = state.engine(lambda: state.store.info(name))
    config = details.config
    metadata = dict(config.metadata)
    return CollectionModel(
        name=name,
        aliases=aliases,
        points=details.points,
        indexed_vectors=details.indexed_vectors,
        status=details.status,
        dim=config.dim,
        local_dim=config.local_dim,
        encoder=metadata.get("encoder"),
        resolution=metadata.get("resolution"),
        metadata=metadata,
    )


@router.get("", response_model=CollectionsResponse)
def list_collections(request: Request) -> CollectionsResponse:
    """Every collection with its aliases, point count, index state and encoder."""
    state: ServiceState = request.app.state.service
    names = state.engine(state.store.list_collections)
    aliases = state.engine(state.store.list_aliases)
    by_target = aliases_by_collection(aliases)
    return CollectionsResponse(
        store=state.store.location,
        default=state.settings.collection,
        collections=[_collection(state, n, by_target.get(n, [])) for n in names],
        aliases=aliases,
    )


@router.get("/{collection}", response_model=CollectionModel)
def collection_info(collection: str, request: Request) -> CollectionModel:
    """One collection (an alias answers for its target)."""
    state: ServiceState = request.app.state.service
    state.check_collection(collection)
    target = state.engine(lambda: state.store.resolve(collection))
    aliases = sorted(a for a, t in state.engine(state.store.list_aliases).items() if t == target)
    return _collection(state, target, aliases)


@health_router.get("/health")
def health() -> dict[str, str]:
    """The process answers (no store call, no API key)."""
    return {"status": "ok"}


@health_router.get(
    "/ready",
    response_model=ReadyStatus,
    responses={503: {"model": ReadyStatus, "description": "not ready: send no traffic yet"}},
)
def ready(request: Request) -> JSONResponse:
    """The store is open and answers: send traffic (503 until then)."""
    state: ServiceState = request.app.state.service
    if not state.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        count = len(state.engine(state.store.list_collections))
    except Exception:  # the engine is down: not ready, and no trace to the caller
        return JSONResponse({"status": "store unavailable"}, status_code=503)
    return JSONResponse({"status": "ready", "collections": count})
