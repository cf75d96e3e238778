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

Here: ``write_features`` / ``read_features`` for one file (``feature_import`` loads files
into a collection: what ``ilias load --features`` runs); ``export_database`` writes a
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ilias.errors import DatasetError
from ilias.indexing.store import Store
from ilias.loader.records import Role

ADAPTATION_MARK = "|adapt="  # as ilias.indexing.encoders (not imported: it loads torch)

FEATURES_NAME = "features"  # the reference's --hdf5_name default
PARTS = ("image_queries", "text_queries", "positives", "distractors")
DISTRACTORS_PER_FILE = 1_000_000  # the reference: 10 tar shards of 100K images per file
CHUNK_ROWS = 16_384  # rows read, converted and upserted at once by an import

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
