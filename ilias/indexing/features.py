"""Features in the ILIAS reference's HDF5 form, in and out of collections.

The reference's extraction (``feature_extraction/extract.py``) writes one HDF5 file per
part of the benchmark, named ``<name>_<part>.hdf5`` (``name`` defaults to ``features``):
``features_image_queries.hdf5``, ``features_text_queries.hdf5``,
``features_positives.hdf5``, and the distractors split over numbered files
``features_distractors_00000.hdf5``, ``..._00001.hdf5`` (a fixed number of tar shards
each). Every file holds an ``index`` dataset of ASCII ids and a ``features`` dataset of one
row per id, float16 by default; queries and positives are sorted by id. Its kNN search
(``knn_search/search.py``) reads a query file, the positives file and ``--total_distractors``
distractor files from the template ``features_distractors_{idx}.hdf5``, positives first.

Here: ``write_features`` / ``read_features`` for one file; ``import_features`` loads
files into a collection (what ``ilias load --features`` runs), streaming each file in
large chunks and taking the payload from the dataset's own records where given, so the
points equal those of an image load of the same data; ``export_database`` writes a
collection's stored vectors back out as the positives file and numbered distractor files
(``ilias export``; the queries, which need the encoder, are added by
``ilias.query.export_features``).

Ids keep the reference's form (``<instance>/pos/P000.jpg``, ``<shard>.tar/<key>``), so
points, similarity files and the reference's id lists agree. Non-ASCII characters, which
an ASCII ``index`` cannot hold, are escaped as the reference escapes them (``é`` ->
``#U00e9``, ``東`` -> ``#U6771``, beyond U+FFFF ``\\\\U0001f600``) and unescaped on reading.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ilias import __version__
from ilias.errors import DatasetError, StoreError, VectorValidationError
from ilias.indexing.prefetch import prefetched
from ilias.indexing.store import CollectionConfig, Store, validate_vectors
from ilias.indexing.store.layout import check_storage
from ilias.indexing.store.search_index import check_index, resolve_index
from ilias.loader.records import Record, Role

ADAPTATION_MARK = "|adapt="  # as ilias.indexing.encoders (not imported: it loads torch)

FEATURES_NAME = "features"  # the reference's --hdf5_name default
PARTS = ("image_queries", "text_queries", "positives", "distractors")
DISTRACTORS_PER_FILE = 1_000_000  # the reference: 10 tar shards of 100K images per file
CHUNK_ROWS = 16_384  # rows read, converted and upserted at once by an import
# A WAL-less import checkpoints (seals) after a file once this many rows came since the
# last one: every file of the reference's layout (1M rows), not its small positives file.
CHECKPOINT_ROWS = 500_000
# A WAL-less import of at least this many rows is written by several processes at once
# (one per core), each taking at least this many rows (see import_processes).
PARALLEL_ROWS = 1_000_000
# The share of the RAM the processes of a parallel import may hold between them.
PART_MEMORY_SHARE = 0.5

ProgressCallback = Callable[[int, int], None]


def feature_file_name(part: str, number: int | None = None, name: str = FEATURES_NAME) -> str:
    """The reference's file name of one part: ``features_positives.hdf5``; distractor
    files are numbered, ``features_distractors_00003.hdf5`` (``number`` 3)."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}: one of {', '.join(PARTS)}")
    return f"{name}_{part}.hdf5" if number is None else f"{name}_{part}_{number:05d}.hdf5"


# ------------------------------------------------------------------------- ids


def encode_id(dataset_id: str) -> str:
    """An id exactly as the reference writes it into the ASCII ``index``.

    The reference escapes with Python's ``unicode_escape``, takes the text of the resulting
    bytes literal (which doubles every backslash, and escapes a single quote when the id
    holds both quote marks) and spells ``\\\\u`` as ``#U`` and ``\\\\x`` as ``#U00``.
    Per character that is: printable ASCII unchanged; ``é`` -> ``#U00e9``, ``東`` ->
    ``#U6771``, a control character or DEL -> ``#U0001`` / ``#U007f``; beyond U+FFFF two
    backslashes, ``U`` and 8 digits; tab, newline and carriage return two backslashes and
    ``t`` / ``n`` / ``r``; a backslash four backslashes, except that a backslash followed by
    a letter ``u`` or ``x`` becomes two backslashes and ``#U`` or ``#U00`` (the reference's
    text replacement also matches there).
    """
    both_quotes = "'" in dataset_id and '"' in dataset_id
    plain = dataset_id.isascii() and dataset_id.isprintable() and "\\" not in dataset_id
    if plain and not both_quotes:
        return dataset_id
    out = []
    index, length = 0, len(dataset_id)
    while index < length:
        char = dataset_id[index]
        code = ord(char)
        index += 1
        if char == "\\":
            following = dataset_id[index : index + 1]
            if following in ("u", "x"):
                out.append("\\\\#U" if following == "u" else "\\\\#U00")
                index += 1
            else:
                out.append("\\" * 4)
        elif char in _NAMED_CONTROLS:
            out.append("\\\\" + _NAMED_CONTROLS[char])
        elif char == "'" and both_quotes:
            out.append("\\'")
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code <= 0xFFFF:
            out.append(f"#U{code:04x}")
        else:
            out.append(f"\\\\U{code:08x}")
    return "".join(out)


_NAMED_CONTROLS = {"\t": "t", "\n": "n", "\r": "r"}
_NAMED_BACK = {v: k for k, v in _NAMED_CONTROLS.items()}
# One escape of ``encode_id`` each, longest first where they share a start.
_ESCAPED = re.compile(
    r"(?P<backslash>\\{4})|(?P<bx>\\{2}#U00)|(?P<bu>\\{2}#U)"
    r"|\\{2}(?P<named>[tnr])|\\{2}U(?P<wide>[0-9a-f]{8})|(?P<quote>\\')|#U(?P<code>[0-9a-f]{4})"
)


def _escaped_by_reference(code: int) -> bool:
    """Whether the reference writes this character as ``#U`` and 4 digits."""
    return (code < 0x20 and chr(code) not in _NAMED_CONTROLS) or code >= 0x7F


def decode_id(stored: str) -> str:
    """The dataset id an ``index`` entry stands for (undoes ``encode_id``). Text the
    reference never writes as an escape stays as it is (``#U0041``: ``A`` is never
    escaped). Where the reference's escaping itself maps two ids to one text, the escape
    wins: a literal ``#U00e9`` in an id reads back as ``é``, and a backslash followed by
    ``u00`` as a backslash followed by ``x``."""
    if "\\" not in stored and "#U" not in stored:
        return stored

    def unescape(match: re.Match[str]) -> str:
        kind = match.lastgroup
        if kind == "backslash":
            return "\\"
        if kind == "bx":
            return "\\x"
        if kind == "bu":
            return "\\u"
        if kind == "named":
            return _NAMED_BACK[match.group("named")]
        if kind == "quote":
            return "'"
        if kind == "wide":
            code = int(match.group("wide"), 16)
            return chr(code) if 0xFFFF < code <= 0x10FFFF else match.group(0)
        code = int(match.group("code"), 16)
        return chr(code) if _escaped_by_reference(code) else match.group(0)

    return _ESCAPED.sub(unescape, stored)


def role_of(dataset_id: str) -> tuple[Role, str | None]:
    """The role (and instance) an ILIAS-form id names: ``x/pos/..`` a positive of ``x``,
    ``x/query/..`` a query of ``x`` (image or text), anything else (``00000.tar/<key>``)
    a distractor."""
    parts = dataset_id.split("/")
    if len(parts) >= 3 and parts[1] == "pos":
        return Role.POSITIVE, parts[0]
    if len(parts) >= 3 and parts[1] == "query":
        return Role.QUERY, parts[0]
    return Role.DISTRACTOR, None


# ------------------------------------------------------------------------- one file


@dataclass(frozen=True)
class FeatureFile:
    """One HDF5 feature file: ids and their descriptors (float32 rows)."""

    path: Path
    ids: list[str]
    features: np.ndarray
    encoder: str | None = None  # the ``encoder`` attribute ilias writes (the reference: none)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


@dataclass(frozen=True)
class FeatureHeader:
    """What a feature file holds, read without its rows: checked before anything is loaded."""

    path: Path
    rows: int
    dim: int
    dtype: np.dtype


def write_features(
    path: Path | str,
    ids: Sequence[str],
    features: np.ndarray,
    *,
    fp16: bool = True,
    compression: int | None = None,
    encoder: str | None = None,
) -> Path:
    """Write ``ids`` and ``features`` as the reference does (``index`` ASCII, ``features``
    float16 unless ``fp16=False``; ``compression``: a gzip level); ``encoder`` is kept as
    an attribute of the file (the reference writes none; readers check it where given)."""
    import h5py

    path = Path(path)
    array = np.asarray(features, dtype=np.float16 if fp16 else np.float32)
    if array.ndim != 2 or len(array) != len(ids):
        raise DatasetError(f"{path}: {len(ids)} ids for features of shape {array.shape}")
    with h5py.File(path, "w") as out:
        out.create_dataset(
            "index", data=[encode_id(i) for i in ids], dtype=h5py.string_dtype("ascii")
        )
        out.create_dataset(
            "features",
            data=array,
            dtype=array.dtype,
            compression="gzip" if compression else None,
            compression_opts=compression,
        )
        if encoder:
            out.attrs["encoder"] = encoder
    return path


def inspect_features(path: Path | str) -> FeatureHeader:
    """Check one reference feature file from its metadata alone; every fault is one line
    naming the file (missing, not HDF5, a dataset missing, lengths that differ)."""
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such feature file")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path} is not an HDF5 file (expected 'index' and 'features')")
    with h5py.File(path, "r") as found:
        missing = [name for name in ("index", "features") if name not in found]
        if missing:
            raise DatasetError(
                f"{path}: no {' or '.join(repr(m) for m in missing)} dataset; a reference "
                "feature file holds 'index' (ids) and 'features' (one row per id)"
            )
        index, features = found["index"], found["features"]
        if len(index.shape) != 1 or h5py.check_string_dtype(index.dtype) is None:
            raise DatasetError(f"{path}: 'index' is not a list of string ids")
        if len(features.shape) != 2 or len(features) != len(index):
            raise DatasetError(
                f"{path}: 'index' holds {len(index)} ids but 'features' has shape "
                f"{features.shape}; the file is incomplete or not from the reference's "
                "extraction"
            )
        return FeatureHeader(path, int(features.shape[0]), int(features.shape[1]), features.dtype)


def read_feature_ids(path: Path | str) -> list[str]:
    """The dataset ids of a feature file, in row order (escapes undone); repeated ids are
    refused, naming the file."""
    import h5py

    path = Path(path).expanduser()
    with h5py.File(path, "r") as found:
        index = found["index"]
        encoding = h5py.check_string_dtype(index.dtype).encoding
        raw = index[:]
    try:
        texts = [i if isinstance(i, str) else bytes(i).decode(encoding) for i in raw.tolist()]
    except UnicodeDecodeError as error:
        bad = next(n for n, i in enumerate(raw.tolist()) if not _decodes(i, encoding))
        raise DatasetError(
            f"{path}: 'index' entry {bad} holds bytes that are not {encoding} text "
            f"({error.reason}); the reference writes ASCII ids, escaping other characters "
            "(#U00e9): re-export the file"
        ) from None
    ids = [decode_id(i) for i in texts]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: 'index' repeats ids; each id must appear once")
    return ids


def _decodes(value: object, encoding: str) -> bool:
    try:
        if not isinstance(value, str):
            bytes(value).decode(encoding)  # type: ignore[call-overload]
    except UnicodeDecodeError:
        return False
    return True


def read_features(path: Path | str) -> FeatureFile:
    """Read one reference feature file whole; every fault is one line naming the file."""
    import h5py

    header = inspect_features(path)
    ids = read_feature_ids(header.path)
    with h5py.File(header.path, "r") as found:
        features = np.asarray(found["features"][:], dtype=np.float32)
        encoder = found.attrs.get("encoder")
    if isinstance(encoder, bytes):
        encoder = encoder.decode("utf-8", "replace")
    return FeatureFile(header.path, ids, features, encoder if isinstance(encoder, str) else None)


def adaptation_layer(encoder: str | None) -> Any:
    """The linear adaptation layer an encoder spec ends in (``...|adapt=LAYER``), or None.

    Feature files hold the frozen encoder's descriptors (the reference applies its
    ``--lin_adapt_path`` after reading them), so a collection or a query set whose encoder
    names a layer gets the layer applied to the files' rows: the same vectors an image load
    with that spec gives."""
    if not encoder or ADAPTATION_MARK not in encoder:
        return None
    from ilias.indexing.adaptation import load_adaptation

    layer_path = encoder.partition(ADAPTATION_MARK)[2].partition("|head=")[0]
    return load_adaptation(layer_path)


def adapt_features(
    rows: np.ndarray, encoder: str | None, path: Path | str, layer: Any = None
) -> np.ndarray:
    """``rows`` through the adaptation layer of ``encoder`` (unchanged without one); a file
    whose width is not the layer's input is one line naming it."""
    layer = layer if layer is not None else adaptation_layer(encoder)
    if layer is None:
        return rows
    if rows.shape[1] != layer.d_in:
        raise DatasetError(
            f"{path}: {rows.shape[1]}-d features, but the adaptation layer of {encoder} "
            f"takes {layer.d_in}-d ones: give the frozen encoder's features"
        )
    return np.asarray(layer.apply_numpy(rows), dtype=np.float32)


def expand_feature_paths(patterns: Sequence[Path | str]) -> list[Path]:
    """Files from what a user typed: a file, a folder (its ``*.hdf5`` / ``*.h5``), or a
    glob the shell did not expand (``'feats/features_distractors_*.hdf5'``); each pattern's
    matches sorted, duplicates dropped. A pattern that matches nothing is one line."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix in (".hdf5", ".h5"))
            if not matches:
                raise DatasetError(f"{path}: a folder with no .hdf5 feature files")
        elif path.exists() or not glob.has_magic(str(pattern)):
            matches = [path]  # a missing plain path is named when it is inspected
        else:
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            if not matches:
                raise DatasetError(f"{pattern}: no feature files match this pattern")
        found.extend(p for p in matches if p not in found)
    return found


# ------------------------------------------------------------------------- import


@dataclass
class ImportReport:
    """What ``import_features`` did, file by file."""

    collection: str
    files: list[str] = field(default_factory=list)
    loaded: int = 0
    already_present: int = 0
    query_files: list[str] = field(default_factory=list)  # skipped: queries are not points
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
            pass
        elif processes > 1:
            from ilias.indexing.feature_parts import import_in_parts

            report.loaded, report.already_present = import_in_parts(
                store, collection, database, writer, processes, progress
            )
        else:
            _import_in_order(store, collection, database, writer, checkpoint_rows, progress)
            report.loaded, report.already_present = writer.loaded, writer.already_present
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
    before it seals them; measured at 1M x 1024, two processes: 2 GB of anonymous memory
    in all, the rest of their resident size the page cache of their segment files). One
    process wherever parts cannot be adopted, or with a WAL."""
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


@dataclass(frozen=True)
class RowRange:
    """Rows ``start`` to ``stop`` (excluded) of one feature file."""

    path: Path
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


class RowWriter:
    """Writes rows of feature files into one collection of one store: the payload from the
    dataset's records (else what the id says), ids already stored skipped, the adaptation
    layer applied; what the serial import and each process of a parallel one run."""

    def __init__(
        self,
        store: Store,
        collection: str,
        encoder: str,
        layer: Any,
        known: Mapping[str, Mapping[str, Any]],
        chunk: int,
    ):
        self.store, self.collection, self.encoder = store, collection, encoder
        self.layer, self.known, self.chunk = layer, known, chunk
        self.loaded = self.already_present = 0

    def write(
        self, rows: RowRange, ids: Sequence[str], present: set[str],
        progress: Callable[[int], None] | None = None,
    ) -> None:  # fmt: skip
        """Write ``rows`` (whose ids are ``ids``), skipping ``present``; ``progress(n)``
        after each chunk with the rows of the range done."""
        self.already_present += len(present)
        payloads = [self.known.get(i) or _payload(i, *role_of(i)) for i in ids]
        for start, matrix in prefetched(_chunks(rows, self.chunk), "hdf5"):
            end = start + len(matrix)
            chunk_ids, chunk_payloads = ids[start:end], payloads[start:end]
            if present:
                keep = [n for n, i in enumerate(chunk_ids) if i not in present]
                chunk_ids, matrix = [chunk_ids[n] for n in keep], matrix[keep]
                chunk_payloads = [chunk_payloads[n] for n in keep]
            try:
                if self.layer is not None:  # checked before the layer; upsert checks the rest
                    validate_vectors(matrix, self.layer.d_in, chunk_ids)
                    matrix = adapt_features(matrix, self.encoder, rows.path, self.layer)
                self.store.upsert(self.collection, chunk_ids, matrix, chunk_payloads)
            except VectorValidationError as error:
                raise DatasetError(f"{rows.path}: {error}") from error
            self.loaded += len(chunk_ids)
            if progress:
                progress(end)


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
        writer.write(
            RowRange(header.path, 0, header.rows), ids, present,
            (lambda end, done=done: progress(done + end, total)) if progress else None,
        )  # fmt: skip
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


def _chunks(rows: RowRange, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row within the range, float32 rows)`` of a range of a file's features,
    ``chunk`` rows at a time: one HDF5 read and one conversion per chunk, never the whole
    file in memory."""
    import h5py

    with h5py.File(rows.path, "r") as found:
        features = found["features"]
        for start in range(rows.start, rows.stop, chunk):
            stop = min(start + chunk, rows.stop)
            yield start - rows.start, np.asarray(features[start:stop], dtype=np.float32)


def _payload(dataset_id: str, role: Role, instance: str | None) -> dict[str, Any]:
    """What an id alone says of its point (``role_of``), for ids the dataset lacks."""
    payload: dict[str, Any] = {"id": dataset_id, "role": role.value}
    if instance is not None:
        payload["instance"] = instance
    return payload


# ------------------------------------------------------------------------- export


@dataclass
class DatabaseExport:
    """The files ``export_database`` wrote: the positives file, then the distractor files."""

    positives_file: Path
    distractor_files: list[Path]
    positives: int
    distractors: int


def export_database(
    store: Store,
    collection: str,
    folder: Path | str,
    *,
    name: str = FEATURES_NAME,
    per_file: int = DISTRACTORS_PER_FILE,
    fp16: bool = True,
    overwrite: bool = False,
    batch: int = 4096,
    progress: ProgressCallback | None = None,
) -> DatabaseExport:
    """Write a collection's stored vectors in the reference's layout under ``folder``.

    Points whose payload role is ``positive`` go to ``<name>_positives.hdf5``, sorted by
    id as the reference writes them; every other point (distractors, and the images of a
    plain collection) to ``<name>_distractors_00000.hdf5``, ``_00001``, ... of at most
    ``per_file`` rows each, in the store's point order. The positives file is written even
    when empty: the reference's search always reads one. The stored float32 originals are
    read page by page (``Store.scroll``) and written as float16 unless ``fp16=False``;
    memory holds one page and the positives.

    The reference's files of ``name`` already in ``folder`` (an earlier export) are
    refused, naming one, unless ``overwrite``: then they are deleted first, so no stale
    distractor file of a larger export is left beside the new ones.
    """
    if per_file < 1:
        raise DatasetError(f"per_file={per_file}: a distractor file holds at least one row")
    folder = Path(folder)
    dim = store.collection_config(collection).dim  # a missing collection: before any write
    clear_export_folder(folder, name, overwrite)
    total = store.count(collection)
    dtype = np.float16 if fp16 else np.float32
    positive_ids: list[str] = []
    positive_rows: list[np.ndarray] = []
    writer: _AppendingFile | None = None
    written: list[Path] = []
    distractors = done = 0
    try:
        for page in store.scroll(collection, ["role"], batch=batch):
            is_positive = np.array(
                [p.get("role") == Role.POSITIVE for p in page.payloads], dtype=bool
            )
            if is_positive.any():
                positive_ids += [i for i, yes in zip(page.ids, is_positive, strict=True) if yes]
                positive_rows.append(page.vectors[is_positive])
            rest = np.flatnonzero(~is_positive)
            while len(rest):
                if writer is None or writer.rows == per_file:
                    if writer is not None:
                        writer.close()
                    written.append(folder / feature_file_name("distractors", len(written), name))
                    writer = _AppendingFile(written[-1], dim, dtype)
                take = rest[: per_file - writer.rows]
                writer.append([page.ids[n] for n in take], page.vectors[take])
                distractors += len(take)
                rest = rest[len(take) :]
            done += len(page.ids)
            if progress:
                progress(done, total)
    finally:
        if writer is not None:
            writer.close()
    order = sorted(range(len(positive_ids)), key=positive_ids.__getitem__)
    rows = np.concatenate(positive_rows) if positive_rows else np.zeros((0, dim), np.float32)
    positives_file = write_features(
        folder / feature_file_name("positives", name=name),
        [positive_ids[n] for n in order],
        rows[order],
        fp16=fp16,
    )
    return DatabaseExport(positives_file, written, len(positive_ids), distractors)


def clear_export_folder(folder: Path, name: str = FEATURES_NAME, overwrite: bool = False) -> None:
    """Make ``folder`` ready for an export: created if missing; the reference-layout files
    of ``name`` an earlier export left there are refused (one line naming one of them), or
    with ``overwrite`` deleted, so no stale distractor file outlives a smaller export."""
    pattern = re.compile(
        rf"{re.escape(name)}_(image_queries|text_queries|positives|distractors_\d{{5}})\.hdf5"
    )
    earlier = (
        sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name)) if folder.is_dir() else []
    )
    if earlier and not overwrite:
        more = f" and {len(earlier) - 1} more" if len(earlier) > 1 else ""
        raise DatasetError(
            f"{folder} already holds {earlier[0].name}{more} from an earlier export; choose "
            "another folder or pass --overwrite to replace them"
        )
    for path in earlier:
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)


class _AppendingFile:
    """One reference feature file written in appends (its datasets grow), so a distractor
    file of a million rows never has to be in memory at once."""

    def __init__(self, path: Path, dim: int, dtype: type[np.floating]):
        import h5py

        self.rows = 0
        self._file = h5py.File(path, "w")
        self._index = self._file.create_dataset(
            "index", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("ascii"),
            chunks=(8192,),
        )  # fmt: skip
        self._features = self._file.create_dataset(
            "features", shape=(0, dim), maxshape=(None, dim), dtype=dtype,
            chunks=(max(1, 2**20 // (dim * np.dtype(dtype).itemsize)), dim),
        )  # fmt: skip

    def append(self, ids: Sequence[str], rows: np.ndarray) -> None:
        end = self.rows + len(ids)
        self._index.resize((end,))
        self._features.resize((end, self._features.shape[1]))
        self._index[self.rows : end] = [encode_id(i) for i in ids]
        self._features[self.rows : end] = rows.astype(self._features.dtype)
        self.rows = end

    def close(self) -> None:
        self._file.close()
