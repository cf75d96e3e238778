"""``ilias load --features``: reference HDF5 feature files into a collection.

Every file is checked before anything is written; the rows are then written by this
process in order (checkpointed after files), or, for a large WAL-less import into an
engine that adopts parts (Edge), by several processes at once (``feature_parts``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilias import __version__
from ilias.errors import DatasetError, StoreError
from ilias.indexing.feature_parts import import_in_parts
from ilias.indexing.feature_rows import RowRange, RowWriter
from ilias.indexing.features import (
    CHUNK_ROWS,
    FeatureHeader,
    ProgressCallback,
    adaptation_layer,
    inspect_features,
    read_feature_ids,
    role_of,
)
from ilias.indexing.store import CollectionConfig, Store
from ilias.indexing.store.layout import check_storage
from ilias.indexing.store.search_index import check_index, resolve_index
from ilias.loader.records import Record, Role

# A WAL-less import checkpoints (seals) after a file once this many rows came since the
# last one: every file of the reference's layout (1M rows), not its small positives file.
CHECKPOINT_ROWS = 500_000
# A WAL-less import of at least this many rows is written by several processes at once
# (one per core), each taking at least this many rows (see import_processes).
PARALLEL_ROWS = 500_000
# The share of the RAM the processes of a parallel import may hold between them.
PART_MEMORY_SHARE = 0.5


@dataclass
class ImportReport:
    """What ``import_features`` did, file by file."""

    collection: str
    files: list[str] = field(default_factory=list)
    loaded: int = 0
    already_present: int = 0
    query_files: list[str] = field(default_factory=list)  # skipped: queries are not points
    points: int = 0  # in the collection once the import ends
    import_seconds: float = 0.0  # reading, checking and writing the rows (checkpoints too)
    build_seconds: float = 0.0  # the index build after the load (``Store.finish_load``)


def import_features(
    paths: Sequence[Path | str],
    store: Store,
    collection: str,
    *,
    encoder: str,
    resolution: int | None = None,
    records: Sequence[Record] = (),
    metadata: Mapping[str, Any] | None = None,
    chunk: int = CHUNK_ROWS,
    progress: ProgressCallback | None = None,
    storage: str | None = None,
    index: str | None = None,
    checkpoint_rows: int = CHECKPOINT_ROWS,
    workers: int | None = None,
) -> ImportReport:
    """Load reference feature files into ``collection`` (created on the first database row).

    ``encoder`` is the spec that made the features (recorded, so image and text queries
    are embedded the same way). ``records`` are the dataset's own records (what
    ``open_dataset`` gives an image load): a point whose id is among them gets its payload
    (instance, role, path, bbox, scale, clutter), so the collection is the one an image
    load would build, minus ``file_stamp`` (no file was read). Ids not among them get
    what the id says (``role_of``); a positive id the given dataset lacks is refused (the
    files belong to another dataset). ``metadata`` is recorded with the collection
    (``ilias_metadata`` of the dataset, so ``ilias eval`` finds its queries).

    Every file is checked before anything is written (present, HDF5, both datasets of one
    length, the collection's dimension, unique ids, queries apart, positives the dataset
    has); a fault is one line naming the file and leaves the collection as it was. Rows
    that are not finite are found while loading: the error names the file and the ids.
    Query files (every id ``<instance>/query/...``) are skipped and listed: queries are
    embedded at evaluation time. Ids already stored are skipped, so an interrupted import
    resumes. A graph-less collection (``index`` scan) this import creates has no
    write-ahead log (``wal=False``: about twice the engine's upsert rate on Edge): its
    points are durable at each checkpoint (``Store.checkpoint``, after a file once
    ``checkpoint_rows`` came since the last one, and at the load's own seals), so a kill
    loses at most the rows read since the last one, and the rerun reads exactly those
    again. A collection with a graph keeps its WAL. Rows
    stream in chunks of ``chunk`` (float16 -> float32 once per chunk, the next chunk read
    in a thread meanwhile); ``progress(done, total)`` counts rows. An ``encoder`` ending
    in ``|adapt=LAYER`` takes the frozen encoder's features and stores them through the
    layer (the reference's ``--lin_adapt_path``), so the collection equals an image load
    with that spec. ``storage``: the layout of the collection if
    this import creates it (``ram``, ``disk``, ``compact``, or ``auto`` to pick by the
    rows of the database files; None: the store's default); ``index`` likewise
    (``hnsw``, ``scan``, ``auto``/None: by the rows).
    """
    check_storage(storage)
    check_index(index)
    headers = [inspect_features(path) for path in paths]
    exists = store.collection_exists(collection)
    if exists:
        meta = store.collection_config(collection).metadata
        recorded, made_at = meta.get("encoder"), meta.get("resolution")
        if recorded != encoder:
            raise StoreError(
                f"collection {collection!r} holds descriptors of {recorded}, not {encoder}; "
                "load these features into a new collection (--collection NAME)"
            )
        if resolution not in (None, made_at):
            raise StoreError(
                f"collection {collection!r} holds descriptors made at {made_at}px, not "
                f"{resolution}px (--resolution); load these features into a new collection "
                "(--collection NAME)"
            )
        resolution = made_at
    layer = adaptation_layer(encoder)
    dim = store.collection_config(collection).dim if exists else None
    file_dim = layer.d_in if layer is not None else dim
    for header in headers:
        if file_dim is None:
            file_dim = header.dim
        elif header.dim != file_dim:
            holder = f"{collection!r} holds" if exists else f"{headers[0].path} has"
            wanted = (
                f"the adaptation layer of {encoder} takes {file_dim}-d ones"
                if layer is not None
                else f"{holder} {file_dim}-d vectors"
            )
            raise DatasetError(
                f"{header.path}: {header.dim}-d features, but {wanted}; one collection holds "
                "the features of one encoder"
            )
    known = {record.id: record.payload for record in records}
    holds_queries = [_holds_queries(header.path, known) for header in headers]
    database = [h for h, queries in zip(headers, holds_queries, strict=True) if not queries]
    # Files under a checkpoint's worth of rows (the positives) first: the load's seals then
    # fall on full segments, and no small last segment is merged into (rewrites) a sealed
    # one when the load ends (see segment_plan).
    database.sort(key=lambda header: header.rows >= checkpoint_rows)
    report = ImportReport(collection)
    report.query_files = [str(h.path) for h, q in zip(headers, holds_queries, strict=True) if q]
    total = sum(h.rows for h in database)
    wal = resolve_index(index, dim=file_dim or 0, expected_points=total) != "scan"
    processes = import_processes(store, collection, workers, total, wal=wal, dim=file_dim or 0)
    if not exists and database:
        meta = {
            "encoder": encoder,
            "resolution": resolution,
            "ilias_version": __version__,
            "features": sorted({str(h.path.parent.resolve()) for h in headers}),
            **(metadata or {}),
        }
        config = CollectionConfig(
            dim=layer.d_out if layer is not None else database[0].dim,
            metadata=meta,
            storage=storage,
            index=index,
            expected_points=total,
            # The files can be read again: no WAL where a checkpoint costs only a seal (no
            # graph; see CollectionConfig.wal, Store.checkpoint).
            wal=wal,
            import_parts=processes,
        )
        store.create_collection(collection, config)
    writer = RowWriter(store, collection, encoder, layer, known, chunk)
    began = time.perf_counter()
    try:
        if not database:
            report.points = store.count(collection) if exists else 0
        elif processes > 1:
            report.loaded, report.already_present, report.points = import_in_parts(
                store, collection, database, writer, processes, progress
            )
        else:
            _import_in_order(store, collection, database, writer, checkpoint_rows, progress)
            report.loaded, report.already_present = writer.loaded, writer.already_present
            report.points = store.count(collection)
        report.files = [str(header.path) for header in database]
    except BaseException:
        if not exists and store.collection_exists(collection) and store.count(collection) == 0:
            store.drop(collection)  # refused before any row was stored: leave nothing behind
        raise
    report.import_seconds = time.perf_counter() - began
    if store.collection_exists(collection) and processes == 1:
        # (The parts of a parallel import were sealed and indexed where they were written.)
        store.finish_load(collection)
    report.build_seconds = time.perf_counter() - began - report.import_seconds
    return report


def import_processes(
    store: Store, collection: str, asked: int | None, rows: int, *, wal: bool, dim: int
) -> int:
    """How many processes write an import: what the collection was created with when it
    exists (its segment plan depends on it), else ``asked``, else one per core for a
    WAL-less import of at least ``PARALLEL_ROWS`` rows into an engine that adopts parts
    (Edge), at most one per ``PARALLEL_ROWS`` rows and as many as the memory allows
    (``PART_MEMORY_SHARE`` of the RAM, each holding up to ``SEAL_POINTS`` float32 rows
    before it seals them; measured at 5M x 1024, two processes sealing every 834k points:
    9.1 GB of memory in use on the machine at the peak, page cache aside). One process
    wherever parts cannot be adopted, or with a WAL."""
    if store.collection_exists(collection):
        return store.collection_config(collection).import_parts
    if wal or store.import_parts(collection) is None:
        return 1
    if asked is not None:
        return asked
    from ilias.indexing.limits import cpu_count
    from ilias.indexing.store.layout import SEAL_POINTS, machine_ram_bytes

    by_memory = int(PART_MEMORY_SHARE * machine_ram_bytes() // max(1, SEAL_POINTS * dim * 4))
    return max(1, min(cpu_count(), rows // PARALLEL_ROWS, by_memory))


def _import_in_order(
    store: Store,
    collection: str,
    database: Sequence[FeatureHeader],
    writer: RowWriter,
    checkpoint_rows: int,
    progress: ProgressCallback | None,
) -> None:
    """One process writes the files in order, checkpointing after a file once
    ``checkpoint_rows`` came since the last checkpoint."""
    total, done, unsaved = sum(h.rows for h in database), 0, 0
    may_hold = store.count(collection) > 0  # else no id can be stored yet
    for header in database:
        ids = read_feature_ids(header.path)
        present = store.existing_ids(collection, ids) if may_hold else set()

        def rows_done(end: int, done: int = done) -> None:
            if progress:
                progress(done + end, total)

        writer.write(RowRange(header.path, 0, header.rows), ids, present, rows_done)
        unsaved += header.rows
        if unsaved >= checkpoint_rows:
            store.checkpoint(collection)  # this file's points now survive a kill
            unsaved = 0
        done += header.rows
        if progress:
            progress(done, total)


def _holds_queries(path: Path, known: Mapping[str, Any]) -> bool:
    """Whether a file holds queries (every id ``<instance>/query/...``) rather than database
    points; a file that mixes both, repeats ids, or (with the dataset ``known``) holds a
    positive the dataset lacks, is refused naming the file. Ids only, before any write."""
    ids = read_feature_ids(path)
    roles = [role_of(i)[0] for i in ids]
    queries = roles.count(Role.QUERY)
    if queries and queries < len(ids):
        first = ids[roles.index(Role.QUERY)]
        raise DatasetError(
            f"{path}: mixes query ids ({first}, ...) with database ids; queries and the "
            "database come in separate files"
        )
    if known:
        lost = next((i for i, r in zip(ids, roles, strict=True)
                     if r is Role.POSITIVE and i not in known), None)  # fmt: skip
        if lost is not None:
            raise DatasetError(
                f"{path}: {lost} is not in the dataset given; pass the dataset these "
                "features were extracted from"
            )
    return bool(ids) and queries == len(ids)
