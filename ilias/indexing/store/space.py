"""Disk room for an embedded store, measured before each step that can allocate, because a
full disk under a memory-mapped file is SIGBUS, not an error.

Qdrant Edge keeps its segments and its write-ahead log in memory-mapped files, created at
their full size with holes: 32 MiB WAL segments, 32 MiB vector chunks and payload pages,
1-4 MiB payload index pages. A page gets its disk block when it is first written (on
tmpfs, also when it is first read). When the file system has no block left, the kernel
answers that memory access with SIGBUS: the process dies with exit 135 and no message.
Opening a collection fills pages too (the WAL's next segment, preloaded storage), so
every later command on that store died the same way until space was freed. No Python
code can catch a SIGBUS, so the store makes sure it never happens:

    room = free bytes of the file system - the holes of the collection's files

(the holes are what its existing mappings can still allocate; ``holes``). Then:

- opening a collection needs ``OPEN_MARGIN`` of room (a new WAL segment, small files);
- writing a batch needs ``WRITE_MARGIN`` plus twice the batch (once in the WAL, once in
  the segment). During one batch, a new file of each kind may appear (WAL segment, vector
  chunk, payload page: 32 MiB each), so a batch is refused while the room left after it
  could fall below ``OPEN_MARGIN``: a refused write leaves a collection that opens;
- creating a collection needs ``FRESH_COLLECTION`` more (what an empty one takes);
- building the index needs 1.5 times the size of the segments (the optimizer writes the
  new segment, with its int8 copies and graph, next to the loaded one) plus
  ``OPEN_MARGIN``;
- a load, before it starts, needs the sizing of its points (``layout.sizing``) twice,
  for the same reason.

This module is a leaf (the standard library only).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MIB = 1 << 20
OPEN_MARGIN = 64 * MIB
WRITE_MARGIN = OPEN_MARGIN + 3 * 32 * MIB
# An empty Edge collection with ilias's payload indexes: 146 MiB of files (48 MiB of them
# written at creation, the rest holes that the first writes and opens fill), measured at
# d = 512 and d = 1280 on tmpfs.
FRESH_COLLECTION = 160 * MIB


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or
    its nearest existing parent: a store folder not created yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def holes(folder: Path) -> int:
    """Bytes the files under ``folder`` may still allocate: their sizes less the blocks
    they hold (sparse files that Edge memory-maps)."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                found = os.stat(os.path.join(directory, name))
            except OSError:  # removed meanwhile (a segment being replaced)
                continue
            total += max(0, found.st_size - found.st_blocks * 512)
    return total


def allocated(folder: Path) -> int:
    """Bytes the files under ``folder`` hold on disk."""
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total


def mib(n: int) -> str:
    return f"{n / MIB:,.0f} MiB" if abs(n) < 10 * 1024 * MIB else f"{n / (1024 * MIB):,.1f} GiB"
