"""Why a result matched: the query's and the result's patches matched one to one (mutual
nearest neighbours of their local descriptors) and the RANSAC inliers among them, computed
exactly as the ``sp`` re-ranker computes them for that pair (``ilias.rerank.spatial``, the
``SpatialRerank`` defaults), so the count the page shows is the count ``sp`` added to the
score. The query is what the search used: an upload, or a stored point's descriptors,
cut to the same ``bbox``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from ilias.serve.api_search import image_urls
from ilias.serve.capabilities import local_reason
from ilias.serve.errors import NotFound, ServiceError, error_responses
from ilias.serve.regions import crop, point_file, stored_picture
from ilias.serve.schemas import Box, IdText
from ilias.serve.state import ServiceState
from ilias.serve.uploads import check_upload, decode_upload, form_model, read_limited

router = APIRouter(
    prefix="/api/collections", tags=["match"], responses=error_responses(400, 401, 404, 422)
)


class MatchRequest(BaseModel):
    """A result (``id``) against the query: a stored point (``query_id``) or, at
    ``.../match/image``, the uploaded image; ``bbox``: the region the search used."""

    model_config = ConfigDict(extra="forbid")

    id: IdText = Field(description="the result's dataset id")
    query_id: IdText | None = Field(default=None, description="the query's dataset id")
    bbox: Box | None = None


class Correspondence(BaseModel):
    query: tuple[float, float] = Field(description="patch centre in the query image's pixels")
    result: tuple[float, float] = Field(description="patch centre in the result's pixels")
    inlier: bool = Field(description="agrees with the transform spatial verification fitted")


class MatchResponse(BaseModel):
    collection: str
    id: str
    image: str
    thumbnail: str
    size: tuple[int, int] = Field(description="the result image's width and height")
    boxes: list[list[float]] = Field(description="the result payload's boxes, [x, y, w, h]")
    payload: dict[str, Any]
    query_size: tuple[int, int] | None = Field(description="the whole query image's size")
    local: bool
    reason: str | None = Field(description="why there are no correspondences to show")
    matches: list[Correspondence]
    tentative: int = Field(description="mutual nearest neighbour pairs")
    inliers: int = Field(description="of them, RANSAC inliers: what sp adds to the score")


def _size(path: Any) -> tuple[int, int]:
    try:
        with Image.open(path) as opened:  # the header only
            return opened.size
    except Exception:  # not a picture, a bomb: the file, not the request, is at fault
        raise ServiceError(f"cannot read the image {Path(path).name!r}") from None


def _boxes(payload: dict[str, Any]) -> list[list[float]]:
    boxes = payload.get("boxes") or ([payload["bbox"]] if payload.get("bbox") else [])
    if not isinstance(boxes, list):
        return []
    out = []
    for box in boxes:
        if (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        ):
            out.append([float(v) for v in box])
    return out


def match(
    state: ServiceState, collection: str, body: MatchRequest, upload: Image.Image | None
) -> MatchResponse:
    from ilias.rerank import SpatialRerank
    from ilias.rerank.spatial import mutual_nearest_neighbours, ransac_inliers

    retriever = state.retriever(collection)
    payload = state.payload(collection, body.id)
    result_path = point_file(state, collection, body.id)
    thumbnail, image = image_urls(collection, body.id)
    answer: dict[str, Any] = dict(
        collection=collection, id=body.id, image=image, thumbnail=thumbnail,
        size=_size(result_path), boxes=_boxes(payload), payload=payload,
        query_size=None, matches=[], tentative=0, inliers=0,
    )  # fmt: skip
    if upload is not None:
        answer["query_size"] = upload.size
    elif body.query_id is not None:
        answer["query_size"] = _size(point_file(state, collection, body.query_id))
    reason = local_reason(retriever, collection)
    if reason is not None:
        return MatchResponse(**answer, local=False, reason=reason)
    stored = state.engine(lambda: retriever.view.retrieve_local([body.id]))
    if body.id not in stored:
        return MatchResponse(**answer, local=False, reason=f"{body.id!r} has no local descriptors")
    offset = np.zeros(2)
    if upload is None and body.query_id is not None and body.bbox is None:
        query_id = body.query_id
        found = state.engine(lambda: retriever.view.retrieve_local([query_id]))
        if query_id not in found:
            raise NotFound(f"no point with id {query_id!r} in {collection!r}")
        query = found[query_id]
    else:
        picture = upload
        if picture is None:
            if body.query_id is None:
                raise ServiceError("give the query: query_id, or upload it to .../match/image")
            picture = stored_picture(state, collection, body.query_id)
        if body.bbox is not None:
            cropped = crop(picture, body.bbox)
            offset = np.array(body.bbox[:2], dtype=np.float64)
            picture = cropped
        query = retriever.encode_with_local([picture])[1][0]
    candidate = stored[body.id]
    step = SpatialRerank()  # the sp re-ranker's model, threshold and seed
    pairs = mutual_nearest_neighbours(query.descriptors, candidate.descriptors)
    inliers, _ = ransac_inliers(
        query.xy[pairs[:, 0]], candidate.xy[pairs[:, 1]],
        model=step.model, threshold=step.threshold, seed=step.seed,
    )  # fmt: skip
    answer["matches"] = [
        Correspondence(
            query=tuple(query.xy[i] + offset), result=tuple(candidate.xy[j]), inlier=bool(ok)
        )
        for (i, j), ok in zip(pairs.tolist(), inliers.tolist(), strict=True)
    ]
    answer["tentative"], answer["inliers"] = len(pairs), int(inliers.sum())
    return MatchResponse(**answer, local=True, reason=None)


@router.post("/{collection}/match", response_model=MatchResponse)
def match_stored(collection: str, body: MatchRequest, request: Request) -> MatchResponse:
    """A result against a stored query point: the matched patches and the inliers."""
    return match(request.app.state.service, collection, body, None)


@router.post(
    "/{collection}/match/image", response_model=MatchResponse, responses=error_responses(413, 503)
)
def match_upload(
    collection: str,
    request: Request,
    image: Annotated[UploadFile, File(description="the query image the search used")],
    query: Annotated[str, Form(description="a MatchRequest as JSON (id, bbox)")] = "{}",
) -> MatchResponse:
    """A result against an uploaded query image: the matched patches and the inliers."""
    state: ServiceState = request.app.state.service
    body = form_model(MatchRequest, query)
    state.check_collection(collection)
    check_upload(image, state.settings.max_pixels)
    with state.decodes.slot():
        picture = decode_upload(read_limited(image, state.settings.max_upload_bytes),
                                state.settings.max_pixels)  # fmt: skip
        return match(state, collection, body, picture)
