"""A bulk feature import written by several processes at once, one part each.

Why: Qdrant Edge's Python binding holds the GIL while it builds points, writes them, seals
segments and builds payload indexes, so one process loads at one core's speed whatever it
overlaps (13k points/s at 1024 d on this project's machine). Here each process writes an
equal share of the rows into its own Edge collection (a *part*, under the collection's
``import_parts`` folder, created with the collection's own config), seals it and builds
its payload indexes; the collection then adopts every part's sealed segments
(``Store.adopt_parts``). Qdrant opens a shard from whatever segments it holds, each with its
own id tracker, payload indexes and point versions, so the adopted segments are the ones
the collection would have sealed itself, and the payload indexes are not built again.

Durability: a part's points are durable once sealed, in the part. A killed import leaves
its parts behind; the next import into the collection adopts their sealed segments first
and then skips every id stored (the rows a part had not sealed are read again).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ilias.errors import IliasError, StoreError
from ilias.indexing.feature_rows import RowRange, RowWriter
from ilias.indexing.features import (
    FeatureHeader,
    ProgressCallback,
    adaptation_layer,
    read_feature_ids,
)
from ilias.indexing.store import Store

logger = logging.getLogger(__name__)


@dataclass
class PartTask:
    """What one process writes: ``ranges`` of the files into collection ``name`` of the
    Edge store at ``root``, created with ``config`` (the collection's, as a dict)."""

    index: int
    root: str
    name: str
    config: dict[str, Any]
    ranges: list[RowRange]
    encoder: str
    chunk: int
    known: dict[str, Any] = field(default_factory=dict)  # payloads of the dataset's records
    present: set[str] = field(default_factory=set)  # ids stored already: skipped


def split_rows(database: Sequence[FeatureHeader], parts: int) -> list[list[RowRange]]:
    """The files' rows in order, cut into ``parts`` runs of equal length (the last shorter)."""
    share = math.ceil(sum(h.rows for h in database) / parts)
    runs: list[list[RowRange]] = [[] for _ in range(parts)]
    part, room = 0, share
    for header in database:
        start = 0
        while start < header.rows:
            if room == 0:
                part, room = part + 1, share
            stop = min(header.rows, start + room)
            runs[part].append(RowRange(header.path, start, stop))
            room -= stop - start
            start = stop
    return runs


def import_in_parts(
    store: Store,
    collection: str,
    database: Sequence[FeatureHeader],
    writer: RowWriter,
    parts: int,
    progress: ProgressCallback | None = None,
) -> tuple[int, int, int]:
    """Write ``database`` into ``collection`` through ``parts`` processes (see the module);
    ``(points loaded, ids already stored, points in the collection)``, the last without
    opening the collection again (58 s at 5M x 1024). The collection exists, created
    with ``import_parts=parts``."""
    root = store.import_parts(collection)
    if root is None:
        raise StoreError(f"{store.location} cannot adopt parts of a collection")
    adopt_leftovers(store, collection, root)
    before = store.count(collection)
    may_hold = before > 0
    config = store.collection_config(collection).to_dict()
    # The parent reads the ids only to hand each part its records' payloads and the ids
    # stored already; the parts read their own (5M ids: seconds).
    needs_ids = bool(writer.known) or may_hold
    tasks = []
    for index, ranges in enumerate(split_rows(database, parts)):
        task = PartTask(index, str(root), f"part-{index}", config, ranges, writer.encoder,
                        writer.chunk)  # fmt: skip
        for rows in ranges if needs_ids else ():
            ids = read_feature_ids(rows.path)[rows.start : rows.stop]
            task.known.update((i, writer.known[i]) for i in ids if i in writer.known)
            if may_hold:
                task.present |= store.existing_ids(collection, ids)
        tasks.append(task)
    total = sum(h.rows for h in database)
    written = _run(tasks, total, progress)
    adopted = store.adopt_parts(collection, {t.name: written[t.index][1] for t in tasks})
    if progress:
        progress(total, total)
    loaded = sum(loaded for loaded, _ in written.values())
    return loaded, sum(len(t.present) for t in tasks), before + adopted


def adopt_leftovers(store: Store, collection: str, root: Path) -> None:
    """Adopt what the parts of an interrupted import sealed (a part that never got its
    config written holds nothing: removed)."""
    if not root.is_dir():
        return
    left: dict[str, int | None] = {}
    for part in sorted(root.iterdir()):
        if (part / "collection.json").is_file():
            left[part.name] = None
        else:
            shutil.rmtree(part, ignore_errors=True)
    if left:
        points = store.adopt_parts(collection, left)
        logger.info("adopted %d points that an interrupted import had sealed", points)


def _run(
    tasks: list[PartTask], total: int, progress: ProgressCallback | None
) -> dict[int, tuple[int, int]]:
    """Run each task in a process of its own (``python -m ilias.indexing.feature_parts``:
    not multiprocessing, whose children import the caller's main script again); their
    row counts summed into ``progress``; per task, the points it loaded and the points its
    part holds. A process's error is raised here (the others are
    stopped; their sealed segments are adopted by the next import)."""
    messages: queue.Queue[tuple[int, str, Any]] = queue.Queue()
    processes: list[subprocess.Popen[bytes]] = []
    done_rows = [0] * len(tasks)
    loaded: dict[int, tuple[int, int]] = {}
    try:
        for task in tasks:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            processes.append(process)
            threading.Thread(target=_relay, args=(task.index, process, messages),
                             name=f"import-part-{task.index}", daemon=True).start()  # fmt: skip
            assert process.stdin is not None
            process.stdin.write(pickle.dumps(task))
            process.stdin.close()
        while len(loaded) < len(tasks):
            index, kind, value = messages.get()
            if kind == "rows":
                done_rows[index] = value
                if progress:
                    progress(sum(done_rows), total)
            elif kind == "done":
                loaded[index] = value
            elif kind == "error":
                raise pickle.loads(value)  # written by our own child process
            elif index not in loaded:  # "ended" before "done": killed
                raise StoreError(
                    f"import process {index} ended with exit code {value} (killed, or out of "
                    "memory: give fewer --workers); run the same command again to resume"
                )
        for process in processes:
            process.wait()
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
            process.wait()
    return loaded


def _relay(index: int, process: subprocess.Popen[bytes], messages: queue.Queue[Any]) -> None:
    """A child's messages (pickled, one per line of its stdout, hex) into ``messages``."""
    assert process.stdout is not None
    for line in process.stdout:
        kind, value = pickle.loads(bytes.fromhex(line.decode()))
        messages.put((index, kind, value))
    messages.put((index, "ended", process.wait()))


def _send(kind: str, value: Any) -> None:
    """One message to the parent, on the channel ``__main__`` set aside."""
    _channel.write(pickle.dumps((kind, value)).hex() + "\n")
    _channel.flush()


def _run_part(task: PartTask) -> None:
    """One process's part: create (or reopen) the part collection, write its ranges, seal
    it and build its payload indexes."""
    from ilias.indexing.store import CollectionConfig
    from ilias.indexing.store.edge import EdgeStore

    try:
        began = time.perf_counter()
        with EdgeStore(task.root) as store:
            if not store.collection_exists(task.name):
                store.create_collection(task.name, CollectionConfig.from_dict(task.config))
            writer = RowWriter(store, task.name, task.encoder, adaptation_layer(task.encoder),
                               task.known, task.chunk)  # fmt: skip
            done = 0
            for rows in task.ranges:
                ids = read_feature_ids(rows.path)[rows.start : rows.stop]

                def report(end: int, done: int = done) -> None:
                    _send("rows", done + end)

                writer.write(rows, ids, task.present.intersection(ids), report)
                done += rows.rows
            store.finish_load(task.name)
            points = store.count(task.name)
        logger.info("part %d: %d points in %.1f s", task.index, writer.loaded,
                    time.perf_counter() - began)  # fmt: skip
        _send("done", (writer.loaded, points))
    except BaseException as error:  # every failure reaches the parent
        _send("error", _pickled(error))


def _pickled(error: BaseException) -> bytes:
    """The error as the parent will raise it: itself where it pickles (the project's
    errors do), else one ``StoreError`` line naming it."""
    if isinstance(error, IliasError | KeyboardInterrupt):
        try:
            return pickle.dumps(error)
        except Exception:  # an error whose arguments do not pickle
            pass
    return pickle.dumps(StoreError(f"an import process failed: {type(error).__name__}: {error}"))


def _end_with_parent() -> None:
    """Linux: this process is killed when the one that started it dies (a killed import
    leaves no writer behind to hold a part's lock against the rerun)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent died before the line above
            sys.exit(1)


if __name__ == "__main__":
    _end_with_parent()
    # The messages get stdout to themselves: what anything else prints goes to stderr.
    _channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _run_part(pickle.loads(sys.stdin.buffer.read()))
