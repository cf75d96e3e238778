"""What the page asks besides searching: what a collection can do (text, local
descriptors: the reasons it cannot), stored ids completed from a prefix, and the
collection browsed a page of thumbnails at a time.

Ids are read once per collection and point count (a scroll of the ``id`` payload, the
keyword the payload index holds) and kept sorted, so a prefix is two binary searches; a
write changes the count and the next call reads them again. Memory: about 100 bytes an
id (100 MB for a million points), so the cache holds one collection at a time.
"""

from __future__ import annotations

import bisect
import threading
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import AfterValidator, BaseModel, Field

from ilias.loader.datasets import read_bbox
from ilias.serve import api_runs
from ilias.serve.api_search import image_urls
from ilias.serve.capabilities import local_reason, text_reason
from ilias.serve.errors import error_responses
from ilias.serve.schemas import MAX_ID_CHARS, NO_NUL, clean_text
from ilias.serve.state import ServiceState

router = APIRouter(
    prefix="/api/collections", tags=["page"], responses=error_responses(400, 401, 404, 422)
)
runs_router = APIRouter(prefix="/api/runs", tags=["page"], responses=error_responses(401, 404, 422))
PrefixQuery = Annotated[
    str,
    Query(description="the start of a dataset id", max_length=MAX_ID_CHARS, pattern=NO_NUL),
    AfterValidator(clean_text),
]


class Capabilities(BaseModel):
    collection: str
    encoder: str | None
    text: bool = Field(description="text queries work (the encoder has a text tower)")
    text_reason: str | None = Field(description="why not, in the user's words")
    local: bool = Field(description="local descriptors are stored: cs, sp, the match view")
    local_reason: str | None
    rerankers: list[str] = Field(description="the re-rankers this collection can run")


class IdsPage(BaseModel):
    collection: str
    prefix: str
    total: int = Field(description="ids that start with the prefix")
    offset: int
    ids: list[str]
    thumbnails: list[str]


class _IdCache:
    """The sorted ids of one collection, read again when its point count changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._ids: list[str] = []

    def ids(self, state: ServiceState, collection: str) -> list[str]:
        store = state.store
        key = (collection, state.engine(lambda: store.count(collection)))
        with self._lock:
            if self._key != key:
                ids: list[str] = []
                for page in state.engine(lambda: list(store.scan_payloads(collection, ["id"]))):
                    ids += [str(p["id"]) for p in page if "id" in p]
                self._ids, self._key = sorted(ids), key
            return self._ids


_CACHE = _IdCache()


@router.get("/{collection}/capabilities", response_model=Capabilities)
def capabilities(collection: str, request: Request) -> Capabilities:
    """Whether text queries, re-ranking with local descriptors and the match view work
    here, and why not. The first call builds the collection's encoder (a few seconds),
    so the page's first search does not wait for it."""
    state: ServiceState = request.app.state.service
    retriever = state.retriever(collection)
    no_text = text_reason(retriever, collection)
    no_local = local_reason(retriever, collection)
    return Capabilities(
        collection=collection,
        encoder=retriever.view.config.metadata.get("encoder"),
        text=no_text is None,
        text_reason=no_text,
        local=no_local is None,
        local_reason=no_local,
        rerankers=["aqe"] + (["cs", "sp"] if no_local is None else []),
    )


@router.get("/{collection}/ids", response_model=IdsPage)
def ids(
    collection: str,
    request: Request,
    prefix: PrefixQuery = "",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> IdsPage:
    """Stored ids that start with ``prefix``, in order, ``limit`` from ``offset``: what the
    page's id box completes from and its browse view pages through."""
    state: ServiceState = request.app.state.service
    state.check_collection(collection)
    stored = _CACHE.ids(state, collection)
    start = bisect.bisect_left(stored, prefix)
    end = bisect.bisect_left(stored, prefix + "\U0010ffff") if prefix else len(stored)
    chosen = stored[start + offset : min(end, start + offset + limit)]
    return IdsPage(
        collection=collection,
        prefix=prefix,
        total=end - start,
        offset=offset,
        ids=chosen,
        thumbnails=[image_urls(collection, i)[0] for i in chosen],
    )


class QueryBox(BaseModel):
    run: str
    query_id: str
    bbox: list[int] | None = Field(description="the query's ground-truth box, [x, y, w, h]")


@runs_router.get("/{run}/query-box", response_model=QueryBox)
def query_box(run: str, request: Request, id: api_runs.QueryId) -> QueryBox:
    """An evaluation query's ground-truth box (its ``_bbox.txt``, the union the benchmark
    crops to): the page offers it as the starting region when the query is searched. The
    query is found exactly as its image is served (a listed query, in a served folder)."""
    served = api_runs.query_image(run, request, id)
    box = None
    if isinstance(served, FileResponse):
        image = Path(served.path)
        box = read_bbox(image.with_name(f"{image.stem}_bbox.txt"))
    return QueryBox(run=run, query_id=id, bbox=box)
