"""WebDataset tar shards: the form the ILIAS distractors (YFCC100M) are distributed in.

A shard is one ``.tar`` of samples; a sample is the members that share a key (WebDataset's
rule: the member path up to the first dot of its file name), one of which is the image.
Shards are named by a folder of ``.tar`` files, a glob, a list of paths, or the brace
pattern the reference uses (``yfcc100m/{00000..00049}.tar``), locally or at any fsspec URL
(``https://...``, ``s3://...`` where the fsspec backend is installed).

Ids are exactly the reference's (``feature_extraction/src/datasets/generators.py``,
``merge_id_shard``): ``<shard file name>/<sample key>``, e.g. ``00000.tar/8a2f...``, so
``image_ids/distractor_ids.txt.gz`` and reference similarity files name the same images.
As in the reference, a sample is an image when it has a ``jpg`` member (``filter_no_image``).

Reading streams the tar once, front to back (``tarfile`` stream mode): no index, no seek,
so a remote shard is read as it downloads. A member that is not part of an image sample is
skipped and counted; a truncated or corrupt tar ends that shard with what was read so far
and the reason, counted, never fatal. Selections (mini-ILIAS) keep the samples whose key
is listed, as the reference's selection filter does (``in_shortlist``: the key, in any
shard), or whose full id (``<shard>/<key>``) is listed.
"""

from __future__ import annotations

import glob
import gzip
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ilias.errors import DatasetError
from ilias.loader import braces
from ilias.loader.records import Record, Role

IMAGE_MEMBER = "jpg"  # the reference keeps samples with a .jpg member
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
# A load is one partition per shard and the driver lists them all: 100 times the 1,000
# shards of the ILIAS distractors is a generous bound, and it refuses a typo such as
# {00000..99999999} before any of its 100 million names is made.
MAX_SHARDS = 100_000
SHOWN_MISSING = 3  # missing shards named in the error (the rest are counted)


def expand_shards(spec: str | Path | Iterable[str | Path]) -> list[str]:
    """The shard locations ``spec`` names, in order.

    A folder: its ``.tar`` (and ``.tar.gz`` / ``.tgz``) files, sorted. A brace pattern:
    every expansion (local ones must exist), counted first: a pattern naming more than
    ``MAX_SHARDS`` is refused before any name is made (``ilias.loader.braces``). A glob:
    its sorted matches. A URL (``scheme://``): as written, brace patterns expanded. A list:
    each item expanded in turn.
    """
    if not isinstance(spec, str | Path):
        return [shard for item in spec for shard in expand_shards(item)]
    text = str(spec)
    if braces.has_braces(text):
        return _expand_pattern(text)
    if "://" in text:
        return [text]
    path = Path(text).expanduser()
    if path.is_dir():
        shards = sorted(str(p) for p in path.iterdir() if is_shard_name(p.name))
        if not shards:
            raise DatasetError(f"{path} holds no .tar shards")
        return shards
    if any(ch in text for ch in "*?["):
        shards = sorted(glob.glob(str(path)))
        if not shards:
            raise DatasetError(f"{text} matches no shard")
        return shards
    if not path.is_file():
        raise DatasetError(f"{path}: no such shard, folder or pattern")
    return [str(path)]


def _expand_pattern(text: str) -> list[str]:
    """A brace pattern's shards: counted, then expanded one name at a time; local shards
    that are missing are named (the first few) and counted, never listed whole."""
    total = braces.count(text)
    if total > MAX_SHARDS:
        raise DatasetError(
            f"{text}: the pattern names {total:,} shards, more than the {MAX_SHARDS:,} a load "
            "takes; narrow the pattern (the ILIAS distractors are 1,000 shards of 100K)"
        )
    shards: list[str] = []
    missing: list[str] = []
    n_missing = 0
    for name in braces.expand(text):
        if "://" not in name and not Path(name).expanduser().is_file():
            n_missing += 1
            if len(missing) < SHOWN_MISSING:
                missing.append(name)
            continue
        shards.append(name)
    if n_missing:
        more = f" and {n_missing - len(missing):,} more" if n_missing > len(missing) else ""
        raise DatasetError(
            f"{text}: {n_missing:,} of {total:,} shards are missing ({', '.join(missing)}"
            f"{more}); download them or narrow the pattern"
        )
    return shards


def is_shard_name(name: str) -> bool:
    """A WebDataset shard file: ``.tar``, or gzip-compressed ``.tar.gz`` / ``.tgz`` (read
    as WebDataset reads them: ``tarfile`` decompresses the stream)."""
    return name.endswith(SHARD_SUFFIXES)


def is_shard_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names tar shards rather than image files: a ``.tar`` / ``.tar.gz``
    path, a brace pattern or glob of them, a URL, or a folder holding shard files."""
    text = str(spec)
    if "://" in text or braces.has_braces(text) or is_shard_name(text):
        return True
    path = Path(text).expanduser()
    if path.is_dir():
        return any(is_shard_name(p.name) and p.is_file() for p in path.iterdir())
    return False


def shard_name(location: str) -> str:
    """The shard's file name, the first part of its samples' ids (``00000.tar``)."""
    return location.rstrip("/").rsplit("/", 1)[-1]


def sample_key(member: str) -> tuple[str, str]:
    """WebDataset's split of a member path: ``(key, extension)``; the key keeps folders and
    ends at the first dot of the file name (``a/b.c.jpg`` -> ``("a/b", "c.jpg")``)."""
    folder, _, name = member.rpartition("/")
    stem, dot, extension = name.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (extension.lower() if dot else "")


class SampleFilter(Protocol):
    """What a shard reader asks of a selection: is this sample of this shard listed?"""

    def keeps(self, shard: str, key: str) -> bool: ...


@dataclass(frozen=True)
class Selection:
    """A selection list as read: its key-only lines and its full-id lines, kept apart.

    A key-only line (``s0k002``, the reference's form: its filter compares the WebDataset
    ``__key__``) matches that key in any shard. A full-id line (``99999.tar/s0k002``: a
    shard file name, then the key) matches that sample of that shard only, so a list of
    ilias ids selects exactly those ids.
    """

    keys: frozenset[str]
    ids: frozenset[str]

    def __len__(self) -> int:
        return len(self.keys) + len(self.ids)

    def lines(self) -> frozenset[str]:
        return self.keys | self.ids

    def keeps(self, shard: str, key: str) -> bool:
        return key in self.keys or f"{shard}/{key}" in self.ids


def split_id(dataset_id: str) -> tuple[str | None, str]:
    """``(shard, key)`` of a tar sample's id (``00000.tar/a/b`` -> ``("00000.tar", "a/b")``);
    ``(None, id)`` for any other id (a folder image's ``distractors/x.jpg``)."""
    shard, slash, key = dataset_id.partition("/")
    return (shard, key) if slash and key and is_shard_name(shard) else (None, dataset_id)


def read_selection(path: str | Path) -> Selection:
    """A selection list (mini-ILIAS): one sample key or full id per line, plain or ``.gz``
    (see ``Selection`` for what each form matches)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such selection file")
    opener = gzip.open if path.suffix == ".gz" else open
    keys: set[str] = set()
    ids: set[str] = set()
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                text = line.strip()
                if text:
                    (ids if split_id(text)[0] is not None else keys).add(text)
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the selection ({error})") from error
    if not keys and not ids:
        raise DatasetError(f"{path}: the selection is empty")
    return Selection(frozenset(keys), frozenset(ids))


@dataclass
class ShardReport:
    """What reading one shard gave: samples kept, and what was skipped and why."""

    shard: str
    samples: int = 0
    not_selected: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    error: str | None = None  # a truncated or unreadable shard: why it ended early

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_shard(
    location: str,
    report: ShardReport | None = None,
    selection: SampleFilter | None = None,
    role: Role = Role.DISTRACTOR,
) -> Iterator[Record]:
    """The image samples of one shard as records (the image bytes as ``source``).

    ``report`` (optional) collects counts and the reason a damaged shard ended early.
    """
    import fsspec

    report = report if report is not None else ShardReport(location)
    name = shard_name(location)
    pending: dict[str, dict[str, bytes]] = {}
    current: str | None = None

    def finish(key: str) -> Iterator[Record]:
        members = pending.pop(key)
        if IMAGE_MEMBER not in members:
            for extension in members:
                report.skip(f"not an image sample (.{extension})" if extension else "no extension")
            return
        if selection is not None and not selection.keeps(name, key):
            report.not_selected += 1
            return
        for extension in members:
            if extension != IMAGE_MEMBER:
                report.skip(f"other member of an image sample (.{extension})")
        report.samples += 1
        sample_id = f"{name}/{key}"
        payload = {"id": sample_id, "role": role.value, "shard": name}
        yield Record(sample_id, members[IMAGE_MEMBER], payload)

    try:
        with fsspec.open(location, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, extension = sample_key(member.name)
                if current is not None and key != current and current in pending:
                    yield from finish(current)
                current = key
                members = pending.setdefault(key, {})  # before reading: a cut read counts
                handle = tar.extractfile(member)
                members[extension] = handle.read() if handle else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        report.error = f"{type(error).__name__}: {error}".splitlines()[0]
    for key in list(pending):
        if report.error is None:
            yield from finish(key)
        else:  # the last sample of a damaged shard may be cut: not trusted
            report.skip("sample cut by a damaged shard")
            pending.pop(key)
