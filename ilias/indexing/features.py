"""Features in the ILIAS reference's HDF5 form, in and out of collections.

The reference's extraction writes one HDF5 file per part (queries, positives, and the
distractors split over many files), each with an ``index`` dataset of ASCII ids and a
``features`` dataset of one row per id, float16 by default (``feature_extraction/
extract.py``, read back by ``knn_search/src/utils.py``). ``write_features`` writes that
form, ``read_features`` reads it (checked: an HDF5 file, both datasets, equal lengths,
finite rows), and ``import_features`` loads such files into a collection, so features a
user already extracted with the reference code are searched and evaluated by ilias
without extracting again. Ids keep the reference's form (``<instance>/pos/P000.jpg``,
``<shard>.tar/<key>``), so the collection's points, similarity files and the reference's
id lists agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ilias import __version__
from ilias.errors import DatasetError
from ilias.indexing.store import CollectionConfig, Store
from ilias.indexing.store.layout import check_storage
from ilias.loader.records import Role


@dataclass(frozen=True)
class FeatureFile:
    """One HDF5 feature file: ids and their descriptors (float32 rows)."""

    path: Path
    ids: list[str]
    features: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def write_features(
    path: Path | str,
    ids: Sequence[str],
    features: np.ndarray,
    *,
    fp16: bool = True,
    compression: int | None = None,
) -> Path:
    """Write ``ids`` and ``features`` as the reference does (``index`` ASCII, ``features``
    float16 unless ``fp16=False``; ``compression``: a gzip level)."""
    import h5py

    path = Path(path)
    array = np.asarray(features, dtype=np.float16 if fp16 else np.float32)
    if array.ndim != 2 or len(array) != len(ids):
        raise DatasetError(f"{path}: {len(ids)} ids for features of shape {array.shape}")
    with h5py.File(path, "w") as out:
        out.create_dataset("index", data=list(ids), dtype=h5py.string_dtype(encoding="ascii"))
        out.create_dataset(
            "features",
            data=array,
            dtype=array.dtype,
            compression="gzip" if compression else None,
            compression_opts=compression,
        )
    return path


def read_features(path: Path | str) -> FeatureFile:
    """Read one reference feature file; every fault is one line naming the file."""
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
        ids = [i.decode("ascii") if isinstance(i, bytes) else str(i) for i in found["index"][:]]
        features = np.asarray(found["features"][:], dtype=np.float32)
    if features.ndim != 2 or len(features) != len(ids):
        raise DatasetError(
            f"{path}: 'index' holds {len(ids)} ids but 'features' has shape "
            f"{features.shape}; the file is incomplete or not from the reference's extraction"
        )
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{path}: 'index' repeats ids; each id must appear once")
    return FeatureFile(path, ids, features)


def role_of(dataset_id: str) -> tuple[Role, str | None]:
    """The role (and instance) an ILIAS-form id names: ``x/pos/..`` a positive of ``x``,
    ``x/query/..`` a query of ``x``, anything else (``00000.tar/<key>``) a distractor."""
    parts = dataset_id.split("/")
    if len(parts) >= 3 and parts[1] == "pos":
        return Role.POSITIVE, parts[0]
    if len(parts) >= 3 and parts[1] == "query":
        return Role.QUERY, parts[0]
    return Role.DISTRACTOR, None


@dataclass
class ImportReport:
    """What ``import_features`` did, file by file."""

    collection: str
    files: list[str] = field(default_factory=list)
    loaded: int = 0
    already_present: int = 0


def import_features(
    paths: Sequence[Path | str],
    store: Store,
    collection: str,
    *,
    encoder: str,
    resolution: int | None = None,
    batch: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    storage: str | None = None,
) -> ImportReport:
    """Load reference feature files into ``collection`` (created from the first file).

    ``encoder`` is the spec that made the features (recorded, so image and text queries
    are embedded the same way); every file must have the collection's dimension, which is
    checked before anything from that file is written. Ids already stored are skipped, so
    an interrupted import resumes. Queries' features (``<instance>/query/...``) are not
    database points and are refused: import the database files.

    ``storage``: the layout of the collection if this import creates it (``ram``, ``disk``,
    ``compact``, or ``auto`` to pick by the rows of all the files; None: the store's
    default).
    """
    check_storage(storage)
    report = ImportReport(collection)
    for number, path in enumerate(paths, start=1):
        found = read_features(path)
        queries = [i for i in found.ids if role_of(i)[0] is Role.QUERY]
        if queries:
            raise DatasetError(
                f"{found.path}: holds query features ({queries[0]}, ...); import the "
                "database files (positives, distractors) into a collection"
            )
        if not store.collection_exists(collection):
            metadata: dict[str, Any] = {
                "encoder": encoder,
                "resolution": resolution,
                "ilias_version": __version__,
                "features": str(found.path),
            }
            config = CollectionConfig(
                dim=found.dim,
                metadata=metadata,
                storage=storage,
                expected_points=count_rows(paths),
            )
            store.create_collection(collection, config)
        dim = store.collection_config(collection).dim
        if found.dim != dim:
            raise DatasetError(
                f"{found.path}: {found.dim}-d features, but {collection!r} holds {dim}-d "
                "vectors; import it into a collection of its own encoder"
            )
        present = store.existing_ids(collection, found.ids)
        report.already_present += len(present)
        keep = [n for n, i in enumerate(found.ids) if i not in present]
        for start in range(0, len(keep), batch):
            rows = keep[start : start + batch]
            ids = [found.ids[n] for n in rows]
            payloads = [_payload(i) for i in ids]
            store.upsert(collection, ids, found.features[rows], payloads)
            report.loaded += len(rows)
        report.files.append(str(found.path))
        if progress:
            progress(number, len(paths))
    if store.collection_exists(collection):
        store.finish_load(collection)
    return report


def count_rows(paths: Sequence[Path | str]) -> int:
    """Rows in all the feature files, from their headers (no features read): the size
    hint of ``storage="auto"``. A file that cannot be read counts 0 here; reading it for
    the import names the fault."""
    import h5py

    total = 0
    for path in paths:
        try:
            with h5py.File(Path(path).expanduser(), "r") as found:
                total += int(found["features"].shape[0])
        except (OSError, KeyError, IndexError, TypeError, ValueError):
            continue
    return total


def _payload(dataset_id: str) -> dict[str, Any]:
    role, instance = role_of(dataset_id)
    payload: dict[str, Any] = {"id": dataset_id, "role": role.value}
    if instance is not None:
        payload["instance"] = instance
    return payload
