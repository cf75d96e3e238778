"""Changing an existing collection point by point: deleting points and adding images.

A bulk load (``load.py``) adds what a source holds; this module does the rest of a
collection's life between loads. ``plan_delete`` says what a delete would remove (and
refuses the two mistakes a filter makes: matching nothing, a typo; matching everything, a
drop in disguise) so that a caller can ask before ``Store.delete`` does it;
``delete_points`` is both in one call. ``add_images`` encodes images with the collection's
own encoder, resolution and local-descriptor settings through the very function a load's
workers run (``encode_partition``), so a point added one at a time (through the service)
gets the vector a load of the same file would give it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ilias.errors import IliasError, StoreError
from ilias.indexing.store import Store
from ilias.loader import FILE_STAMP, DecodeFailure, Record, file_stamp
from ilias.types import Filter

if TYPE_CHECKING:
    from ilias.indexing.extract import ExtractedPartition, ExtractionOptions


@dataclass(frozen=True)
class DeletePlan:
    """What a delete will remove: ``matched`` of the ``total`` points of ``collection``.

    ``ids``: the stored ids to delete (a delete by id); ``missing``: the ids asked for
    that are not stored; ``filter``: the payload filter (a delete by filter).
    """

    collection: str
    matched: int
    total: int
    ids: list[str] | None = None
    missing: list[str] = field(default_factory=list)
    filter: Filter | None = None

    def apply(self, store: Store) -> int:
        """Delete what the plan names; how many points went."""
        if self.ids is not None:
            return store.delete(self.collection, ids=self.ids)
        return store.delete(self.collection, filter=self.filter)


def read_id_file(path: Path | str) -> list[str]:
    """Dataset ids from a text file, one a line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise IliasError(f"--from {path}: cannot read it ({error}); give a text file of ids, "
                         "one a line") from error  # fmt: skip
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def plan_delete(
    store: Store,
    collection: str,
    *,
    ids: Iterable[str] | None = None,
    filter: Filter | None = None,
    allow_all: bool = False,
) -> DeletePlan:
    """Count what deleting ``ids`` (or what ``filter`` matches) would remove, or refuse.

    Refused: neither or both; ids none of which is stored; a filter that matches no point
    (a misspelt value deletes nothing and says so); a filter or list that names every point
    of the collection, unless ``allow_all`` (``ilias drop`` removes a collection).
    """
    if (ids is None) == (filter is None):
        raise IliasError("delete: give ids (arguments or --from FILE) or --where, not both")
    total = store.count(collection)
    if ids is not None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            raise IliasError("delete: no ids given (arguments, or a --from file with ids)")
        present = store.existing_ids(collection, wanted)
        missing = [i for i in wanted if i not in present]
        if not present:
            shown = ", ".join(repr(i) for i in missing[:3])
            raise IliasError(
                f"none of the {len(wanted)} ids is in {collection!r} (e.g. {shown}); ids are "
                "dataset ids as search results show them"
            )
        plan = DeletePlan(collection, len(present), total, [i for i in wanted if i in present],
                          missing)  # fmt: skip
    else:
        if not filter:
            raise IliasError(f"delete: an empty --where names no points; 'ilias drop "
                             f"{collection}' removes the whole collection")  # fmt: skip
        matched = store.count(collection, filter)
        if not matched:
            raise IliasError(f"--where matches no point of {collection!r}; nothing to delete "
                             "(check the field and the value)")  # fmt: skip
        plan = DeletePlan(collection, matched, total, filter=filter)
    if plan.matched >= total and not allow_all:
        raise IliasError(
            f"this would delete every point of {collection!r} ({total}); pass --all to do so, "
            f"or 'ilias drop {collection}' to remove the collection"
        )
    return plan


def delete_points(
    store: Store,
    collection: str,
    *,
    ids: Iterable[str] | None = None,
    filter: Filter | None = None,
    allow_all: bool = False,
) -> int:
    """``plan_delete`` then the delete, without asking: how many points went."""
    plan = plan_delete(store, collection, ids=ids, filter=filter, allow_all=allow_all)
    return plan.apply(store)


@dataclass
class AddReport:
    """What ``add_images`` stored: the ids written and the images that could not be read."""

    ids: list[str]
    failures: list[DecodeFailure]


def collection_options(
    store: Store, collection: str, *, device: str = "auto", precision: str = "auto"
) -> ExtractionOptions:
    """How the images of ``collection`` were extracted: its encoder, resolution and local
    descriptor settings, as a load records them in the collection's metadata."""
    from ilias.indexing.extract import ExtractionOptions
    from ilias.indexing.local_features import LocalConfig

    if not store.collection_exists(collection):
        raise StoreError(f"no collection {collection!r} to add to; load it first (ilias load)")
    metadata = store.collection_config(collection).metadata
    encoder, resolution = metadata.get("encoder"), metadata.get("resolution")
    if not encoder or not resolution:
        raise StoreError(
            f"collection {collection!r} records no encoder and resolution (it was not made by "
            "an image load); add images with 'ilias load' into a collection made by one"
        )
    local = metadata.get("local")
    return ExtractionOptions(
        encoder=str(encoder),
        resolution=int(resolution),
        scheduler="sync",
        device=device,
        precision=precision,
        local=LocalConfig(**local) if local else None,
    )


def encode_records(records: Sequence[Record], options: ExtractionOptions) -> ExtractedPartition:
    """Encode in this process exactly as a load's worker does (``encode_partition``: the
    same decoding, draft included, resolution, preprocessing, batching by shape and local
    descriptors); each point gets the file stamp a load writes, so a later sync sees an
    added file as unchanged."""
    from ilias.indexing.extract import encode_partition

    return encode_partition([_with_stamp(r) for r in records], options, _torch_threads())


def add_images(
    store: Store,
    collection: str,
    records: Sequence[Record],
    *,
    device: str = "auto",
    precision: str = "auto",
) -> AddReport:
    """Encode ``records`` (sources: paths or bytes) with the collection's own encoder and
    store them: the vectors a load of the same files gives. An id already stored is
    overwritten (a replaced image)."""
    options = collection_options(store, collection, device=device, precision=precision)
    part = encode_records(records, options)
    if part.ids:
        store.upsert(collection, part.ids, part.vectors, part.payloads, local=part.local)
    return AddReport(ids=list(part.ids), failures=list(part.failures))


def _with_stamp(record: Record) -> Record:
    """The file stamp a load writes (a later sync then sees the file as unchanged)."""
    stamp = file_stamp(record.source)
    payload: dict[str, Any] = dict(record.payload)
    if stamp is not None:
        payload[FILE_STAMP] = stamp
    return Record(record.id, record.source, payload)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
