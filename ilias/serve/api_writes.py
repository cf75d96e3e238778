"""Writes through the service, off unless it was started with ``--writes``: add an image
(an upload, or a file under one of the collection's dataset folders) and delete points
(one by id, or many by ids or a filter).

Why through the service: Qdrant Edge lets one process own a collection, so while
``ilias serve`` holds an embedded collection no load can change it. An added image is
encoded with the collection's own encoder, resolution and local-descriptor settings by the
very function a load's workers run (``ilias.indexing.encode_records``), so its vector is
the one a load of the same file gives. Encoding runs outside the store lock; the write is
one engine call under it, acknowledged once applied.

The service's limits hold as for a search by upload: the upload limit on the body, the
image read, decoded and encoded in one of the decode slots, and the pixel cap checked from
the header first (against the decode a load does, so the vector stays a load's). Ids,
payloads and filters are checked as the search routes check them (``schemas``,
``filters``): every mistake is a one-line 4xx.

Who may write: everyone who may call the API (the API key, when one is set, guards every
``/api/`` path, these included), and only with the ``X-API-Key`` header or an
``X-Requested-With`` header on the request (``_writable``): a page of another site can send
neither without a CORS preflight this service does not grant, so neither a session cookie
(SameSite=Strict still lets a sibling subdomain's page send it) nor an open service
without a key can be made to write by a page the user merely visits. With writes off every
write answers 403.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Request, UploadFile
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ilias.serve.errors import Forbidden, NotFound, ServiceError, error_responses
from ilias.serve.files import contained_path
from ilias.serve.filters import check_payload, request_filter
from ilias.serve.limits import note_decode
from ilias.serve.schemas import MAX_CLAUSES, MAX_ID_CHARS, NO_NUL, Clause, IdText, clean_text
from ilias.serve.security import API_KEY_HEADER
from ilias.serve.state import ServiceState
from ilias.serve.uploads import check_load_decode, read_limited

# ``router`` (what app.py includes) holds ``/api/writes`` and, once the module is read,
# the collection routes below.
router = APIRouter(tags=["writes"])
collections = APIRouter(
    prefix="/api/collections", responses=error_responses(400, 401, 403, 404, 413, 422)
)
# Payload keys the store and loads write themselves: a caller may not set them.
RESERVED_KEYS = frozenset({"id", "file_stamp", "local_xy", "shard", "selection"})
# The header a page sends with a write when the session cookie authorises it (any value).
WRITE_HEADER = "X-Requested-With"
MAX_DELETE_IDS = 10_000  # ids in one delete request (the JSON body limit bounds it too)
MAX_PAYLOAD_CHARS = 65_536  # the payload form field, as JSON text
PointId = Annotated[
    str,
    Path(description="the point's dataset id", min_length=1, max_length=MAX_ID_CHARS,
         pattern=NO_NUL),
    AfterValidator(clean_text),
]  # fmt: skip


class AddedImage(BaseModel):
    collection: str
    id: str = Field(description="the dataset id the point is stored and found under")
    points: int = Field(description="points in the collection after the write")


class DeleteRequest(BaseModel):
    """Points to delete: ``ids``, or a filter (``where`` clauses and/or ``filter``)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[IdText] | None = Field(None, max_length=MAX_DELETE_IDS)
    where: list[Clause] = Field(
        default_factory=list, max_length=MAX_CLAUSES, description="clauses as --where takes them"
    )
    filter: dict[str, Any] | None = Field(
        None, description="structured filter, as a search takes it"
    )
    all: bool = Field(False, description="allow a delete that names every point")


class Deleted(BaseModel):
    collection: str
    deleted: int
    points: int = Field(description="points left in the collection")


def _writable(request: Request, collection: str) -> ServiceState:
    """The state, if this service takes writes, the request is no cross-site forgery and
    the collection exists; else the 403 or 404 that says why."""
    state: ServiceState = request.app.state.service
    if not state.settings.writes:
        raise Forbidden(
            "writes are off in this service; start it with 'ilias serve --writes' to add and "
            "delete points"
        )
    if API_KEY_HEADER not in request.headers and WRITE_HEADER not in request.headers:
        raise Forbidden(
            f"a write needs the {API_KEY_HEADER} header, or the {WRITE_HEADER} header when "
            "the session cookie authorises it (the page sends it; a page of another site "
            "cannot)"
        )
    state.check_collection(collection)
    return state


class WritesState(BaseModel):
    writes: bool


@router.get("/api/writes", response_model=WritesState)
def writes_state(request: Request) -> WritesState:
    """Whether this service takes writes (the page shows its add/delete panel then)."""
    return WritesState(writes=request.app.state.service.settings.writes)


@collections.post(
    "/{collection}/images",
    response_model=AddedImage,
    status_code=201,
    responses=error_responses(503),
)
def add_image(
    collection: str,
    request: Request,
    # Not Optional in the annotation: the schema then says "a file" (a client's generator
    # sends a file part), and a request without one gives None, as with path.
    image: UploadFile = File(None, description="the image (JPEG, PNG, ...); or give path"),  # noqa: B008
    path: Annotated[
        IdText | None,
        Form(description="or: a file inside one of the collection's dataset folders"),
    ] = None,
    id: Annotated[
        IdText | None,
        Form(description="dataset id (default: <folder>/<relative path>, as a load names it)"),
    ] = None,
    payload: Annotated[
        str, Form(description="payload to store, a JSON object", max_length=MAX_PAYLOAD_CHARS)
    ] = "{}",
) -> AddedImage:
    """Add (or replace) one image, encoded exactly as a load would encode it. The image is
    read, decoded and encoded in one of the service's decode slots (503 with Retry-After
    when they and their queue are full), within the service's pixel cap."""
    from ilias.indexing import collection_options, encode_records
    from ilias.loader import Record

    state = _writable(request, collection)
    extra = _payload(payload)
    if (image is None) == (path is None):
        raise ServiceError("send an image (upload) or a path under a dataset folder, not both")
    options = state.engine(lambda: collection_options(state.store, collection))
    draft_to = options.resolution if options.draft else None
    cap = state.settings.max_pixels
    if image is not None:
        if not id:
            raise ServiceError("id: name the uploaded image (the dataset id it is found under)")
        image.file.seek(0)  # from the header, before the upload waits for a slot
        check_load_decode("uploaded image", image.file, cap, draft_to)
        image.file.seek(0)
        name = (image.filename or "")[:200].encode("utf-8", "backslashreplace").decode("utf-8")
        base: dict[str, Any] = {"role": "image", "uploaded": name or True}
    else:
        assert path is not None
        roots = state.image_roots(collection)
        file = contained_path(path, roots, f"path {path!r}")
        id = id or _load_id(file, roots)
        check_load_decode(f"image {path!r}", file, cap, draft_to)
        base = {"path": str(file), "role": "image"}
    if not id.strip() or id != id.strip():
        raise ServiceError("id: give a non-empty dataset id without surrounding spaces")
    with state.decodes.slot():
        if image is not None:
            source: FilePath | bytes = read_limited(image, state.settings.max_upload_bytes)
            pixels = check_load_decode("uploaded image", source, cap, draft_to)
        else:
            source = file
            pixels = check_load_decode(f"image {path!r}", file, cap, draft_to)  # as read now
        part = encode_records([Record(id, source, {**base, **extra})], options)
        note_decode(pixels)
        del source
    if part.failures:
        raise ServiceError(f"cannot add {id!r}: {part.failures[0].reason}")
    store = state.store
    state.engine(
        lambda: store.upsert(collection, part.ids, part.vectors, part.payloads, local=part.local)
    )
    state.forget(collection)
    points = state.engine(lambda: store.count(collection))
    return AddedImage(collection=collection, id=id, points=points)


@collections.delete("/{collection}/points/{point:path}", response_model=Deleted)
def delete_point(collection: str, point: PointId, request: Request) -> Deleted:
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
    except RecursionError:
        raise ServiceError("payload: nested too deeply; send a flat JSON object") from None
    if not isinstance(value, dict):
        raise ServiceError('payload: send a JSON object ({"key": value, ...})')
    reserved = sorted(RESERVED_KEYS & set(value))
    if reserved:
        raise ServiceError(f"payload: {', '.join(reserved)} is written by ilias; leave it out")
    return check_payload(value)


def _load_id(path: FilePath, roots: list[str]) -> str:
    """The id ``ilias load`` gives a file of an image folder: ``<folder>/<relative path>``."""
    for root in roots:
        base = FilePath(root).resolve()
        if path.is_relative_to(base):
            return path.relative_to(base.parent).as_posix()
    return path.as_posix()


router.include_router(collections)  # last: it copies the routes defined above
