"""A stored point's image and thumbnail, found through its payload ``path`` and served only
from the dataset folders its collection's metadata records (see ``files``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from ilias.serve.files import contained_path, file_response, thumbnail_response
from ilias.serve.state import ServiceState

router = APIRouter(prefix="/api/collections", tags=["images"])
IdQuery = Annotated[str, Query(description="the point's dataset id")]


def _point_path(state: ServiceState, collection: str, dataset_id: str):
    payload = state.payload(collection, dataset_id)
    raw = payload.get("path")
    what = f"{dataset_id!r} in {collection!r}"
    return contained_path(str(raw) if raw else dataset_id, state.image_roots(collection), what)


@router.get("/{collection}/image", response_class=Response)
def point_image(collection: str, id: IdQuery, request: Request) -> Response:
    """The stored point's image file, as it is on disk."""
    state: ServiceState = request.app.state.service
    return file_response(request, _point_path(state, collection, id))


@router.get("/{collection}/thumbnail", response_class=Response)
def point_thumbnail(
    collection: str,
    id: IdQuery,
    request: Request,
    size: Annotated[int, Query(description="longer side in pixels, 64 to 512")] = 256,
) -> Response:
    """A JPEG thumbnail of the stored point's image."""
    state: ServiceState = request.app.state.service
    return thumbnail_response(request, _point_path(state, collection, id), size)
