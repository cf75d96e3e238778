"""Search: by an uploaded image, by a stored point's id ("more like this"), by text, or
hybrid; with k, filters, search parameters and re-ranking steps.

The stages are the ``Retriever``'s own (``encode_images``, ``search_vectors``,
``hybrid_vectors``, ``rerank_query``), called one by one so that each can be timed and so
that encoding runs outside the store lock; the hits are those of ``Retriever.search`` for
the same query (tests/test_serve.py checks it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from PIL import Image

from ilias.serve.capabilities import check_text
from ilias.serve.errors import NotFound, ServiceError, error_responses
from ilias.serve.filters import request_filter
from ilias.serve.regions import region_query
from ilias.serve.schemas import HitModel, SearchRequest, SearchResponse
from ilias.serve.state import ServiceState
from ilias.serve.uploads import check_upload, decode_upload, form_model, read_limited
from ilias.types import Hit, SearchParams

router = APIRouter(
    prefix="/api/collections", tags=["search"], responses=error_responses(400, 401, 404, 413, 422)
)


def image_urls(collection: str, dataset_id: str) -> tuple[str, str]:
    """(thumbnail URL, image URL) of a stored point."""
    base = f"/api/collections/{quote(collection, safe='')}"
    query = f"id={quote(dataset_id, safe='')}"
    return f"{base}/thumbnail?{query}", f"{base}/image?{query}"


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    began = time.perf_counter()
    yield
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - began


def run_search(
    state: ServiceState,
    collection: str,
    request: SearchRequest,
    image: Image.Image | None = None,
    described: str | None = None,
) -> SearchResponse:
    """One search as the request asks; every stage is timed."""
    from ilias.query import rerankers_for_collection
    from ilias.rerank import RerankQuery

    timings: dict[str, float] = {}
    began = time.perf_counter()
    retriever = state.retriever(collection)
    image, request, region = region_query(state, collection, request, image)
    described = f"{described} {region}" if described and region else region or described
    if image is not None and request.id is not None:
        raise ServiceError("give an uploaded image or a stored id, not both")
    if image is None and request.id is None and not request.text:
        raise ServiceError(
            "give an image (upload), a stored point's id, a text, or an image and a text"
        )
    has_image = image is not None or request.id is not None
    if request.rerank and (not has_image or request.text):
        raise ServiceError("re-ranking applies to image searches (an image or id, and no text)")
    search_filter = request_filter(request.where, request.filter)
    params = SearchParams(**request.params.model_dump())
    steps = state.engine(lambda: rerankers_for_collection(state.store, collection, request.rerank))
    needs_local = any(step.needs_local for step in steps)
    engine: Callable[[Callable[[], Any]], Any] = state.engine

    vector: np.ndarray | None = None
    query = RerankQuery(np.zeros(0, np.float32))
    if image is not None:
        with _timed(timings, "encode"):
            if needs_local:
                vectors, local = retriever.encode_with_local([image])
                query = RerankQuery(vectors[0], local[0])
            else:
                query = RerankQuery(retriever.encode_images([image])[0])
        vector = query.vector
    elif request.id is not None:
        dataset_id = request.id
        with _timed(timings, "lookup"):
            stored = engine(lambda: retriever.view.retrieve_vectors([dataset_id]))
            if dataset_id not in stored:
                raise NotFound(f"no point with id {dataset_id!r} in {collection!r}")
            local_features = (
                engine(lambda: retriever.view.retrieve_local([dataset_id])).get(dataset_id)
                if needs_local
                else None
            )
        vector = stored[dataset_id]
        query = RerankQuery(vector, local_features)
    text_vector = None
    if request.text:
        text = request.text
        check_text(retriever, collection)
        with _timed(timings, "encode_text"):
            text_vector = retriever.encoder.encode_texts([text])

    k = request.k
    hits: list[Hit]
    if vector is not None and text_vector is not None:
        image_vector = vector[None]
        with _timed(timings, "search"):
            hits = engine(
                lambda: retriever.hybrid_vectors(
                    image_vector, text_vector, request.weight, k, search_filter, params
                )
            )[0]
    elif text_vector is not None:
        with _timed(timings, "search"):
            hits = engine(lambda: retriever.search_vectors(text_vector, k, search_filter, params))[
                0
            ]
    elif steps:
        hits = engine(
            lambda: retriever.rerank_query(query, steps, k, search_filter, params, timings)
        )
    else:
        assert vector is not None
        single = vector[None]
        with _timed(timings, "search"):
            hits = engine(lambda: retriever.search_vectors(single, k, search_filter, params))[0]
    timings["total"] = time.perf_counter() - began

    models = []
    for rank, hit in enumerate(hits, start=1):
        thumbnail, full = image_urls(collection, hit.id)
        models.append(
            HitModel(
                rank=rank,
                id=hit.id,
                score=hit.score,
                payload=hit.payload,
                thumbnail=thumbnail,
                image=full,
            )
        )
    if described is None:
        parts = [
            f"id {request.id}" if request.id else "",
            f"text {request.text!r}" if request.text else "",
        ]
        described = " + ".join(p for p in parts if p)
    return SearchResponse(
        collection=collection,
        query=described,
        k=k,
        hits=models,
        timings_ms={stage: round(1000 * t, 3) for stage, t in timings.items()},
    )


@router.post("/{collection}/search", response_model=SearchResponse)
def search(collection: str, body: SearchRequest, request: Request) -> SearchResponse:
    """Search by a stored point's id (its stored vector), by text, or both (hybrid)."""
    return run_search(request.app.state.service, collection, body)


@router.post(
    "/{collection}/search/image", response_model=SearchResponse, responses=error_responses(503)
)
def search_image(
    collection: str,
    request: Request,
    image: Annotated[UploadFile, File(description="the query image (JPEG, PNG, ...)")],
    query: Annotated[
        str, Form(description="a SearchRequest as JSON (k, where, filter, params, text, rerank)")
    ] = "{}",
) -> SearchResponse:
    """Search by an uploaded image (with a text too: hybrid). The image is read, decoded
    and encoded in one of the service's decode slots (503 with Retry-After when they and
    their queue are full)."""
    state: ServiceState = request.app.state.service
    body = form_model(SearchRequest, query)
    state.check_collection(collection)
    check_upload(image, state.settings.max_pixels)
    name = (image.filename or "")[:200].encode("utf-8", "backslashreplace").decode("utf-8")
    described = f"upload {name}".strip()
    with state.decodes.slot():
        data = read_limited(image, state.settings.max_upload_bytes)
        started = time.perf_counter()
        picture = decode_upload(data, state.settings.max_pixels)
        del data  # the decoded picture is all the search needs
        decoded = time.perf_counter() - started
        response = run_search(state, collection, body, picture, described)
    response.timings_ms = {"decode": round(1000 * decoded, 3), **response.timings_ms}
    return response
