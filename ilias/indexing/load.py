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
from ilias.indexing.extract import (
    ExtractedPartition,
    ExtractionOptions,
    WorkerUpload,
    extract_shards,
)
from ilias.indexing.local_features import LocalConfig
from ilias.indexing.store import CollectionConfig, Store
from ilias.indexing.store.base import check_name
from ilias.indexing.store.layout import check_storage
from ilias.indexing.store.schema import ID_KEY, SHARD_KEY
from ilias.indexing.store.search_index import check_index
from ilias.loader import FILE_STAMP, DatasetSource, DecodeFailure, Record, file_stamp
from ilias.loader.sources import Shard, TarShard, chunks, selection_tag, summarize_selection

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]  # (done, total; None: not known yet)
Upload = Literal["auto", "driver", "workers"]
YFCC_SHARD_SIZE = 100_000  # images per YFCC100M shard of the reference (a size estimate)


@dataclass
class LoadReport:
    """What a load did; ``images_per_s`` counts only images extracted in this run.

    One clock for the rate, the one the progress bars use: ``extract_seconds`` runs from
    the moment the workers are up and get the first partition to the moment the last
    partition is counted, so ``images_per_s`` is the rate the bar ends on. Starting the
    Dask workers before that (processes, imports; seconds that do not grow with the data)
    is ``startup_seconds``, reported beside it, never folded into the rate.

    ``total`` counts the images known before the load (paths); images inside tar shards
    are only known once read, so with shards ``total`` grows as they are.
    """

    collection: str
    total: int
    already_present: int = 0
    changed: int = 0  # stored points whose file changed since (size or mtime): re-extracted
    loaded: int = 0
    failures: list[DecodeFailure] = field(default_factory=list)
    extract_seconds: float = 0.0  # first partition handed out -> last partition counted
    startup_seconds: float = 0.0  # load start -> workers up (before extract_seconds)
    index_seconds: float = 0.0
    uploaded_by_workers: int = 0  # points the Dask workers wrote themselves
    shards: int = 0  # tar shards in the source
    shards_skipped: int = 0  # recorded as completely stored: not read again
    shard_errors: dict[str, str] = field(default_factory=dict)  # damaged shard -> why
    skipped_members: int = 0  # tar members that are no image sample
    not_selected: int = 0  # samples left out by the selection list
    selection_listed: int = 0  # keys in the selection list (0: no selection)
    selection_found: int = 0  # listed samples found in the shards of this load

    @property
    def images_per_s(self) -> float:
        extracted = self.loaded + len(self.failures)
        return extracted / self.extract_seconds if self.extract_seconds else 0.0


def load_collection(
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
) -> LoadReport:
    """Extract and store ``records`` (or a whole source) into ``collection``, skipping
    what is already there.

    Records known in the driver are cut into chunks of ``options.partition_size`` and
    resume by id; each tar shard of a source is one partition that its worker reads, and
    resumes by shard: a shard the collection's ledger records as complete (and whose
    points are all there) is skipped without being read; a shard cut by a crash is read
    again and only its missing ids are encoded. ``upload``: ``"driver"`` funnels every
    partition through this process (the only choice for Edge); ``"workers"`` has the Dask
    workers upsert their own partitions (a Qdrant server: they must reach it and have
    ``QDRANT_API_KEY``); ``"auto"`` picks workers whenever the store is shared across
    processes. ``collection`` may be an alias: the points go to the collection it points
    to. ``progress(images done, images total)``; ``shard_progress(partitions done, total)``.
    ``storage``: the layout of a collection this load creates (``ram``, ``disk``,
    ``compact``, or ``auto`` to pick by the number of records; None: the store's default);
    an existing collection keeps its own. ``index``: how a collection this load creates is
    searched (``hnsw``, ``scan``, or ``auto``/None to pick by size: ``search_index``).
    """
    check_storage(storage)
    check_index(index)
    check_name(collection)  # before any work, not at the first partition
    source = records if isinstance(records, DatasetSource) else DatasetSource(list(records), {})
    known = source.records
    report = LoadReport(collection=collection, total=len(known), shards=len(source.tar_shards))
    _check_unique_ids(known)
    known = [_stamped(r) for r in known]
    target = _worker_upload(store, collection, upload)
    existed = store.collection_exists(collection)
    plan: list[tuple[Shard, frozenset[str]]] = []
    tags = _selection_tags(source.tar_shards)
    selections = {s.selection for s in source.tar_shards if s.selection}
    report.selection_listed = sum(summarize_selection(path).keys for path in selections)
    if existed:
        options = _compatible_options(store, collection, options)
        present = _unchanged(store, collection, known, report)
        report.already_present = len(present)
        known = [r for r in known if r.id not in present]
        if present:
            logger.info(
                "%s: %d of %d already stored, resuming", collection, len(present), report.total
            )
        current = store.collection_config(collection)
        _check_room(store, collection, len(known), current.dim, current.storage, options,
                    current.local_dim)  # fmt: skip
    else:  # the dimension comes with the first partition: for now, room for an empty one
        store.check_room(collection, points=0, dim=1)
    plan += [(chunk, frozenset()) for chunk in chunks(known, options.partition_size)]
    plan += (
        _tar_plan(store, collection, source.tar_shards, tags, report)
        if existed
        else [(shard, frozenset()) for shard in source.tar_shards]
    )
    done, parts_done = report.already_present, 0

    def counted() -> None:
        """Report the counts: the first call (``begin``) is the origin of the bars' rates."""
        if progress:
            progress(done, report.total if not source.tar_shards else None)
        if shard_progress:
            shard_progress(parts_done, len(plan))

    if not plan:
        counted()  # nothing to extract: the counts as they stand

    # What "auto" sizes the collection for: tar shards are only counted once read, so each
    # counts as the reference's 100K images, or the selection's size where it is smaller.
    unread = sum(isinstance(shard, TarShard) for shard, _ in plan) * YFCC_SHARD_SIZE
    expected = report.total + min(unread, report.selection_listed or unread)

    def create(dim: int, resolution: int, local_dim: int | None = None) -> None:
        if not store.collection_exists(collection):
            # The images known up front; those inside tar shards are only counted as they
            # are read, and every write checks the room again (the engine's own guard).
            _check_room(store, collection, len(known), dim, storage, options, local_dim)
            meta = {
                "encoder": options.encoder,
                "resolution": resolution,
                "ilias_version": __version__,
                **(metadata or source.metadata),
            }
            if options.local is not None:
                meta["local"] = options.local.to_dict()
            config = CollectionConfig(
                dim=dim,
                metadata=meta,
                local_dim=local_dim,
                storage=storage,
                index=index,
                expected_points=expected,  # the size "auto" and segment sizing go by
            )
            store.create_collection(collection, config)

    started = time.perf_counter()
    clock = {"begin": started, "end": started}  # the extraction's clock (LoadReport)

    def begin() -> None:
        clock["begin"] = clock["end"] = time.perf_counter()
        report.startup_seconds = clock["begin"] - started
        counted()

    # Workers can only write into a collection that exists: it is created before the first
    # partition (the dimension comes from one worker's encoder). The driver path creates it
    # at the first partition that has vectors, as before.
    prepare = create if target is not None and not existed else None
    skips = {shard.name: skip for shard, skip in plan}
    try:
        for part in extract_shards(plan, options, target, prepare, started=begin):
            report.failures.extend(part.failures)
            if part.uploaded:
                report.uploaded_by_workers += len(part.ids)
            elif part.ids:
                create(part.dim, part.resolution, part.local_dim)
                store.upsert(collection, part.ids, part.vectors, part.payloads, local=part.local)
            report.loaded += len(part.ids)
            done += part.n_records
            parts_done += 1
            if part.report is not None and part.shard in tags:
                _account_shard(store, collection, part, skips[part.shard], tags, report)
                report.total += part.n_records
            counted()
            clock["end"] = time.perf_counter()
    finally:
        report.extract_seconds = clock["end"] - clock["begin"]

    if prepare is not None and not report.loaded and not report.already_present:
        store.drop(collection)  # created for the workers, then nothing could be decoded
    if store.collection_exists(collection):
        started = time.perf_counter()
        store.finish_load(collection)
        report.index_seconds = time.perf_counter() - started
    elif report.shards and not report.total:
        why = (
            f"the selection kept none of their {report.not_selected} image samples"
            if report.not_selected
            else "they hold no image sample (a sample needs a .jpg member, as in the "
            f"reference; {report.skipped_members} other members skipped)"
        )
        raise StoreError(f"{report.shards} tar shard(s) read, {why}: {collection!r} not created")
    elif report.total or report.shards:
        raise StoreError(
            f"no image of {report.total} could be decoded, so {collection!r} was not created; "
            "see the log for the reasons"
        )
    return report


def _check_room(
    store: Store,
    collection: str,
    points: int,
    dim: int,
    storage: str | None,
    options: ExtractionOptions,
    local_dim: int | None,
) -> None:
    """One line with both numbers if the disk cannot take ``points`` more points and their
    index build (``Store.check_room``); checked before anything is written."""
    per_point = options.local.top_k_database if options.local is not None else 0
    store.check_room(
        collection, points=points, dim=dim, storage=storage, local_dim=local_dim,
        local_per_point=per_point,
    )  # fmt: skip


def _selection_tags(shards: Sequence[TarShard]) -> dict[str, str | None]:
    """Shard name -> the tag of the selection it is read with (None: every sample)."""
    return {s.name: selection_tag(s.selection) if s.selection else None for s in shards}


def _tar_plan(
    store: Store,
    collection: str,
    shards: Sequence[TarShard],
    tags: dict[str, str | None],
    report: LoadReport,
) -> list[tuple[Shard, frozenset[str]]]:
    """Tar shards still to read, each with the ids of it already stored.

    A shard is skipped unread when the ledger records it complete for the same selection
    and the collection still holds exactly that many of its points; otherwise it is read
    again and its stored ids are not encoded twice.
    """
    ledger = store.shard_ledger(collection)
    plan: list[tuple[Shard, frozenset[str]]] = []
    for shard in shards:
        entry = ledger.get(shard.name)
        stored = store.count(collection, {SHARD_KEY: shard.name})
        if entry and entry.get("selection") == tags[shard.name] and entry["points"] == stored:
            report.shards_skipped += 1
            report.already_present += stored
            report.total += stored
            report.selection_found += entry.get("samples", 0) if tags[shard.name] else 0
            continue
        ids: frozenset[str] = frozenset()
        if stored:
            pages = store.scan_payloads(collection, [ID_KEY], where={SHARD_KEY: shard.name})
            ids = frozenset(p[ID_KEY] for page in pages for p in page)
            report.already_present += len(ids)
            report.total += len(ids)
            logger.info("%s: %d points of %s stored, resuming it", collection, len(ids), shard.name)
        plan.append((shard, ids))
    return plan


def _account_shard(
    store: Store,
    collection: str,
    part: ExtractedPartition,
    skip: frozenset[str],
    tags: dict[str, str | None],
    report: LoadReport,
) -> None:
    """Count what reading a tar shard skipped; record it in the ledger once complete.

    A damaged shard (truncated, unreadable) is counted and named but never recorded, so
    the next run reads it again (a re-downloaded file then completes it).
    """
    shard, read = part.shard, part.report
    assert shard is not None and read is not None
    report.skipped_members += sum(read.skipped.values())
    report.not_selected += read.not_selected
    report.selection_found += read.samples if tags[shard] else 0
    if read.error is not None:
        report.shard_errors[shard] = read.error
        logger.warning("shard %s ended early: %s", shard, read.error)
        return
    if not store.collection_exists(collection):
        return  # nothing decodable yet anywhere: no collection to record in
    entry = {
        "points": len(skip) + len(part.ids),
        "samples": read.samples,
        "failures": len(part.failures),
        "skipped": sum(read.skipped.values()),
        "not_selected": read.not_selected,
        "selection": tags[shard],
    }
    store.record_shards(collection, {shard: entry})


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
    records: Sequence[Record] | DatasetSource,
    store: Store,
    alias: str,
    options: ExtractionOptions,
    *,
    metadata: dict | None = None,
    progress: ProgressCallback | None = None,
    upload: Upload = "auto",
    keep: int | None = None,
    shard_progress: ProgressCallback | None = None,
    storage: str | None = None,
    index: str | None = None,
) -> VersionedLoad:
    """Zero-downtime reload: load into a new ``<alias>-v<N>``, then swap ``alias`` to it.

    Searches through ``alias`` keep answering from the current version during the whole
    load and switch in one atomic step at the end. A load that fails leaves the alias where
    it was; running it again resumes the unfinished version (the newest one the alias never
    pointed to) instead of starting another. ``keep``: how many versions to keep, the new
    one included (``2`` keeps one to roll back to with ``store.set_alias``); None keeps all.
    ``storage``, ``index``: the layout and index of the new version (see
    ``load_collection``).
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
        records, store, target, options, metadata=metadata, progress=progress, upload=upload,
        shard_progress=shard_progress, storage=storage, index=index,
    )  # fmt: skip
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
