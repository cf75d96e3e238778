"""Region search: a query cut to the box the user drew (``bbox``), an upload or a stored
point's own image, before it is encoded; the crop is the CLI's ``--bbox`` crop
(``crop_to_box``: clipped to the image, refused when no pixel is inside)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from ilias.loader.images import DecodeFailure, crop_to_box
from ilias.serve.errors import ServiceError
from ilias.serve.files import contained_path
from ilias.serve.schemas import SearchRequest
from ilias.serve.state import ServiceState
from ilias.serve.uploads import decode_bounded


def point_file(state: ServiceState, collection: str, dataset_id: str) -> Path:
    """The stored point's image file, only inside the collection's dataset folders (404
    for an id that is not a point, or whose file is elsewhere)."""
    raw = state.payload(collection, dataset_id).get("path")
    what = f"{dataset_id!r} in {collection!r}"
    return contained_path(str(raw) if raw else dataset_id, state.image_roots(collection), what)


def stored_picture(state: ServiceState, collection: str, dataset_id: str) -> Image.Image:
    """The stored point's image, decoded within the service's pixel cap in a decode slot."""
    path = point_file(state, collection, dataset_id)
    with state.decodes.slot():
        return decode_bounded("stored image", path, state.settings.max_pixels)


def crop(picture: Image.Image, box: Sequence[int]) -> Image.Image:
    """``picture`` cut to ``box`` ([x, y, w, h]) as the CLI's --bbox cuts it, or a 400."""
    cropped = crop_to_box("bbox", picture.convert("RGB"), box)
    if isinstance(cropped, DecodeFailure):
        raise ServiceError(f"bbox: the {cropped.reason}; draw the box on the image")
    return cropped


def region_query(
    state: ServiceState, collection: str, request: SearchRequest, image: Image.Image | None
) -> tuple[Image.Image | None, SearchRequest, str | None]:
    """(picture, request, description) for ``run_search``: with a ``bbox``, the region of
    the upload or of the stored id's image, searched as an image (the id is dropped: its
    stored vector is the whole image's); without one, everything as given."""
    box = request.bbox
    if box is None:
        return image, request, None
    if image is not None and request.id is not None:
        raise ServiceError("give an uploaded image or a stored id, not both")
    if image is None and request.id is None:
        raise ServiceError("bbox: give the image it cuts (an upload or a stored id)")
    where = f"[{', '.join(map(str, box))}]"
    if request.id is not None:
        image = stored_picture(state, collection, request.id)
        described = f"id {request.id} region {where}"
    else:
        described = f"region {where}"
    assert image is not None
    if request.text:
        described += f" + text {request.text!r}"
    return crop(image, box), request.model_copy(update={"id": None}), described
