"""Sync: make a collection follow its source (``ilias load --sync``).

A sync is a load, then a removal. The load adds the images that are new and extracts the
changed ones again (a file's size or modification time differs from the stamp stored with
its point), resumable as every load is. Then every point whose source is not in what was
given is deleted: a point loaded from a file whose dataset id the listing no longer holds,
or a point read from a tar shard that is no longer among the shards given.

Why in this order, and why it is safe under a kill -9: the stale points are computed from
the complete listing after the load, and only points whose id (or shard) the listing does
not name are ever deleted, so a crash at any moment never deletes a point that still has
its source; every delete is acknowledged only once applied (the WAL keeps it), and a rerun
recomputes what is left to add and to delete and finishes both.

It never deletes on a partial listing: when a tar shard given fails to read (missing,
truncated, unreadable), or a folder given (the dataset, the distractors) is gone by the
time the load ends, the removal is skipped, and the report says why and how many points
it kept. A listing that would remove every point is refused unless asked for
(``allow_all``): that is what a wrong or unmounted folder looks like.

Shards are the unit of their points: points of a shard that is still given are kept (a
WebDataset shard is written once; a selection list narrows what is loaded, not what
stays).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ilias.errors import StoreError
from ilias.indexing.extract import ExtractionOptions
from ilias.indexing.load import LoadReport, ProgressCallback, Upload, load_collection
from ilias.indexing.store import Store
from ilias.indexing.store.schema import ID_KEY, SHARD_KEY
from ilias.loader import DatasetSource, Record

logger = logging.getLogger(__name__)
_DELETE_BATCH = 1024  # ids per delete call: a cut sync has removed whole batches


@dataclass
class SyncReport:
    """The three counts of a sync, and what kept it from removing anything.

    ``added``: points new in the collection; ``changed``: points extracted again because
    their file changed; ``removed``: points deleted because their source is gone.
    ``kept_stale``: points without a source that were kept because the listing was partial
    (``partial`` says why, one reason a line).
    """

    load: LoadReport
    added: int = 0
    changed: int = 0
    removed: int = 0
    kept_stale: int = 0
    partial: list[str] = field(default_factory=list)


def sync_collection(
    records: Sequence[Record] | DatasetSource,
    store: Store,
    collection: str,
    options: ExtractionOptions,
    *,
    metadata: dict | None = None,
    progress: ProgressCallback | None = None,
    upload: Upload = "auto",
    shard_progress: ProgressCallback | None = None,
    storage: str | None = None,
    index: str | None = None,
    allow_all: bool = False,
) -> SyncReport:
    """Load ``records`` (or a source) into ``collection``, then delete the points whose
    source the listing no longer holds; see the module's docstring for the guarantees.

    The options are those of ``load_collection``. ``allow_all``: remove every point if the
    listing shares none with the collection (refused otherwise: a wrong folder).
    """
    source = records if isinstance(records, DatasetSource) else DatasetSource(list(records), {})
    listed_ids = {r.id for r in source.records}
    listed_shards = {s.name for s in source.tar_shards}
    before = store.count(collection) if store.collection_exists(collection) else 0
    if before and not allow_all:
        _check_overlap(store, collection, listed_ids, listed_shards, before)
    report = load_collection(
        source, store, collection, options, metadata=metadata, progress=progress,
        upload=upload, shard_progress=shard_progress, storage=storage, index=index,
    )  # fmt: skip
    after = store.count(collection)
    sync = SyncReport(load=report, added=max(0, after - before), changed=report.changed)

    stale: list[str] = []
    for page in store.scan_payloads(collection, [ID_KEY, SHARD_KEY]):
        for payload in page:
            dataset_id, shard = payload.get(ID_KEY), payload.get(SHARD_KEY)
            if dataset_id is None:
                continue  # not written by ilias: not ours to remove
            if (shard not in listed_shards) if shard else (dataset_id not in listed_ids):
                stale.append(str(dataset_id))
    sync.partial = _partial_listing(report, source.metadata)
    if not stale:
        return sync
    if sync.partial:
        sync.kept_stale = len(stale)
        logger.warning("%s: %d points without a source kept: %s", collection, len(stale),
                       "; ".join(sync.partial))  # fmt: skip
        return sync
    if len(stale) >= after and not allow_all:
        raise StoreError(
            f"the sync would remove every point of {collection!r} ({after}): none of what was "
            "given could be loaded; nothing was removed (--sync-all empties it anyway)"
        )
    for start in range(0, len(stale), _DELETE_BATCH):
        sync.removed += store.delete(collection, ids=stale[start : start + _DELETE_BATCH])
    logger.info("%s: removed %d points whose source is gone", collection, sync.removed)
    return sync


def _check_overlap(
    store: Store, collection: str, ids: set[str], shards: set[str], stored: int
) -> None:
    """Refuse, before anything is loaded, a listing that shares no point with a collection
    that has some: a wrong folder (or an unmounted one) would replace the collection."""
    if ids and store.existing_ids(collection, list(ids)):
        return
    if any(store.count(collection, {SHARD_KEY: shard}) for shard in shards):
        return
    raise StoreError(
        f"what was given shares no image with {collection!r} ({stored} points): a sync would "
        "load it and remove every point there (a wrong or unmounted folder?); nothing was "
        "done. Pass --sync-all to replace the collection's points anyway"
    )


def _partial_listing(report: LoadReport, metadata: dict) -> list[str]:
    """Why the listing cannot be trusted to name every source: shards that failed to read,
    folders given that are gone now. Empty when it is complete."""
    reasons = [f"shard {name} failed to read ({why})" for name, why in report.shard_errors.items()]
    for key in ("dataset", "distractors", "images"):
        value = str(metadata.get(key) or "")
        if not value or "://" in value or any(ch in value for ch in "{*?["):
            continue  # not given, or a URL / pattern: its shards report their own errors
        if not Path(value).exists():
            reasons.append(f"{key} folder {value} is gone")
    return reasons
