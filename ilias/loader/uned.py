"""UnED (the Universal Embedding Dataset) as its authors distribute it.

The authors' preparation (nikosips/Universal-Image-Embeddings, ``prepare_data.sh``) leaves
``data/images/`` (every domain's images) and ``data/info_files/<domain>/<split>.json``: a
JSON list of ``{"path": <path under images/>, "class_id": <int>}``. The test protocol
(``dataset_infos.py``, ``test_knn``) pairs a query split with an index split per domain:
the ``test`` split queries itself for cars, sop, inat, food2k and rp2k, and queries the
``index`` split for inshop, met and gldv2. Ids are the ``path`` values (they start with
the domain's folder, so they are unique across domains); the payload holds the domain,
the label and whether the image is in the index.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilias.errors import DatasetError
from ilias.loader.records import Record, Role

#: domain -> (query split, index split) of the authors' test protocol, in the paper's order.
UNED_TEST_SPLITS: dict[str, tuple[str, str]] = {
    "food2k": ("test", "test"),
    "cars": ("test", "test"),
    "sop": ("test", "test"),
    "inshop": ("test", "index"),
    "inat": ("test", "test"),
    "met": ("test", "index"),
    "gldv2": ("test", "index"),
    "rp2k": ("test", "test"),
}


@dataclass(frozen=True)
class UnedSplits:
    """One domain's query and index images (records carry ``label`` and ``domain``)."""

    name: str
    queries: tuple[Record, ...]
    index: tuple[Record, ...]

    @property
    def query_labels(self) -> np.ndarray:
        return np.array([r.payload["label"] for r in self.queries], dtype=np.int64)

    @property
    def index_labels(self) -> np.ndarray:
        return np.array([r.payload["label"] for r in self.index], dtype=np.int64)


@dataclass(frozen=True)
class UnedDataset:
    """The domains present under ``root``, in the paper's order."""

    root: Path
    domains: tuple[UnedSplits, ...]

    @property
    def index_records(self) -> list[Record]:
        """The merged index (every domain's index split, in domain order): what is loaded.
        Queries of a separate split are encoded at query time, never stored, so they
        cannot be found by a search."""
        return [record for domain in self.domains for record in domain.index]


def uned_root(path: Path | str) -> Path:
    """The folder holding ``info_files/`` and ``images/``: ``path`` or ``path/data``."""
    path = Path(path).expanduser()
    for candidate in (path, path / "data"):
        if (candidate / "info_files").is_dir():
            return candidate
    raise DatasetError(
        f"{path} has no info_files/ folder; pass the UnED data folder (info_files/, images/)"
    )


def is_uned_layout(path: Path | str) -> bool:
    try:
        root = uned_root(path)
    except DatasetError:
        return False
    return any((root / "info_files" / d).is_dir() for d in UNED_TEST_SPLITS)


def load_uned(path: Path | str, domains: tuple[str, ...] | None = None) -> UnedDataset:
    """Read the test protocol's splits of every domain present (or of ``domains``)."""
    root = uned_root(path)
    unknown = [d for d in domains or () if d not in UNED_TEST_SPLITS]
    if unknown:
        raise DatasetError(
            f"unknown UnED domain {unknown[0]!r}; known: {', '.join(UNED_TEST_SPLITS)}"
        )
    wanted = domains or tuple(d for d in UNED_TEST_SPLITS if (root / "info_files" / d).is_dir())
    if not wanted:
        raise DatasetError(f"{root / 'info_files'} holds no UnED domain folder")
    out = []
    for name in wanted:
        query_split, index_split = UNED_TEST_SPLITS[name]
        index = _read_split(root, name, index_split, in_index=True)
        queries = index if query_split == index_split else _read_split(root, name, query_split)
        out.append(UnedSplits(name, queries, index))
    return UnedDataset(root, tuple(out))


def _read_split(root: Path, domain: str, split: str, in_index: bool = False) -> tuple[Record, ...]:
    file = root / "info_files" / domain / f"{split}.json"
    if not file.is_file():
        raise DatasetError(f"UnED domain {domain}: {file} is missing (its {split} split)")
    try:
        entries = json.loads(file.read_text(encoding="utf-8"))
        pairs = [(str(e["path"]), _label(e["class_id"])) for e in entries]
    except (ValueError, TypeError, KeyError) as error:
        raise DatasetError(
            f"{file} is not a UnED info file (a JSON list of {{path, class_id}}): {error}"
        ) from None
    role = Role.IMAGE if in_index else Role.QUERY
    return tuple(
        Record(p, root / "images" / p, {"label": c, "domain": domain, "role": str(role)})
        for p, c in pairs
    )


def _label(class_id: int | list[int]) -> int:
    """``class_id`` is an int, or a one-element list (the authors' converter takes both)."""
    if isinstance(class_id, list):
        if len(class_id) != 1:
            raise ValueError(f"class_id {class_id} is not one label")
        class_id = class_id[0]
    return int(class_id)


__all__ = [
    "UNED_TEST_SPLITS",
    "UnedDataset",
    "UnedSplits",
    "is_uned_layout",
    "load_uned",
    "uned_root",
]
