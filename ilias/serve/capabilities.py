"""What a collection can answer, said before anyone asks: a text query needs an encoder
with a text tower, the cs and sp re-rankers (and the match view) need stored local
descriptors. The page hides or disables what cannot work and shows these reasons; the
search refuses the same requests with the same words."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ilias.serve.errors import ServiceError

if TYPE_CHECKING:
    from ilias.query import Retriever

RERANKERS_NEEDING_LOCAL = ("cs", "sp")


def text_reason(retriever: Retriever, collection: str) -> str | None:
    """Why ``collection`` cannot be searched by text (None: it can). Builds the encoder
    (once per process): whether it has a text tower is the encoder's to say."""
    encoder = retriever.encoder
    # An encoder that does not say (a caller's own object) may try: encode_texts decides.
    if getattr(encoder, "has_text_tower", True):
        return None
    return (
        f"{collection!r} was made with {encoder.spec}, which reads images only: search by "
        "an image or a stored id, or load a collection with a vision-language encoder "
        "(an open_clip: spec) to search by text"
    )


def local_reason(retriever: Retriever, collection: str) -> str | None:
    """Why ``collection`` has no patch matches to show or re-rank with (None: it has)."""
    if retriever.local_config is not None:
        return None
    return (
        f"{collection!r} stores no local descriptors: load it with --local to re-rank with "
        "cs or sp and to see which patches matched"
    )


def check_text(retriever: Retriever, collection: str) -> None:
    """A 400 in the user's words for a text query the encoder cannot read."""
    reason = text_reason(retriever, collection)
    if reason is not None:
        raise ServiceError(reason)
