"""What the page asks besides searching: what a collection can do (text, local
descriptors: the reasons it cannot), stored ids completed from a prefix, and the
collection browsed a page of thumbnails at a time.

Ids are read once per collection and point count (a scroll of the ``id`` and ``role``
payload, keywords the payload index holds) and kept sorted, so a prefix is two binary
searches (a role filter then scans that range); a write changes the count and the next
call reads them again. Memory: about 100 bytes an id (100 MB for a million points), so
the cache holds one collection at a time.
"""

from __future__ import annotations

import bisect
import sys
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
    roles: list[str] = Field(description="the roles stored in the collection, to filter by")


class _IdCache:
    """The sorted ids of one collection with each id's role (the indexed ``role`` keyword:
    positive, distractor, ...), read again when its point count changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int] | None = None
        self._ids: list[str] = []
        self._roles: list[str] = []
        self._distinct: list[str] = []

    def ids(self, state: ServiceState, collection: str) -> tuple[list[str], list[str], list[str]]:
        """(sorted ids, their roles, the distinct roles)."""
        store = state.store
        key = (collection, state.engine(lambda: store.count(collection)))
        with self._lock:
            if self._key != key:
                rows: list[tuple[str, str]] = []
                pages = state.engine(lambda: list(store.scan_payloads(collection, ["id", "role"])))
                for page in pages:
                    rows += [
                        (str(p["id"]), sys.intern(str(p.get("role", ""))))
                        for p in page
                        if "id" in p
                    ]
                rows.sort()
                self._ids = [i for i, _ in rows]
                self._roles = [r for _, r in rows]
                self._distinct = sorted(set(self._roles) - {""})
                self._key = key
            return self._ids, self._roles, self._distinct


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
    role: Annotated[
        str, Query(description="only this role (positive, distractor, ...)", max_length=64)
    ] = "",
) -> IdsPage:
    """Stored ids that start with ``prefix`` (and have ``role``), in order, ``limit`` from
    ``offset``: what the page's id box completes from and its browse view pages through."""
    state: ServiceState = request.app.state.service
    state.check_collection(collection)
    stored, roles, distinct = _CACHE.ids(state, collection)
    start = bisect.bisect_left(stored, prefix)
    end = bisect.bisect_left(stored, prefix + "\U0010ffff") if prefix else len(stored)
    if role:
        matching = [i for i in range(start, end) if roles[i] == role]
        total = len(matching)
        chosen = [stored[i] for i in matching[offset : offset + limit]]
    else:
        total = end - start
        chosen = stored[start + offset : min(end, start + offset + limit)]
    return IdsPage(
        collection=collection,
        prefix=prefix,
        total=total,
        offset=offset,
        ids=chosen,
        thumbnails=[image_urls(collection, i)[0] for i in chosen],
        roles=distinct,
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
