"""Writes through the service, off unless it was started with ``--writes``: add an image
(an upload, or a file under one of the collection's dataset folders) and delete points
(one by id, or many by ids or a filter).

Why through the service: Qdrant Edge lets one process own a collection, so while
``ilias serve`` holds an embedded collection no load can change it. An added image is
encoded with the collection's own encoder, resolution and local-descriptor settings by the
very function a load's workers run (``ilias.indexing.encode_records``), so its vector is
the one a load of the same file gives. Encoding runs outside the store lock; the write is
one engine call under it, acknowledged once applied.

Who may write: everyone who may call the API (the API key, when one is set, guards every
``/api/`` path, these included); with writes off every write answers 403.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field

from ilias.serve.errors import NotFound, ServiceError, Unprocessable
from ilias.serve.files import contained_path
from ilias.serve.filters import request_filter
from ilias.serve.state import ServiceState
from ilias.serve.uploads import read_limited

# ``router`` (what app.py includes) holds ``/api/writes`` and, once the module is read,
# the collection routes below.
router = APIRouter(tags=["writes"])
collections = APIRouter(prefix="/api/collections", tags=["writes"])
# Payload keys the store and loads write themselves: a caller may not set them.
RESERVED_KEYS = frozenset({"id", "file_stamp", "local_xy", "shard", "selection"})


class Forbidden(ServiceError):
    status_code = 403


class AddedImage(BaseModel):
    collection: str
    id: str = Field(description="the dataset id the point is stored and found under")
    points: int = Field(description="points in the collection after the write")


class DeleteRequest(BaseModel):
    """Points to delete: ``ids``, or a filter (``where`` clauses and/or ``filter``)."""

    ids: list[str] | None = None
    where: list[str] = Field(default_factory=list)
    filter: dict[str, Any] | None = None
    all: bool = Field(False, description="allow a delete that names every point")


class Deleted(BaseModel):
    collection: str
    deleted: int
    points: int = Field(description="points left in the collection")


def _writable(request: Request, collection: str) -> ServiceState:
    state: ServiceState = request.app.state.service
    if not state.settings.writes:
        raise Forbidden(
            "writes are off in this service; start it with 'ilias serve --writes' to add and "
            "delete points"
        )
    state.check_collection(collection)
    return state


class WritesState(BaseModel):
    writes: bool


@router.get("/api/writes", response_model=WritesState)
def writes_state(request: Request) -> WritesState:
    """Whether this service takes writes (the page shows its add/delete panel then)."""
    return WritesState(writes=request.app.state.service.settings.writes)


@collections.post("/{collection}/images", response_model=AddedImage, status_code=201)
def add_image(
    collection: str,
    request: Request,
    image: Annotated[UploadFile | None, File(description="the image (JPEG, PNG, ...)")] = None,
    path: Annotated[
        str | None, Form(description="or: a file inside one of the collection's dataset folders")
    ] = None,
    id: Annotated[
        str | None,
        Form(description="dataset id (default: <folder>/<relative path>, as a load names it)"),
    ] = None,
    payload: Annotated[str, Form(description="payload to store, a JSON object")] = "{}",
) -> AddedImage:
    """Add (or replace) one image, encoded exactly as a load would encode it."""
    from ilias.indexing import collection_options, encode_records
    from ilias.loader import Record

    state = _writable(request, collection)
    extra = _payload(payload)
    source: Path | bytes
    if (image is None) == (path is None):
        raise ServiceError("send an image (upload) or a path under a dataset folder, not both")
    if image is not None:
        source = read_limited(image, state.settings.max_upload_bytes)
        if not id:
            raise ServiceError("id: name the uploaded image (the dataset id it is found under)")
        base = {"role": "image", "uploaded": image.filename or True}
    else:
        assert path is not None
        roots = state.image_roots(collection)
        source = contained_path(path, roots, f"path {path!r}")
        id = id or _load_id(source, roots)
        base = {"path": str(source), "role": "image"}
    if not id.strip() or id != id.strip():
        raise ServiceError("id: give a non-empty dataset id without surrounding spaces")
    options = state.engine(lambda: collection_options(state.store, collection))
    part = encode_records([Record(id, source, {**base, **extra})], options)
    if part.failures:
        raise Unprocessable(f"cannot add {id!r}: {part.failures[0].reason}")
    store = state.store
    state.engine(
        lambda: store.upsert(collection, part.ids, part.vectors, part.payloads, local=part.local)
    )
    state.forget(collection)
    points = state.engine(lambda: store.count(collection))
    return AddedImage(collection=collection, id=id, points=points)


@collections.delete("/{collection}/points/{point:path}", response_model=Deleted)
def delete_point(collection: str, point: str, request: Request) -> Deleted:
    """Delete one point by its dataset id (404 if it is not stored)."""
    state = _writable(request, collection)
    store = state.store
    deleted = state.engine(lambda: store.delete(collection, ids=[point]))
    if not deleted:
        raise NotFound(f"no point with id {point!r} in {collection!r}")
    state.forget(collection)
    return Deleted(collection=collection, deleted=deleted,
                   points=state.engine(lambda: store.count(collection)))  # fmt: skip


@collections.post("/{collection}/points/delete", response_model=Deleted)
def delete_points(collection: str, body: DeleteRequest, request: Request) -> Deleted:
    """Delete points by ids or by a filter; a filter that matches nothing, or a delete of
    every point without ``all``, is refused (400), as ``ilias delete`` refuses them."""
    from ilias.indexing import plan_delete

    state = _writable(request, collection)
    search_filter = request_filter(body.where, body.filter)
    if (body.ids is not None) == bool(search_filter):
        raise ServiceError("give ids or a filter (where / filter), one of the two")
    store = state.store

    def delete() -> int:
        plan = plan_delete(
            store, collection, ids=body.ids, filter=None if body.ids is not None else search_filter,
            allow_all=body.all,
        )  # fmt: skip
        return plan.apply(store)

    deleted = state.engine(delete)  # planned and applied under one lock: nothing in between
    state.forget(collection)
    return Deleted(collection=collection, deleted=deleted,
                   points=state.engine(lambda: store.count(collection)))  # fmt: skip


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as error:
        raise ServiceError(f"payload: not JSON ({error.msg}); send a JSON object") from None
    if not isinstance(value, dict):
        raise ServiceError('payload: send a JSON object ({"key": value, ...})')
    reserved = sorted(RESERVED_KEYS & set(value))
    if reserved:
        raise ServiceError(f"payload: {', '.join(reserved)} is written by ilias; leave it out")
    return value


def _load_id(path: Path, roots: list[str]) -> str:
    """The id ``ilias load`` gives a file of an image folder: ``<folder>/<relative path>``."""
    for root in roots:
        base = Path(root).resolve()
        if path.is_relative_to(base):
            return path.relative_to(base.parent).as_posix()
    return path.as_posix()


router.include_router(collections)  # last: it copies the routes defined above
