"""A stored point's image and thumbnail, found through its payload ``path`` and served only
from the dataset folders its collection's metadata records (see ``files``): an id that is
not a point of the collection is a 404 before any file is looked at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import AfterValidator

from ilias.serve.errors import error_responses
from ilias.serve.files import THUMBNAIL_SIZES, contained_path, file_response, thumbnail_response
from ilias.serve.schemas import MAX_ID_CHARS, NO_NUL, clean_text
from ilias.serve.state import ServiceState

router = APIRouter(
    prefix="/api/collections", tags=["images"], responses=error_responses(400, 401, 404, 422)
)
IdQuery = Annotated[
    str,
    Query(
        description="the point's dataset id", min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL
    ),
    AfterValidator(clean_text),
]
_IMAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}, "description": "the image"}
}


def _point_path(state: ServiceState, collection: str, dataset_id: str) -> Path:
    payload = state.payload(collection, dataset_id)
    raw = payload.get("path")
    what = f"{dataset_id!r} in {collection!r}"
    return contained_path(str(raw) if raw else dataset_id, state.image_roots(collection), what)


@router.get("/{collection}/image", response_class=Response, responses=_IMAGE)
def point_image(collection: str, id: IdQuery, request: Request) -> Response:
    """The stored point's image file, as it is on disk."""
    state: ServiceState = request.app.state.service
    return file_response(request, _point_path(state, collection, id))


@router.get(
    "/{collection}/thumbnail",
    response_class=Response,
    responses={**_IMAGE, **error_responses(413, 503)},
)
def point_thumbnail(
    collection: str,
    id: IdQuery,
    request: Request,
    size: Annotated[
        int,
        Query(
            description="longer side in pixels, 64 to 512",
            ge=THUMBNAIL_SIZES[0],
            le=THUMBNAIL_SIZES[1],
        ),
    ] = 256,
) -> Response:
    """A JPEG thumbnail of the stored point's image."""
    state: ServiceState = request.app.state.service
    path = _point_path(state, collection, id)
    return thumbnail_response(request, path, size, state.decodes, state.settings.max_pixels)
