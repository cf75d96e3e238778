"""Bulk load: records -> Dask extraction -> validated upserts -> one index build at the end.

A load is resumable by construction: point ids are UUIDv5 of the dataset ids, ids already in
the collection are skipped before any pixel is decoded, and Qdrant's WAL keeps every
acknowledged upsert through a kill -9. Running the same load again therefore finishes an
interrupted one and never duplicates a point.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from ilias import __version__
from ilias.errors import StoreError
from ilias.indexing.extract import ExtractionOptions, extract
from ilias.indexing.store import CollectionConfig, Store
from ilias.loader import DecodeFailure, Record

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]


@dataclass
class LoadReport:
    """What a load did; ``images_per_s`` counts only images extracted in this run."""

    collection: str
    total: int
    already_present: int = 0
    loaded: int = 0
    failures: list[DecodeFailure] = field(default_factory=list)
    extract_seconds: float = 0.0
    index_seconds: float = 0.0

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
) -> LoadReport:
    """Extract and store ``records`` into ``collection``, skipping ids already there."""
    report = LoadReport(collection=collection, total=len(records))
    _check_unique_ids(records)
    if store.collection_exists(collection):
        options = _compatible_options(store, collection, options)
        present = store.existing_ids(collection, [r.id for r in records])
        report.already_present = len(present)
        records = [r for r in records if r.id not in present]
        if present:
            logger.info(
                "%s: %d of %d already stored, resuming", collection, len(present), report.total
            )
    done = report.already_present
    if progress:
        progress(done, report.total)

    started = time.perf_counter()
    for part in extract(records, options):
        report.failures.extend(part.failures)
        if part.ids:
            if not store.collection_exists(collection):
                meta = {
                    "encoder": options.encoder,
                    "resolution": part.resolution,
                    "ilias_version": __version__,
                    **(metadata or {}),
                }
                store.create_collection(collection, CollectionConfig(dim=part.dim, metadata=meta))
            store.upsert(collection, part.ids, part.vectors, part.payloads)
            report.loaded += len(part.ids)
        done += part.n_records
        if progress:
            progress(done, report.total)
    report.extract_seconds = time.perf_counter() - started

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
            "new collection (--collection NAME) or drop this one"
        )
    return replace(options, resolution=resolution)


def _check_unique_ids(records: Sequence[Record]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise StoreError(f"dataset id {record.id!r} appears twice; ids must be unique")
        seen.add(record.id)
