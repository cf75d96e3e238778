"""Bulk load: records -> Dask extraction -> validated upserts -> one index build at the end.

A load is resumable by construction: point ids are UUIDv5 of the dataset ids, ids already in
the collection are skipped before any pixel is decoded, and Qdrant's WAL keeps every
acknowledged upsert through a kill -9. Running the same load again therefore finishes an
interrupted one and never duplicates a point.

Who writes: with an embedded store (Edge: one process owns a shard) the driver consumes
finished partitions and upserts them. With a Qdrant server the Dask workers upsert their
own partitions (``upload="auto"``/``"workers"``) and only ids and failures come back.

``load_versioned`` is the zero-downtime reload: load into ``<alias>-v<N>``, then move the
alias in one atomic step, so readers of the alias switch from the old version to the new
one without ever seeing a half-loaded collection.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from ilias import __version__
from ilias.errors import StoreError
from ilias.indexing.extract import ExtractionOptions, WorkerUpload, extract
from ilias.indexing.local_features import LocalConfig
from ilias.indexing.store import CollectionConfig, Store
from ilias.indexing.store.layout import check_storage
from ilias.loader import FILE_STAMP, DecodeFailure, Record, file_stamp

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
Upload = Literal["auto", "driver", "workers"]


@dataclass
class LoadReport:
    """What a load did; ``images_per_s`` counts only images extracted in this run."""

    collection: str
    total: int
    already_present: int = 0
    changed: int = 0  # stored points whose file changed since (size or mtime): re-extracted
    loaded: int = 0
    failures: list[DecodeFailure] = field(default_factory=list)
    extract_seconds: float = 0.0
    index_seconds: float = 0.0
    uploaded_by_workers: int = 0  # points the Dask workers wrote themselves

    @property
    def images_per_s(self) -> float:
        extracted = self.loaded + len(self.failures)
        return extracted / self.extract_seconds if self.extract_seconds else 0.0


def load_collection(
    records: Sequence[Record],
    store: Store,
    collection: str,
    options: ExtractionOptions,
    *,
    metadata: dict | None = None,
    progress: ProgressCallback | None = None,
    upload: Upload = "auto",
    storage: str | None = None,
) -> LoadReport:
    """Extract and store ``records`` into ``collection``, skipping ids already there.

    ``upload``: ``"driver"`` funnels every partition through this process (the only choice
    for Edge); ``"workers"`` has the Dask workers upsert their own partitions (a Qdrant
    server: they must reach it and have ``QDRANT_API_KEY``); ``"auto"`` picks workers
    whenever the store is shared across processes. ``collection`` may be an alias: the
    points go to the collection it points to. ``storage``: the layout of a collection this
    load creates (``ram``, ``disk``, ``compact``, or ``auto`` to pick by the number of
    records; None: the store's default); an existing collection keeps its own.
    """
    check_storage(storage)
    report = LoadReport(collection=collection, total=len(records))
    _check_unique_ids(records)
    records = [_stamped(r) for r in records]
    target = _worker_upload(store, collection, upload)
    existed = store.collection_exists(collection)
    if existed:
        options = _compatible_options(store, collection, options)
        present = _unchanged(store, collection, records, report)
        report.already_present = len(present)
        records = [r for r in records if r.id not in present]
        if present:
            logger.info(
                "%s: %d of %d already stored, resuming", collection, len(present), report.total
            )
    done = report.already_present
    if progress:
        progress(done, report.total)

    def create(dim: int, resolution: int, local_dim: int | None = None) -> None:
        if not store.collection_exists(collection):
            meta = {
                "encoder": options.encoder,
                "resolution": resolution,
                "ilias_version": __version__,
                **(metadata or {}),
            }
            if options.local is not None:
                meta["local"] = options.local.to_dict()
            config = CollectionConfig(
                dim=dim,
                metadata=meta,
                local_dim=local_dim,
                storage=storage,
                expected_points=report.total,  # the size "auto" and segment sizing go by
            )
            store.create_collection(collection, config)

    started = time.perf_counter()
    # Workers can only write into a collection that exists: it is created before the first
    # partition (the dimension comes from one worker's encoder). The driver path creates it
    # at the first partition that has vectors, as before.
    prepare = create if target is not None and not existed else None
    try:
        for part in extract(records, options, upload=target, prepare=prepare):
            report.failures.extend(part.failures)
            if part.uploaded:
                report.uploaded_by_workers += len(part.ids)
            elif part.ids:
                create(part.dim, part.resolution, part.local_dim)
                store.upsert(collection, part.ids, part.vectors, part.payloads, local=part.local)
            report.loaded += len(part.ids)
            done += part.n_records
            if progress:
                progress(done, report.total)
    finally:
        report.extract_seconds = time.perf_counter() - started

    if prepare is not None and report.total and not report.loaded and not report.already_present:
        store.drop(collection)  # created for the workers, then nothing could be decoded
    if store.collection_exists(collection):
        started = time.perf_counter()
        store.finish_load(collection)
        report.index_seconds = time.perf_counter() - started
    elif report.total:
        raise StoreError(
            f"no image of {report.total} could be decoded, so {collection!r} was not created; "
            "see the log for the reasons"
        )
    return report


def _worker_upload(store: Store, collection: str, upload: Upload) -> WorkerUpload | None:
    """Whether the workers write themselves, and where: None means the driver writes."""
    if upload not in ("auto", "driver", "workers"):
        raise StoreError(f"upload={upload!r}: use auto, driver or workers")
    spec = store.worker_spec()
    if upload == "driver" or (upload == "auto" and not store.shared_across_processes):
        return None
    if spec is None:
        if upload == "workers":
            raise StoreError(
                f"{store.location} cannot be written by Dask workers (a Qdrant Edge shard has "
                "one owning process); use --upload driver, or a Qdrant server store "
                "(--store http://host:6333)"
            )
        return None
    return WorkerUpload(spec=spec, collection=collection)


@dataclass
class VersionedLoad:
    """What ``load_versioned`` did: the version loaded and where the alias points now."""

    alias: str
    collection: str  # the version the alias points to after the swap
    previous: str | None  # what it pointed to before (None: the alias is new)
    dropped: list[str]
    report: LoadReport
    resumed: bool = False  # an interrupted version was finished instead of starting anew


def version_name(alias: str, version: int) -> str:
    return f"{alias}-v{version}"


def list_versions(store: Store, alias: str) -> list[tuple[int, str]]:
    """``(N, name)`` of every ``<alias>-v<N>`` collection, oldest first."""
    pattern = re.compile(rf"^{re.escape(alias)}-v(\d+)$")
    found = [
        (int(m.group(1)), name) for name in store.list_collections() if (m := pattern.match(name))
    ]
    return sorted(found)


def load_versioned(
    records: Sequence[Record],
    store: Store,
    alias: str,
    options: ExtractionOptions,
    *,
    metadata: dict | None = None,
    progress: ProgressCallback | None = None,
    upload: Upload = "auto",
    keep: int | None = None,
    storage: str | None = None,
) -> VersionedLoad:
    """Zero-downtime reload: load into a new ``<alias>-v<N>``, then swap ``alias`` to it.

    Searches through ``alias`` keep answering from the current version during the whole
    load and switch in one atomic step at the end. A load that fails leaves the alias where
    it was; running it again resumes the unfinished version (the newest one the alias never
    pointed to) instead of starting another. ``keep``: how many versions to keep, the new
    one included (``2`` keeps one to roll back to with ``store.set_alias``); None keeps all.
    ``storage``: the layout of the new version (see ``load_collection``).
    """
    if keep is not None and keep < 1:
        raise StoreError(f"keep={keep}: keep at least the version just loaded (1)")
    aliases = store.list_aliases()
    previous = aliases.get(alias)
    if previous is None and alias in store.list_collections():
        raise StoreError(
            f"{alias!r} is a collection, not an alias, so it cannot be swapped; load the "
            f"versions under another alias name, or drop it first (ilias drop {alias})"
        )
    versions = list_versions(store, alias)
    current = next((n for n, name in versions if name == previous), 0)
    unfinished = [name for n, name in versions if n > current]
    if unfinished:
        target, resumed = unfinished[-1], True
        logger.info("%s: resuming the unfinished version %s", alias, target)
    else:
        target, resumed = version_name(alias, (versions[-1][0] if versions else 0) + 1), False
    report = load_collection(
        records,
        store,
        target,
        options,
        metadata=metadata,
        progress=progress,
        upload=upload,
        storage=storage,
    )
    store.set_alias(alias, target)
    dropped: list[str] = []
    if keep is not None:
        names = [name for _, name in list_versions(store, alias)]
        for name in names[: max(0, len(names) - keep)]:
            if name != target:
                store.drop(name)
                dropped.append(name)
    return VersionedLoad(
        alias=alias,
        collection=target,
        previous=previous,
        dropped=dropped,
        report=report,
        resumed=resumed,
    )


def _compatible_options(
    store: Store, collection: str, options: ExtractionOptions
) -> ExtractionOptions:
    """Adding to a collection must use the encoder and resolution it was built with."""
    meta = store.collection_config(collection).metadata
    encoder, resolution = meta.get("encoder"), meta.get("resolution")
    if encoder != options.encoder or options.resolution not in (None, resolution):
        raise StoreError(
            f"collection {collection!r} holds descriptors of {encoder} at {resolution}px, "
            f"not {options.encoder} at {options.resolution or 'its default'}px; load into a "
            "new collection (--collection NAME) or drop this one (ilias drop NAME)"
        )
    stored_local = meta.get("local")
    if options.local is not None and stored_local is None:
        raise StoreError(
            f"collection {collection!r} was loaded without local descriptors; load them into "
            "a new collection (--collection NAME --local)"
        )
    # A resumed load extracts exactly what the collection holds, local descriptors included.
    local = LocalConfig(**stored_local) if stored_local else None
    return replace(options, resolution=resolution, local=local)


def _stamped(record: Record) -> Record:
    """The record with its file's size and mtime in the payload (``file_stamp``)."""
    stamp = file_stamp(record.source)
    if stamp is None:
        return record
    return replace(record, payload={**record.payload, FILE_STAMP: stamp})


def _unchanged(
    store: Store, collection: str, records: Sequence[Record], report: LoadReport
) -> set[str]:
    """Ids already stored from the same file: a resumed load skips them.

    A stored point whose file has another size or modification time now (an image replaced
    at the same path) is extracted again and overwritten; points stored without a stamp
    (by an older ilias, or from bytes) count as unchanged.
    """
    stored = store.stored_payloads(collection, [r.id for r in records], [FILE_STAMP])
    changed = {
        r.id
        for r in records
        if r.id in stored
        and stored[r.id].get(FILE_STAMP) is not None
        and stored[r.id].get(FILE_STAMP) != r.payload.get(FILE_STAMP)
    }
    if changed:
        logger.info("%s: %d stored images changed on disk, extracting again", collection,
                    len(changed))  # fmt: skip
    report.changed = len(changed)
    return set(stored) - changed


def _check_unique_ids(records: Sequence[Record]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise StoreError(f"dataset id {record.id!r} appears twice; ids must be unique")
        seen.add(record.id)
