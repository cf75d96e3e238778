"""Sources as shards: the units a load is cut into, read by the worker that encodes them.

A source is a list of shards; one shard is one Dask partition and one unit of resume.

- ``TarShard``: one WebDataset ``.tar`` (a YFCC100M distractor shard of the reference). Only
  its location travels to the worker, which streams the tar itself; the driver never
  holds its records. A load records every completely stored tar shard in the collection's
  shard ledger, so a rerun skips it without reading it.
- ``RecordChunk``: a fixed-size chunk of records the driver already knows as paths (the
  ILIAS core folder, an image folder, a list file). Resume is by id: ids already stored
  are dropped before any pixel is decoded.

A selection list (mini-ILIAS: sample keys, plain or ``.gz``) restricts distractors: a tar
shard's worker reads the list once per process (cached by path) and keeps the listed keys
in any shard, exactly as the reference's shortlist filter does, and the listed full ids
(``<shard>.tar/<key>``) in their own shard only; folder distractors are kept when their
id or its file stem is listed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilias.loader.records import Record, Role
from ilias.loader.webdataset import (
    Selection,
    ShardReport,
    read_selection,
    read_shard,
    shard_name,
    split_id,
)


@dataclass(frozen=True)
class RecordChunk:
    """Records known in the driver, encoded as one partition."""

    name: str
    records: tuple[Record, ...]

    def read(self, report: ShardReport) -> Iterator[Record]:
        report.samples = len(self.records)
        return iter(self.records)


@dataclass(frozen=True)
class TarShard:
    """One WebDataset tar, read where it is encoded; ``selection`` is a list file's path."""

    location: str
    role: Role = Role.DISTRACTOR
    selection: str | None = None

    @property
    def name(self) -> str:
        return shard_name(self.location)

    def read(self, report: ShardReport) -> Iterator[Record]:
        listed = cached_selection(self.selection) if self.selection else None
        return read_shard(self.location, report, selection=listed, role=self.role)


Shard = RecordChunk | TarShard


class KeySet:
    """A large set of sample keys held as sorted 64-bit hashes: 8 bytes per key instead of
    about 100 for a Python set of strings, so every worker of a mini-ILIAS load (5M keys)
    holds 40 MB, not 500 MB. Two keys share a hash with probability about 2^-64 per pair:
    a listed key is always found; an unlisted one is wrongly kept with negligible odds."""

    def __init__(self, keys: frozenset[str]):
        self._hashes = np.sort(np.fromiter((_hash(k) for k in keys), np.uint64, len(keys)))

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        value = np.uint64(_hash(key))
        at = int(np.searchsorted(self._hashes, value))
        return at < len(self._hashes) and self._hashes[at] == value


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


@dataclass(frozen=True)
class HashedSelection:
    """A ``Selection`` held as two ``KeySet``: what a worker filters its shards with."""

    keys: KeySet
    ids: KeySet

    def keeps(self, shard: str, key: str) -> bool:
        return key in self.keys or (len(self.ids) > 0 and f"{shard}/{key}" in self.ids)


def cached_selection(path: str) -> HashedSelection:
    """A selection list read once per process and file version (every shard of a load
    shares it; a list rewritten in place is read again)."""
    return _key_set(path, _stamp(path))


@functools.lru_cache(maxsize=4)
def _key_set(path: str, stamp: tuple[int, int] | None) -> HashedSelection:
    selection = read_selection(path)
    return HashedSelection(KeySet(selection.keys), KeySet(selection.ids))


@dataclass(frozen=True)
class SelectionSummary:
    """What the driver needs of a selection list: its tag and how many keys it lists."""

    tag: str
    keys: int


def summarize_selection(path: str | Path) -> SelectionSummary:
    """The list's tag and size, from one read per file version (a missing or empty list
    is the ``read_selection`` error)."""
    return _summary(str(path), _stamp(str(path)))


@functools.lru_cache(maxsize=8)
def _summary(path: str, stamp: tuple[int, int] | None) -> SelectionSummary:
    selection = read_selection(path)
    return SelectionSummary(tag_of(path, selection), len(selection))


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        found = Path(path).expanduser().stat()
    except OSError:
        return None  # read_selection names the missing file
    return found.st_size, found.st_mtime_ns


def selection_tag(path: str | Path) -> str:
    """A stable name for a selection list, from its keys (not its file name or order):
    ``<file stem>-<8 hex digits>``, e.g. ``mini_ilias_yfcc-1a2b3c4d``."""
    return summarize_selection(path).tag


def tag_of(path: str | Path, selection: Selection) -> str:
    """``selection_tag`` of a selection already read from ``path`` (its lines, sorted)."""
    digest = hashlib.sha1("\n".join(sorted(selection.lines())).encode()).hexdigest()[:8]
    stem = Path(path).name.split(".")[0] or "selection"
    return f"{stem}-{digest}"


def select_records(records: Sequence[Record], path: str | Path) -> list[Record]:
    """Folder or list distractors kept by a selection list (see the module docstring)."""
    selection = read_selection(path)
    return [r for r in records if selected(r.id, selection)]


def selected(dataset_id: str, selection: Selection) -> bool:
    """Whether a distractor id is listed. A tar sample (``<shard>.tar/<key>``): by its
    key on a key-only line (the reference's rule), or by its full id. Any other id (a
    folder image): by the whole id, or by its file stem."""
    shard, key = split_id(dataset_id)
    if shard is not None:
        return selection.keeps(shard, key)
    stem = key.rpartition("/")[2].split(".")[0]
    return key in selection.keys or stem in selection.keys


def chunks(records: Sequence[Record], size: int, prefix: str = "records") -> list[RecordChunk]:
    """Fixed-size chunks of driver-known records (the last one shorter)."""
    return [
        RecordChunk(f"{prefix}:{start // size:05d}", tuple(records[start : start + size]))
        for start in range(0, len(records), size)
    ]
