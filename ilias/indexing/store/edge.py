"""Qdrant Edge: the real Qdrant segment engine embedded in this process (the default).

A store is a folder; each collection is a subfolder holding the Edge shard (``shard/``)
and ``collection.json`` (the config and how the vectors were made). One process owns a
shard at a time (Edge locks its WAL), so a second ``ilias`` process on the same collection
gets a clear error instead of a corrupt index.

Bulk loads are cheap here because Edge has no background optimizer: upserts land in an
appendable segment and nothing is indexed until ``build_index`` runs ``optimize()``, which
builds HNSW and the int8 quantized vectors once, over everything.

Edge has no aliases of its own: they live in ``aliases.json`` at the store's root, replaced
atomically (write a temporary file, then ``os.replace``) under a lock file, so a reader in
another process sees the old mapping or the new one, never half of it. The store resolves
them before every call.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from ilias.errors import CollectionBusy, DiskFull, StoreError
from ilias.indexing.prefetch import prefetched
from ilias.indexing.store.base import Store
from ilias.indexing.store.edge_segments import (
    read_segments,
    segment_points,
    sorted_uuids,
    uuid_order,
)
from ilias.indexing.store.engine import (
    Capabilities,
    Condition,
    Engine,
    EngineInfo,
    PointBatch,
    StoredPoint,
    VectorQuery,
    hits_of,
    missing_collection,
)
from ilias.indexing.store.layout import LAYOUTS, StorageLayout, segment_plan
from ilias.indexing.store.schema import (
    GLOBAL_VECTOR,
    ID_KEY,
    LOCAL_VECTOR,
    LOCAL_XY,
    CollectionConfig,
)
from ilias.indexing.store.space import (
    FRESH_COLLECTION,
    OPEN_MARGIN,
    WRITE_MARGIN,
    allocated,
    free_bytes,
    holes,
    mib,
)
from ilias.indexing.store.stream import StreamMismatch, VectorStream
from ilias.types import Hit, SearchParams

logger = logging.getLogger(__name__)

_SCHEMA_TYPES = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "text": qe.PayloadSchemaType.Text,
}
# Hits carry the payload a user reads, not the patch coordinates kept for re-ranking.
_HIT_PAYLOAD = qe.PayloadSelector.Exclude([LOCAL_XY])
_ALIASES = "aliases.json"
_CONFIG = "collection.json"
# The shard ledger: one JSON line per completely loaded source shard, appended and fsynced
# by the one process that owns the collection; a line cut by a kill is ignored on reading.
_LEDGER = "shards.jsonl"
# Where the processes of a parallel import build their parts of a collection (an Edge store
# each; see import_parts).
_PARTS = "parts"
# Flush a collection every this many bytes of upserted float32 vectors (bounds the WAL).
FLUSH_BYTES = 1 << 30
# Holes (see space.py) are counted again on every write once the room is within this of
# what the write needs, and at most once a second before: counting stats every file.
HOLES_SLACK = 512 << 20


@dataclass
class _LoadWrites:
    """What one process wrote into a collection since its last seal and its last flush."""

    dim: int
    local_dim: int
    seal_every: int | None  # points per sealed segment (None: never seal mid-load)
    unsealed: int = 0  # points
    unflushed: int = 0  # bytes of float32 vectors


class EdgeEngine(Engine):
    """Collections as Qdrant Edge shards under one folder."""

    capabilities = Capabilities(
        no_snapshots=(
            "an Edge store has no snapshots: they are a Qdrant server feature (--store "
            "http://host:6333). An Edge collection is a folder: stop the processes using it "
            "and copy the folder to back it up"
        )
    )

    def __init__(self, path: str | Path):
        self.root = Path(path).expanduser()
        self.location = f"edge:{self.root}"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(
                f"{self.location}: {self.root} is a file; an Edge store is a folder (give a "
                "folder path, created if missing)"
            )
        self._shards: dict[str, qe.EdgeShard] = {}
        self._writes: dict[str, _LoadWrites] = {}  # per collection: see _write_progress
        self._aliases_seen: tuple[int, int, dict[str, str]] | None = None
        self._holes_seen: dict[str, tuple[float, int]] = {}  # name -> (when, holes)
        self._readers: list[Future[Any]] = []  # id reads of stored_vectors still running

    # -- collections -----------------------------------------------------------------
    def list_collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if (p / _CONFIG).is_file()]

    def has_collection(self, name: str) -> bool:
        return (self.root / name / _CONFIG).is_file()

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        for field_name, schema in config.payload_indexes.items():
            if schema not in _SCHEMA_TYPES:
                raise StoreError(
                    f"payload index {field_name!r}: unknown type {schema!r}; use one of "
                    f"{', '.join(_SCHEMA_TYPES)}"
                )
        folder = self.root / name
        self.ensure_room(name, FRESH_COLLECTION + WRITE_MARGIN, f"creating collection {name!r}")
        try:
            if folder.exists():  # a creation that died before collection.json was written
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
        except OSError as error:  # /proc, a read-only mount, no permission
            raise StoreError(
                f"{self.location}: cannot create {folder} ({error.strerror or error}); give a "
                "folder this user can write (--store edge:PATH)"
            ) from error
        with self._disk_errors(name, "creating it"):
            shard = qe.EdgeShard.create(str(folder / "shard"), _edge_config(config))
            if config.wal:
                # A WAL-less collection is a bulk import's: its payload indexes are built
                # once at the end (build_index), over the sealed segments. Kept up to date
                # point by point they took 40 % of the upserts' time and doubled each seal
                # (measured at 200k x 1024: 28.2 s -> 21.2 s for the load).
                _ensure_payload_indexes(shard, config)
            shard.flush()
            self._shards[name] = shard
            # Written last: a collection exists only once its shard and indexes do.
            (folder / _CONFIG).write_text(json.dumps(config.to_dict(), indent=2))

    def read_config(self, name: str) -> CollectionConfig:
        path = self.root / name / _CONFIG
        if not path.is_file():
            raise missing_collection(name, self.location, self.list_collections())
        return CollectionConfig.from_dict(json.loads(path.read_text()))

    def info(self, name: str, config: CollectionConfig) -> EngineInfo:
        found = self._shard(name).info()
        return EngineInfo(
            points=found.points_count,
            indexed_vectors=found.indexed_vectors_count,
            segments=found.segments_count,
            location=str(self.root / name),
            quantization=f"int8 q={config.quantile} ram" if config.quantization else None,
            layout=applied_layout(self.root / name / "shard"),
        )

    def build_index(self, name: str, config: CollectionConfig) -> None:
        shard = self._shard(name)
        # Flush first: it persists the appendable segment and empties the WAL, which holds
        # every upsert since the last flush (a second copy of the load: 21 GB at 5M x 1024),
        # before the optimizer checks for the free space its rebuilt segment needs.
        with self._disk_errors(name, "building its index"):
            shard.flush()
            self._ensure_build_room(name, "building its index")
            shard.optimize()  # seals what was appendable: nothing is left unflushed or unsealed
            _ensure_payload_indexes(shard, config)
            shard.flush()
        writes = self._writes.get(name)
        if writes is not None:  # kept: the plan comes from the config, read once
            writes.unsealed = writes.unflushed = 0

    def drop(self, name: str) -> None:
        self._close_shard(name, flush=False)
        self._holes_seen.pop(name, None)
        shutil.rmtree(self.root / name, ignore_errors=True)

    def close(self) -> None:
        wait(self._readers)  # a shard cannot close while a thread still reads it
        self._readers.clear()
        for name, shard in self._shards.items():
            try:
                shard.flush()
            except Exception as error:  # a full disk: the WAL already holds every point
                logger.warning("collection %r: not flushed on close (%s)", name, error)
            shard.close()
        self._shards.clear()

    # -- points ----------------------------------------------------------------------
    def upsert(self, name: str, batch: PointBatch) -> None:
        self._write(name, self._shard(name), *self._prepared(batch))

    def upsert_all(self, name: str, batches: Iterable[PointBatch]) -> None:
        """Batch n+1's points are built in a thread while batch n is written here, in
        order; every batch is written when this returns, a failure raised. The overlap is
        small (a 17 % faster load of 82k x 1024 points, measured): the binding holds the
        GIL while it builds a point and for much of ``update`` (``py-spy --gil``)."""
        shard = self._shard(name)
        for prepared in prefetched(map(self._prepared, batches), "edge-points"):
            self._write(name, shard, *prepared)

    @staticmethod
    def _prepared(batch: PointBatch) -> tuple[list[qe.Point], int, int]:
        """The engine's points of a batch, its local rows and its size in bytes."""
        # A float32 row's memoryview is read by Edge as its buffer: a third of the cost of
        # a list of Python floats, which was the bulk load's largest cost (see PointBatch).
        # (The binding's stub says list[float]; any float sequence is read, the tests check
        # the stored values.)
        columns: dict[str, list[Any]] = {
            key: [memoryview(row) for row in rows] if isinstance(rows, np.ndarray) else rows
            for key, rows in batch.vectors.items()
        }
        per_point = [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]
        points = [
            qe.Point(point, vectors, payload)
            for point, vectors, payload in zip(batch.ids, per_point, batch.payloads, strict=True)
        ]
        local_rows = sum(len(rows) for rows in batch.vectors.get(LOCAL_VECTOR, ()))
        size = int(np.size(batch.vectors.get(GLOBAL_VECTOR, ())))
        size += sum(len(row) for rows in batch.vectors.get(LOCAL_VECTOR, ()) for row in rows)
        size = 4 * size + sum(len(str(payload)) for payload in batch.payloads)
        return points, local_rows, size

    def _write(
        self, name: str, shard: qe.EdgeShard, points: list[qe.Point], local_rows: int, size: int
    ) -> None:
        # Twice: once in the WAL, once in the segment.
        self.ensure_room(name, WRITE_MARGIN + 2 * size, f"writing {len(points)} points")
        with self._disk_errors(name, "writing points"):
            shard.update(qe.UpdateOperation.upsert_points(points))
            self._write_progress(name, shard, len(points), local_rows)

    def _write_progress(
        self, name: str, shard: qe.EdgeShard, added: int, local_rows: int = 0
    ) -> None:
        """Flush and seal as a bulk load goes, since Edge does neither until asked.

        Flush every ``FLUSH_BYTES`` of upserted float32 vectors: the WAL keeps each upsert
        until a flush, so a load would otherwise need its own size again on disk (21 GB at
        5M x 1024, which made the index build refuse to start on a 70 GB disk). Seal
        (index) the appendable segment of a scanned collection every ``seal_points``
        points: a bulk load would otherwise end as one segment, scanned by one core; the
        cap ``segment_plan`` sets keeps the optimizer from merging the sealed ones, and
        sealing a graph-less segment only quantizes it (seconds per million points).
        """
        writes = self._writes.get(name)
        if writes is None:
            config = self.read_config(name)
            plan = segment_plan(
                config.storage or "ram",
                config.dim,
                config.expected_points,
                index=config.index,
                parts=config.import_parts,
            )
            writes = self._writes[name] = _LoadWrites(
                config.dim, config.local_dim or 0, plan.seal_points
            )
        writes.unflushed += 4 * (added * writes.dim + local_rows * writes.local_dim)
        writes.unsealed += added
        if writes.seal_every is not None and writes.unsealed >= writes.seal_every:
            self._seal(name, shard)
        elif writes.unflushed >= FLUSH_BYTES:
            shard.flush()
            writes.unflushed = 0

    def retrieve(
        self,
        name: str,
        ids: Sequence[str | int],
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
    ) -> list[StoredPoint]:
        records = self._shard(name).retrieve(
            list(ids), _payload_selector(payload), list(vectors) or False
        )
        return _stored(records, bool(vectors))

    def scroll(
        self,
        name: str,
        offset: str | int | None,
        limit: int,
        vectors: Sequence[str],
        payload: Sequence[str] | bool,
        conditions: Sequence[Condition] = (),
    ) -> tuple[list[StoredPoint], str | int | None]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=_edge_filter(conditions),
            with_payload=_payload_selector(payload),
            with_vector=list(vectors) or False,
        )
        records, following = self._shard(name).scroll(request)
        if following is not None and not isinstance(following, int | str):
            following = str(following)  # a UUID: the engine takes it back as text
        return _stored(records, bool(vectors)), following

    def query(
        self, name: str, queries: Sequence[VectorQuery], named_by: str | None = None
    ) -> list[list[Hit]]:
        requests = [
            qe.QueryRequest(
                limit=q.limit,
                prefetches=[_prefetch(q.prefetch)] if q.prefetch else None,
                query=qe.Query.Nearest(q.vector, using=q.using),
                filter=_edge_filter(q.conditions, q.point_ids),
                params=_edge_params(q.params),
                with_payload=_HIT_PAYLOAD,
            )
            for q in queries
        ]
        results = self._shard(name).query_batch(qe.QueryBatchRequest(requests))
        return [hits_of(points, named_by) for points in results]

    def checkpoint(self, name: str, config: CollectionConfig) -> None:
        """Without a WAL, Edge keeps the points of its appendable segment across a kill only
        once the segment is sealed (measured: upsert, ``flush()``, SIGKILL: nothing left;
        ``optimize()`` then SIGKILL: every point sealed before it kept; a clean ``close()``
        keeps everything). So the checkpoint of a WAL-less collection seals: for a
        graph-less one (the only kind bulk imports create without a WAL) that is int8
        quantization, seconds per million points. With a WAL, every upsert is durable
        already."""
        if config.wal:
            return
        self._seal(name, self._shard(name))

    def _seal(self, name: str, shard: qe.EdgeShard) -> None:
        """Seal the appendable segment (the optimizer quantizes it): its points are durable
        from then on. Not in the background: Edge's optimizer holds the writes back while it
        runs (measured: an upsert waited the whole 8 s of a 100k-point seal)."""
        with self._disk_errors(name, "sealing a segment"):
            shard.flush()  # persisted before it is sealed; the WAL emptied
            self._ensure_build_room(name, "sealing a segment")
            shard.optimize()
            shard.flush()
        writes = self._writes.get(name)
        if writes is not None:
            writes.unsealed = writes.unflushed = 0

    def import_parts(self, name: str) -> Path | None:
        """Other processes may write parts of a WAL-less collection at once, each into its
        own Edge store under this folder; ``adopt_parts`` then moves a part's sealed
        segments into the collection. Qdrant opens a shard from whatever segment folders
        it holds (each has its own id tracker, payload indexes and point versions), so an
        adopted segment is the segment the collection would have sealed itself."""
        return self.root / name / _PARTS

    def adopt_parts(self, name: str, parts: Mapping[str, int | None]) -> int:
        """Move the sealed segments of ``parts`` (collections of the ``import_parts`` store)
        into collection ``name``; the number of points adopted.

        Each part's value is its count as the process that wrote, sealed and closed it
        found it; None for the part of an interrupted import, which is opened first (the
        engine recovers it: its sealed segments are whole, the points it had not sealed
        are lost and read again by the rerun) and sealed. A part whose sealed segments do
        not hold its count is refused, naming it. The collection's own segments get the
        payload indexes first (the adopted ones bring theirs); it is closed during the
        moves (renames within one file system: a kill leaves each segment in one place,
        and the next import adopts the rest) and not opened again here: opening 5M x 1024
        (compact) takes 58 s, the engine copying the 5 GB of int8 copies into RAM, and the
        next command opens it anyway."""
        folder = self.root / name / _PARTS
        counts = dict(parts)
        interrupted = [part for part, points in parts.items() if points is None]
        if interrupted:
            store = EdgeEngine(folder)
            for part in interrupted:
                store._seal(part, store._shard(part))
                counts[part] = store.count(part, ())
            store.close()
        with self._disk_errors(name, "indexing its payload"):
            _ensure_payload_indexes(self._shard(name), self.read_config(name), every=True)
        self._close_shard(name)
        target = self.root / name / "shard" / "segments"
        for part in parts:
            segments = sorted((folder / part / "shard" / "segments").iterdir())
            sealed = [s for s in segments if (s / "id_tracker.mappings").is_file()]
            found = sum(segment_points(segment) for segment in sealed)
            if found != counts[part]:
                raise StoreError(
                    f"collection {name!r}: part {part} holds {counts[part]} points but its "
                    f"sealed segments {found}; run the load again (ids stored are skipped)"
                )
            for segment in sealed:
                if (target / segment.name).exists():
                    raise StoreError(f"collection {name!r}: segment {segment.name} of part "
                                     f"{part} is there already; run the load again")  # fmt: skip
                os.rename(segment, target / segment.name)
            shutil.rmtree(folder / part, ignore_errors=True)
        return sum(c or 0 for c in counts.values())

    def _close_shard(self, name: str, flush: bool = True) -> None:
        """Close one collection's shard (reopened on next use) once no reader uses it."""
        wait(self._readers)
        self._writes.pop(name, None)
        shard = self._shards.pop(name, None)
        if shard is not None:
            if flush:
                shard.flush()
            shard.close()

    def stored_vectors(self, name: str, vector: str, dim: int, block: int) -> VectorStream | None:
        """The rows of a built collection straight from its segment files (see
        ``edge_segments``), checked against the engine: the live total must equal its
        exact count, and the dataset ids, read through a payload-only scroll in the
        engine's id order, must come with the UUIDs the files give that order (checked on
        the first and last point of every page). None when anything differs."""
        shard = self._shard(name)
        segments = read_segments(self.root / name / "shard", vector, dim)
        if segments is None:
            return None
        total = sum(len(s.uuids) for s in segments)
        if total != self.count(name, ()):
            return None  # points still in an appendable segment: the scroll reads them
        positions = uuid_order(segments)
        expected = sorted_uuids(segments, positions)
        # The ids are read while the caller ranks the blocks (the scroll costs about 5 us a
        # point, the binding lets the matrix products run meanwhile).
        pool = ThreadPoolExecutor(1, thread_name_prefix="edge-ids")
        reading = pool.submit(_ids_in_uuid_order, shard, expected)
        pool.shutdown(wait=False)
        self._readers.append(reading)  # close() waits for it: the shard is in use

        def names() -> list[str]:
            found = reading.result()
            if found is None:
                raise StreamMismatch(
                    f"collection {name!r}: the segment files and the engine disagree on the "
                    "points' order; read it through the engine instead"
                )
            return found

        def blocks() -> Iterator[tuple[Any, Any]]:
            for segment, position in zip(segments, positions, strict=True):
                for start in range(0, len(segment.rows), block):
                    yield position[start : start + block], segment.rows[start : start + block]

        return VectorStream(total, dim, blocks(), names, direct=True)

    def count(self, name: str, conditions: Sequence[Condition]) -> int:
        request = qe.CountRequest(exact=True, filter=_edge_filter(conditions))
        return int(self._shard(name).count(request))

    def set_payload(self, name: str, ids: Sequence[str | int], payload: Mapping[str, Any]) -> None:
        shard = self._shard(name)
        self.ensure_room(name, WRITE_MARGIN, "tagging points")
        with self._disk_errors(name, "tagging points"):
            shard.update(qe.UpdateOperation.set_payload(list(ids), dict(payload)))

    # -- the shard ledger ----------------------------------------------------------------
    def read_ledger(self, name: str) -> dict[str, dict[str, Any]]:
        path = self.root / name / _LEDGER
        if not path.is_file():
            return {}
        ledger: dict[str, dict[str, Any]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line of a write cut by a kill
                continue
            if isinstance(entry, dict) and isinstance(entry.get("shard"), str):
                ledger[entry.pop("shard")] = entry
        return ledger

    def record_shards(self, name: str, entries: Mapping[str, Mapping[str, Any]]) -> None:
        path = self.root / name / _LEDGER
        lines = "".join(json.dumps({**e, "shard": shard}) + "\n" for shard, e in entries.items())
        with self._disk_errors(name, "recording loaded shards"), path.open("a+b") as ledger:
            if ledger.tell():  # append mode: at the end; a line a kill cut is ended first
                ledger.seek(-1, os.SEEK_END)
                if ledger.read(1) != b"\n":
                    lines = "\n" + lines
            ledger.write(lines.encode("utf-8"))
            ledger.flush()
            os.fsync(ledger.fileno())

    # -- aliases -----------------------------------------------------------------------
    def list_aliases(self) -> dict[str, str]:
        path = self.root / _ALIASES
        try:
            stat = path.stat()
        except FileNotFoundError:
            return {}
        seen = self._aliases_seen
        if seen is None or seen[:2] != (stat.st_mtime_ns, stat.st_size):
            # Re-read only when the file changed: every call resolves its collection name.
            seen = (stat.st_mtime_ns, stat.st_size, json.loads(path.read_text()))
            self._aliases_seen = seen
        return dict(seen[2])

    def point_alias(self, alias: str, collection: str, replace: bool) -> None:
        with self._aliases_locked() as current:
            current[alias] = collection

    def delete_alias(self, alias: str) -> None:
        with self._aliases_locked() as current:
            current.pop(alias, None)

    @contextlib.contextmanager
    def _aliases_locked(self) -> Iterator[dict[str, str]]:
        """Read-modify-write of aliases.json, exclusive across processes, replaced atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".aliases.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self.root / _ALIASES
            current = json.loads(path.read_text()) if path.is_file() else {}
            before = dict(current)
            yield current
            if current != before:
                handle, temporary = tempfile.mkstemp(dir=self.root, prefix=".aliases.")
                with os.fdopen(handle, "w") as out:
                    json.dump(current, out, indent=2, sort_keys=True)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
                self._aliases_seen = None

    # -- disk room (see ilias.indexing.store.space) --------------------------------------
    def ensure_room(self, name: str, needed: int, what: str) -> None:
        """Refuse ``what`` unless the room on this store's disk (free bytes less the holes
        of ``name``'s memory-mapped files) is at least ``needed``: one line, both numbers."""
        folder = self.root / name
        if not folder.is_dir():
            self._check_writable(folder)  # a folder that cannot be made is not "no room"
        free = free_bytes(self.root)
        seen = self._holes_seen.get(name)
        now = time.monotonic()
        if seen is not None and now - seen[0] < 1.0 and free - seen[1] >= needed + HOLES_SLACK:
            return  # far from the limit: the holes counted a moment ago will do
        unfilled = holes(folder) if folder.is_dir() else 0
        self._holes_seen[name] = (now, unfilled)
        if free - unfilled >= needed:
            return
        held = f" less {mib(unfilled)} its files may still fill" if unfilled else ""
        raise DiskFull(
            f"{self.location}: {what} needs {mib(needed)} of free disk, and the disk holding "
            f"{self.root} has {mib(max(0, free - unfilled))} ({mib(free)} free{held}); free "
            "space or move the store, then run the same command again (what is stored is kept)"
        )

    def _check_writable(self, folder: Path) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as error:  # /proc, a read-only mount, no permission
            raise StoreError(
                f"{self.location}: cannot create {folder} ({error.strerror or error}); give a "
                "folder this user can write (--store edge:PATH)"
            ) from error

    def _ensure_build_room(self, name: str, what: str) -> None:
        """The optimizer writes the rebuilt segments next to the loaded ones before it
        deletes those: their size again, plus half for the int8 copies and the graph
        (about a third more at d = 512), and the room a collection needs to open after."""
        segments = allocated(self.root / name / "shard" / "segments")
        self.ensure_room(name, segments + segments // 2 + OPEN_MARGIN, f"{what} of {name!r}")

    @contextlib.contextmanager
    def _disk_errors(self, name: str, what: str) -> Iterator[None]:
        """A write the engine or the file system refused for want of space, as one line."""
        try:
            yield
        except StoreError:
            raise
        except Exception as error:  # the binding raises plain Exception
            text = str(error)
            full = isinstance(error, OSError) and error.errno == errno.ENOSPC
            if not full and not any(s in text for s in ("No space left", "Not enough space")):
                raise
            raise DiskFull(
                f"{self.location}: the disk is full while {what} in collection {name!r} "
                f"({text.strip().splitlines()[0][:200]}); {mib(free_bytes(self.root))} free. "
                "Free space, then run the same command again (what is stored is kept)"
            ) from error

    # -- internals -------------------------------------------------------------------
    def _shard(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is None:
            if not self.has_collection(name):
                raise missing_collection(name, self.location, self.list_collections())
            # Opening writes (the WAL's next segment) and may fill holes: see space.py.
            self.ensure_room(name, OPEN_MARGIN, f"opening collection {name!r}")
            try:
                shard = qe.EdgeShard.load(str(self.root / name / "shard"))
            except Exception as error:  # the binding raises plain Exception
                if "WouldBlock" in str(error):
                    raise CollectionBusy(
                        f"collection {name!r} in {self.location} is open in another process "
                        "(Qdrant Edge allows one); wait for it or stop it"
                    ) from error
                raise StoreError(f"cannot open collection {name!r}: {error}") from error
            self._shards[name] = shard
            _remove_interrupted_builds(self.root / name / "shard")
        return shard

    # -- deleting points -----------------------------------------------------------------
    def delete(
        self,
        name: str,
        ids: Sequence[str | int] | None = None,
        conditions: Sequence[Condition] | None = None,
    ) -> None:
        shard = self._shard(name)
        if ids is not None:
            shard.update(qe.UpdateOperation.delete_points(list(ids)))
        else:
            selector = _edge_filter(conditions or ())
            if selector is None:
                raise StoreError("a delete by filter needs at least one condition")
            shard.update(qe.UpdateOperation.delete_points_by_filter(selector))
        # No flush: the WAL holds the delete once update returns (it survives a kill -9),
        # and a flush per call made a 1,024-id delete 17x slower (0.27 s vs 0.016 s here).


def _ids_in_uuid_order(shard: qe.EdgeShard, expected: Any, page: int = 16_384) -> list[str] | None:
    """The ``id`` payload of every point in the engine's id order, if that order is the one
    of the UUIDs ``expected`` (rows of 16 big-endian bytes); None otherwise. Only the first
    and last point id of each page are read (a point id costs the binding a UUID object)."""
    names: list[str] = []
    offset: Any = None
    selector = qe.PayloadSelector.Include([ID_KEY])
    while True:
        request = qe.ScrollRequest(offset=offset, limit=page, with_payload=selector,
                                   with_vector=False)  # fmt: skip
        records, offset = shard.scroll(request)
        if records:
            first, last = len(names), len(names) + len(records) - 1
            if last >= len(expected):
                return None
            for position, record in ((first, records[0]), (last, records[-1])):
                if getattr(record.id, "bytes", None) != expected[position].tobytes():
                    return None
            try:
                names.extend([str(r.payload[ID_KEY]) for r in records])  # type: ignore[index]
            except (KeyError, TypeError):  # a point without the id payload: not ours
                return None
        if offset is None:
            return names if len(names) == len(expected) else None


def _remove_interrupted_builds(shard_dir: Path) -> None:
    """Delete index builds a killed process left in ``temp_segments/`` (hundreds of MB).

    Only called once this process holds the shard's lock: no other process can be building
    into that folder, and this one has not started a build yet. The points are safe in the
    WAL and the segments; the next ``build_index`` starts the build over.
    """
    leftovers = list((shard_dir / "temp_segments").glob("*"))
    for path in leftovers:
        if path.is_dir():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
        else:
            size = path.stat().st_size
            path.unlink(missing_ok=True)
        logger.info("removed an interrupted index build: %s (%.0f MB)", path, size / 1e6)


class EdgeStore(Store):
    """A ``Store`` over Qdrant Edge shards in the folder ``path`` (``open_store("edge:PATH")``)."""

    engine: EdgeEngine

    def __init__(self, path: str | Path):
        super().__init__(EdgeEngine(path))

    @property
    def root(self) -> Path:
        return self.engine.root


# Where a preset puts payload: on disk (memory-mapped), preloaded into RAM, Edge's default.
_PAYLOAD_MEMORY = {True: qe.Memory.Cold, False: qe.Memory.Cached, None: None}


def _ensure_payload_indexes(
    shard: qe.EdgeShard, config: CollectionConfig, every: bool = False
) -> None:
    """Create the collection's payload indexes the shard lacks (all of them on a new shard;
    after a bulk import, those it deferred: see create_collection). ``every``: ask for
    each one, as adopted segments bring theirs but the shard's own segments lack them
    (the engine skips a segment that has the index: 0.06 s for 4 fields on 300k points)."""
    present = set() if every else set(shard.info().payload_schema)
    for field_name, schema in config.payload_indexes.items():
        if field_name not in present:
            shard.update(qe.UpdateOperation.create_field_index(field_name, _SCHEMA_TYPES[schema]))


def _edge_config(config: CollectionConfig) -> qe.EdgeConfig:
    """The shard config of a collection whose ``storage`` is a preset (never ``auto``).

    Placement uses Edge's ``Memory``: ``Cached`` (preloaded into the page cache: "in RAM"),
    ``Cold`` (memory-mapped, read on demand: "on disk"), ``Pinned`` (held in RAM, never
    evicted) for the int8 copies every HNSW step scores.
    """
    layout = LAYOUTS[config.storage or "ram"]
    quantization = (
        qe.ScalarQuantizationConfig(
            type=qe.ScalarType.Int8, quantile=config.quantile, memory=qe.Memory.Pinned
        )
        if config.quantization
        else None
    )
    originals = qe.Memory.Cold if layout.originals_on_disk else qe.Memory.Cached
    datatype = qe.VectorStorageDatatype.Float16 if layout.originals == "float16" else None
    vectors = {
        GLOBAL_VECTOR: qe.EdgeVectorParams(
            size=config.dim, distance=qe.Distance.Cosine, memory=originals, datatype=datatype
        )
    }
    if config.local_dim:
        # Only ever re-scored, never searched: no HNSW graph (m=0); int8 copies in RAM keep
        # 100 descriptors per image affordable, and re-scoring reads the originals, which
        # follow the collection's layout (on disk, float16 with "compact").
        vectors[LOCAL_VECTOR] = qe.EdgeVectorParams(
            size=config.local_dim,
            distance=qe.Distance.Cosine,
            multivector_config=qe.MultiVectorConfig(qe.MultiVectorComparator.MaxSim),
            hnsw_config=qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
            quantization_config=quantization,
            memory=originals,
            datatype=datatype,
        )
    plan = segment_plan(
        config.storage or "ram",
        config.dim,
        config.expected_points,
        index=config.index,
        parts=config.import_parts,
    )
    return qe.EdgeConfig(
        vectors=vectors,
        hnsw_config=qe.HnswIndexConfig(
            m=config.graph_m,  # 0 for a scanned collection: no graph, plain int8 scans
            ef_construct=config.hnsw_ef_construct,
            full_scan_threshold=10_000,
            memory=qe.Memory.Cold if layout.hnsw_on_disk else qe.Memory.Cached,
        ),
        quantization_config=quantization,
        # Edge memory-maps payload by default (Cold): "disk" keeps that, "compact" says so
        # explicitly, "ram" preloads it (Cached).
        payload_memory=_PAYLOAD_MEMORY[layout.payload_on_disk],
        # Index every segment at build_index, however small: a demo-sized collection is
        # searched through the same HNSW + int8 path as a 100M one. Segment sizing: see
        # segment_plan (None: Edge's defaults).
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=1,
            default_segment_number=plan.number,
            max_segment_size=plan.max_size_kb,
        ),
        # Without a WAL an upsert is durable at the next flush (see _write_progress).
        wal_enabled=None if config.wal else False,
    )


# Edge's segment files name where each part lives: vector storage types with "InRam" are
# preloaded into RAM (page cache), the others are memory-mapped on demand; payload storage
# "in_ram_mmap" is preloaded, "mmap" is read on demand.
_PAYLOAD_ON_DISK = {"mmap": True, "on_disk": True, "in_ram_mmap": False, "in_memory": False}


def applied_layout(shard_dir: Path) -> StorageLayout | None:
    """Where Edge says the ``global`` vector's parts live, read from its segments' own
    ``segment.json`` (the indexed segments once built; before that, the appendable one).

    A part the segments disagree on, or do not describe (HNSW before the build), is None.
    """
    found = []
    for path in sorted((shard_dir / "segments").glob("*/segment.json")):
        try:
            config = json.loads(path.read_text())["config"]
            found.append((config["vector_data"][GLOBAL_VECTOR], config.get("payload_storage_type")))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a segment being written or removed right now
    if not found:
        return None
    indexed = [f for f in found if (f[0].get("index") or {}).get("type") == "hnsw"]
    segments = indexed or found

    def one(values: list[object]) -> object:
        return values[0] if len(set(values)) == 1 else None

    originals = one([v.get("datatype") or "float32" for v, _ in segments])
    on_disk = one([not str(v.get("storage_type", "")).startswith("InRam") for v, _ in segments])
    hnsw = None
    if indexed:
        options = [(v["index"].get("options") or {}) for v, _ in indexed]
        hnsw = one([o.get("memory") == "cold" or o.get("on_disk") is True for o in options])
    payload = one([_PAYLOAD_ON_DISK.get(str((p or {}).get("type"))) for _, p in segments])
    return StorageLayout(
        originals=originals if isinstance(originals, str) else None,
        originals_on_disk=on_disk if isinstance(on_disk, bool) else None,
        hnsw_on_disk=hnsw if isinstance(hnsw, bool) else None,
        payload_on_disk=payload if isinstance(payload, bool) else None,
    )


def _payload_selector(payload: Sequence[str] | bool) -> Any:
    """All of the payload, none of it, or the named keys."""
    return payload if isinstance(payload, bool) else qe.PayloadSelector.Include(list(payload))


def _stored(records: Sequence[Any], with_vectors: bool) -> list[StoredPoint]:
    """Edge records (of a retrieve or a scroll) as the engine-neutral points."""
    return [
        StoredPoint(str(r.id), _named(r.vector) if with_vectors else {}, dict(r.payload or {}))
        for r in records
    ]


def _named(vector: Any) -> dict[str, Any]:
    """A record's vectors by name (the collection's vectors are all named)."""
    return dict(vector) if isinstance(vector, dict) else {}


def _prefetch(query: VectorQuery) -> qe.Prefetch:
    return qe.Prefetch(
        query=qe.Query.Nearest(query.vector, using=query.using),
        limit=query.limit,
        filter=_edge_filter(query.conditions, query.point_ids),
        params=_edge_params(query.params),
    )


def _edge_params(params: SearchParams | None) -> qe.SearchParams | None:
    if params is None:
        return None
    return qe.SearchParams(
        hnsw_ef=params.hnsw_ef,
        exact=params.exact,
        quantization=qe.QuantizationSearchParams(
            ignore=params.ignore_quantization,
            rescore=params.rescore,
            oversampling=params.oversampling,
        ),
    )


def _edge_filter(
    conditions: Sequence[Condition], point_ids: Sequence[str | int] | None = None
) -> qe.Filter | None:
    must: list[Any] = [_edge_condition(c) for c in conditions]
    if point_ids is not None:
        must.append(qe.HasIdCondition(set(point_ids)))
    return qe.Filter(must=must) if must else None


def _edge_condition(condition: Condition) -> qe.FieldCondition:
    key = condition.key
    if condition.range is not None:
        r = condition.range
        return qe.FieldCondition(
            key=key, range=qe.RangeFloat(gte=r.gte, lte=r.lte, gt=r.gt, lt=r.lt)
        )
    if condition.any_of is not None:
        return qe.FieldCondition(key=key, match=qe.MatchAny(list(condition.any_of)))
    return qe.FieldCondition(key=key, match=qe.MatchValue(condition.value))
