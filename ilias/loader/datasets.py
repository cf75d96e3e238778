"""Dataset readers: the ILIAS on-disk layout and plain image collections, as lazy records.

ILIAS layout (one folder per instance; the instance is the first path component of an id)::

    <root>/<instance>/query/Q000.jpg       image query, with Q000_bbox.txt ("x y w h" per line)
    <root>/<instance>/query/T000.txt       text query: the whole file is the query
    <root>/<instance>/pos/P000.jpg         positive, with P000_bbox.txt
    <root>/image_ids/positive_ids.txt      optional "id,scale,clutter" lines (reference format)

Distractors come from a separate folder or list file (YFCC100M in the real benchmark).
Nothing here opens an image: records carry paths and the extractor decodes them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ilias.errors import DatasetError
from ilias.loader.records import Record, Role, TextQuery
from ilias.loader.sources import Shard, TarShard, chunks, select_records, summarize_selection
from ilias.loader.webdataset import expand_shards, is_shard_spec

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Benchmark:
    """A retrieval benchmark: queries, the database they search, and the ground truth.

    ``database`` holds positives then distractors; queries are not part of it (as in ILIAS).
    ``ground_truth`` maps an instance to the ids of its positives.
    """

    name: str
    image_queries: list[Record]
    text_queries: list[TextQuery]
    database: list[Record]
    ground_truth: dict[str, frozenset[str]] = field(repr=False)

    def positives_for(self, query_id: str) -> frozenset[str]:
        """The relevant database ids of a query (an ILIAS id starts with its instance)."""
        return self.ground_truth.get(instance_of(query_id), frozenset())

    @property
    def n_positives(self) -> int:
        return sum(len(ids) for ids in self.ground_truth.values())


def instance_of(dataset_id: str) -> str:
    """ILIAS convention: the instance is the first path component of any id."""
    return dataset_id.split("/", 1)[0]


def read_boxes(path: Path) -> list[list[int]]:
    """The ``x y w h`` boxes of a bbox file, each as ``[x, y, w, h]``; [] if absent.

    ILIAS bbox files may hold several boxes (an object in parts). Faults are decided here,
    before any image is read: a line that is not four finite numbers refuses the dataset
    (one line naming file and line); a box with no area is skipped with a warning naming
    them.
    """
    if not path.is_file():
        return []
    boxes = []
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.replace(",", " ").split()]
        except ValueError:
            values = []
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise DatasetError(
                f"{path}:{line_number}: expected 'x y w h' (four finite numbers), got "
                f"{line.strip()!r}; fix or delete the file"
            )
        x, y, w, h = (round(v) for v in values)
        if w <= 0 or h <= 0:
            logger.warning("%s:%d: box %r has no area; skipped", path, line_number, line.strip())
            continue
        boxes.append([x, y, w, h])
    return boxes


def read_bbox(path: Path) -> list[int] | None:
    """Union of the boxes in a bbox file (``read_boxes``), as one ``[x, y, w, h]`` clipped
    at the image's top-left; None if absent or if every box was skipped (the query is then
    used whole). The reference crops queries to this union."""
    return union_box(read_boxes(path))


def union_box(boxes: list[list[int]]) -> list[int] | None:
    """The smallest ``[x, y, w, h]`` holding every box, clipped at 0; None for no box."""
    if not boxes:
        return None
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    return [max(0, x0), max(0, y0), x1 - max(0, x0), y1 - max(0, y0)]


def read_ilias(root: Path | str, distractors: Path | str | None = None) -> Benchmark:
    """Read an ILIAS-layout folder (and optionally a distractor folder or list file)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder; pass the folder that holds the instances")
    instance_dirs = sorted(p for p in root.iterdir() if (p / "query").is_dir())
    if not instance_dirs:
        raise DatasetError(
            f"{root} has no '<instance>/query/' folders, so it is not in the ILIAS layout; "
            "for a plain image collection use a folder or a list file without --distractors"
        )
    positive_info = _read_positive_info(root / "image_ids" / "positive_ids.txt")

    image_queries: list[Record] = []
    text_queries: list[TextQuery] = []
    positives: list[Record] = []
    ground_truth: dict[str, frozenset[str]] = {}
    for instance_dir in instance_dirs:
        instance = instance_dir.name
        for path in _images_in(instance_dir / "query", recursive=False):
            image_queries.append(_benchmark_record(root, path, instance, Role.QUERY))
        for path in sorted((instance_dir / "query").glob("T*.txt")):
            text_queries.append(
                TextQuery(id=_relative_id(root, path), text=path.read_text(), instance=instance)
            )
        instance_positives = [
            _benchmark_record(root, path, instance, Role.POSITIVE, positive_info)
            for path in _images_in(instance_dir / "pos", recursive=False)
        ]
        positives.extend(instance_positives)
        ground_truth[instance] = frozenset(r.id for r in instance_positives)

    database = positives + (read_images(distractors, role=Role.DISTRACTOR) if distractors else [])
    logger.info(
        "ILIAS layout %s: %d instances, %d image queries, %d text queries, %d positives, "
        "%d distractors",
        root,
        len(instance_dirs),
        len(image_queries),
        len(text_queries),
        len(positives),
        len(database) - len(positives),
    )
    return Benchmark(root.name, image_queries, text_queries, database, ground_truth)


@dataclass(frozen=True)
class DatasetSource:
    """What ``ilias load`` reads: records the driver knows (paths), tar shards the workers
    read themselves, and the collection metadata that lets later commands (``ilias eval``)
    find the dataset again."""

    records: list[Record]
    metadata: dict[str, str]
    benchmark: Benchmark | None = None  # set for the ILIAS layout: queries and ground truth
    tar_shards: list[TarShard] = field(default_factory=list)

    def shards(self, chunk_size: int) -> list[Shard]:
        """Every unit of the load: chunks of the known records, then one per tar shard."""
        return [*chunks(self.records, chunk_size), *self.tar_shards]


def is_ilias_layout(path: Path | str) -> bool:
    """A folder holding at least one ``<instance>/query/`` folder."""
    path = Path(path)
    return path.is_dir() and any((p / "query").is_dir() for p in path.iterdir())


def open_dataset(
    path: Path | str, distractors: Path | str | None = None, select: Path | str | None = None
) -> DatasetSource:
    """What to load from ``path``, detected from what it holds.

    An ILIAS-layout folder gives its positives, then ``distractors`` (a folder or list file
    of images, or WebDataset tar shards: a folder of ``.tar``, a glob, a brace pattern, a
    URL), and remembers both as ``dataset`` / ``distractors`` metadata. Tar shards alone
    give a plain collection read shard by shard; any other folder or list file gives a
    plain image collection (``images`` metadata), which takes no distractors. ``select``
    (a selection list, mini-ILIAS) keeps only the listed distractors (or images of a
    plain shard collection).
    """
    if select is not None:
        summarize_selection(select)  # a missing or empty list fails here, before any work
    selection = str(Path(select).expanduser().resolve()) if select is not None else None
    if is_shard_spec(path) and not is_ilias_layout(path):
        if distractors:
            raise DatasetError(f"--distractors needs an ILIAS-layout dataset; {path} is not one")
        shards = [TarShard(s, Role.IMAGE, selection) for s in expand_shards(str(path))]
        return DatasetSource([], {"images": _spec_text(path)}, tar_shards=shards)
    path = Path(path)
    if is_ilias_layout(path):
        if distractors is not None and is_shard_spec(distractors):
            benchmark = read_ilias(path)
            locations = expand_shards(str(distractors))
            shards = [TarShard(s, Role.DISTRACTOR, selection) for s in locations]
            metadata = ilias_metadata(path, distractors)
            return DatasetSource(benchmark.database, metadata, benchmark, tar_shards=shards)
        benchmark = read_ilias(path, distractors)
        database = benchmark.database
        if selection is not None:
            positives = [r for r in database if r.payload.get("role") != Role.DISTRACTOR.value]
            chosen = select_records(database[len(positives) :], selection)
            database = positives + chosen
        return DatasetSource(database, ilias_metadata(path, distractors), benchmark)
    if distractors:
        raise DatasetError(f"--distractors needs an ILIAS-layout dataset; {path} is not one")
    records = read_images(path)
    if selection is not None:
        records = select_records(records, selection)
    return DatasetSource(records, {"images": str(path.resolve())})


def ilias_metadata(path: Path | str, distractors: Path | str | None = None) -> dict[str, str]:
    """What a collection loaded from an ILIAS folder records, so ``ilias eval`` finds the
    queries again: the ``dataset`` folder and, where given, the ``distractors``."""
    metadata = {"dataset": str(Path(path).resolve())}
    if distractors:
        metadata["distractors"] = _spec_text(distractors)
    return metadata


def _spec_text(spec: Path | str) -> str:
    """A local path resolved; a URL, brace pattern or glob as written."""
    text = str(spec)
    if "://" in text or any(ch in text for ch in "{*?["):
        return text
    return str(Path(text).expanduser().resolve())


def benchmark_for_collection(
    metadata: Mapping[str, object], dataset: Path | str | None = None
) -> Benchmark:
    """The benchmark whose queries a collection answers: ``dataset`` if given, else the
    ILIAS folder the collection was loaded from (its ``dataset`` metadata).

    Only the queries and ground truth matter here, so distractors are not listed again.
    """
    if dataset is not None:
        return read_ilias(dataset)
    if "dataset" not in metadata:
        raise DatasetError(
            "this collection was not loaded from an ILIAS-layout dataset; pass the dataset "
            "folder: ilias eval PATH"
        )
    return read_ilias(str(metadata["dataset"]))


def read_images(source: Path | str, role: Role = Role.IMAGE) -> list[Record]:
    """A plain collection: every image under a folder, or the paths listed in a text file.

    Ids are ``<folder name>/<relative path>`` so that two collections loaded into one
    Qdrant collection cannot collide; list files resolve relative paths against the list's
    own folder.
    """
    source = Path(source)
    if source.is_dir():
        paths: Iterable[Path] = _images_in(source, recursive=True)
        base = source.parent
    elif source.is_file():
        paths = _paths_in_list(source)
        base = source.parent
    else:
        raise DatasetError(f"{source} does not exist; pass an image folder or a text file of paths")
    records = []
    for path in paths:
        record_id = _relative_id(base, path) if path.is_relative_to(base) else str(path)
        records.append(
            Record(record_id, path, {"id": record_id, "path": str(path), "role": role.value})
        )
    if not records:
        raise DatasetError(f"{source} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return records


def read_labelled(source: Path | str) -> list[Record]:
    """Images with a class and a domain, for training adaptation layers (UnED-style).

    Either a folder ``<root>/<domain>/<class>/<image>`` (any depth below the class), or a CSV
    file of ``path,class,domain`` lines (relative paths resolve against the file's folder).
    The payload holds ``class`` and ``domain``; a training class is the (class, domain) pair.
    """
    source = Path(source)
    rows: list[tuple[Path, str, str]] = []
    if source.is_dir():
        for domain_dir in sorted(p for p in source.iterdir() if p.is_dir()):
            for class_dir in sorted(p for p in domain_dir.iterdir() if p.is_dir()):
                rows += [(p, class_dir.name, domain_dir.name) for p in _images_in(class_dir, True)]
    elif source.is_file():
        for number, line in enumerate(source.read_text().splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = [part.strip() for part in line.rsplit(",", 2)]
            if len(parts) != 3:
                raise DatasetError(f"{source}:{number}: expected 'path,class,domain', got {line!r}")
            path = Path(parts[0])
            rows.append((path if path.is_absolute() else source.parent / path, parts[1], parts[2]))
    else:
        raise DatasetError(f"{source} does not exist; pass <root>/<domain>/<class>/ or a CSV")
    if not rows:
        raise DatasetError(f"{source} holds no labelled images")
    base = source if source.is_dir() else source.parent
    return [
        Record(
            _relative_id(base, path) if path.is_relative_to(base) else str(path),
            path,
            {"path": str(path), "class": label, "domain": domain},
        )
        for path, label, domain in rows
    ]


def _benchmark_record(
    root: Path,
    path: Path,
    instance: str,
    role: Role,
    positive_info: dict[str, tuple[float, int]] | None = None,
) -> Record:
    record_id = _relative_id(root, path)
    payload: dict = {"id": record_id, "path": str(path), "instance": instance, "role": role.value}
    boxes = read_boxes(path.with_name(f"{path.stem}_bbox.txt"))
    bbox = union_box(boxes)
    if bbox is not None:
        payload["bbox"] = bbox  # the union: what cropping uses
    if len(boxes) > 1:
        payload["boxes"] = boxes  # each part: what masking keeps
    if positive_info and record_id in positive_info:
        payload["scale"], payload["clutter"] = positive_info[record_id]
    return Record(record_id, path, payload)


def _read_positive_info(path: Path) -> dict[str, tuple[float, int]]:
    """``id,scale,clutter`` lines (the reference's ``positive_ids.txt``); a malformed line
    refuses the dataset, naming file and line, before any image is read."""
    if not path.is_file():
        return {}
    info = {}
    for line_number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            scale, clutter = float(parts[1]), float(parts[2])
            valid = len(parts) == 3 and bool(parts[0]) and math.isfinite(scale)
            valid = valid and clutter == int(clutter)
        except (IndexError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise DatasetError(
                f"{path}:{line_number}: expected 'id,scale,clutter' (a finite scale, a whole "
                f"clutter count), got {line.strip()!r}; fix the line"
            )
        info[parts[0]] = (scale, int(clutter))
    return info


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _paths_in_list(list_file: Path) -> list[Path]:
    try:
        text = list_file.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as error:
        reason = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error
        raise DatasetError(
            f"{list_file}: cannot read it as a list of image paths ({reason}); pass an image "
            "folder, a text file of paths, or WebDataset shards (.tar, .tar.gz)"
        ) from error
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            path = Path(line)
            paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def _relative_id(base: Path, path: Path) -> str:
    return path.relative_to(base).as_posix()
