"""GPR1200 (General Purpose Image Retrieval, 1,200 classes x 10 images): its protocol.

As the authors' evaluation (Visual-Computing/GPR1200, ``eval/GPR1200.py``, ``utils.py``):

- files are named ``{class}_{name}.jpg``; the label is the integer class prefix; images
  are ordered by class (then, here, by name, so the order is reproducible);
- every image queries all 12,000, **itself included** (it is a positive, at rank 1 for any
  sane descriptor); the ranking is the full one;
- ``AP = (1 / n_pos) * sum over positives at rank i of P@i``, n_pos = images of the class
  (itself included); mAP = mean over all images;
- subsets by index range of the class-ordered list: landmarks, iNat, sketch, INSTRE, SOP,
  faces, 2,000 images each (200 classes each).

Ties: ranked by index (a stable descending sort), where the reference's ``np.argsort``
leaves tied results in an unspecified order. Numbers are x100 (the reference prints 0-1,
rounded to 4 decimals). Numpy only; file names are read, images never opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from ilias.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: (name, first index, end index) of the official subsets in the class-ordered list.
GPR1200_SUBSETS: tuple[tuple[str, int, int], ...] = (
    ("landmarks", 0, 2000),
    ("iNat", 2000, 4000),
    ("sketch", 4000, 6000),
    ("INSTRE", 6000, 8000),
    ("SOP", 8000, 10000),
    ("faces", 10000, 12000),
)
_NAME = re.compile(r"^(\d+)_(.+)$")
_ROWS_PER_CHUNK = 512  # bounds the memory of a full-ranking sort (12k x 512 at a time)


@dataclass(frozen=True)
class Gpr1200Images:
    """The images in protocol order: ids (file names), labels (class ids), paths."""

    ids: tuple[str, ...]
    labels: np.ndarray
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Gpr1200Scores:
    """mAP x100 over all images and per subset, with the AP (0-1) of every image."""

    map: float
    subsets: dict[str, float]
    per_query_ap: np.ndarray

    def to_dict(self) -> dict:
        return {"map": self.map, "subsets": dict(self.subsets), "n_queries": len(self.per_query_ap)}


def label_of(file_name: str) -> int:
    """The class of ``{class}_{name}.jpg``; anything else is refused with the expected form."""
    match = _NAME.match(Path(file_name).stem)
    if not match:
        raise DatasetError(
            f"{file_name!r} is not a GPR1200 file name: expected '<class>_<name>.jpg' "
            "(an integer class, an underscore, a name)"
        )
    return int(match.group(1))


def read_gpr1200(folder: Path | str) -> Gpr1200Images:
    """List a GPR1200 image folder in protocol order (class, then name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder; pass the folder of GPR1200 images")
    paths = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not paths:
        raise DatasetError(f"{folder} holds no .jpg/.png images; is it the GPR1200 image folder?")
    keyed = sorted((label_of(p.name), p.name, p) for p in paths)
    return Gpr1200Images(
        ids=tuple(name for _, name, _ in keyed),
        labels=np.array([label for label, _, _ in keyed], dtype=np.int64),
        paths=tuple(path for _, _, path in keyed),
    )


def labels_of(ids: Sequence[str]) -> np.ndarray:
    """Class labels of ids named ``{class}_{name}.jpg``."""
    return np.array([label_of(i) for i in ids], dtype=np.int64)


def ap_full_ranking(relevant: ArrayLike) -> np.ndarray:
    """GPR1200 AP of rows of relevance flags, each a full ranking in rank order."""
    relevant = np.atleast_2d(np.asarray(relevant, dtype=bool))
    n_pos = relevant.sum(axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision = np.cumsum(relevant, axis=1) / ranks
    sums = np.where(relevant, precision, 0.0).sum(axis=1)
    return np.divide(sums, n_pos, out=np.zeros(len(n_pos)), where=n_pos > 0)


def score_similarity(
    similarity: ArrayLike,
    labels: ArrayLike,
    *,
    subsets: Sequence[tuple[str, int, int]] | None = GPR1200_SUBSETS,
) -> Gpr1200Scores:
    """Score an ``n x n`` similarity matrix (rows: queries, columns: the same images)."""
    similarity = np.asarray(similarity)
    labels = np.asarray(labels)
    n = len(labels)
    if similarity.shape != (n, n):
        raise ValueError(
            f"GPR1200 needs an n x n similarity of every image to every image (n = {n}), "
            f"got {similarity.shape}"
        )
    aps = np.empty(n, dtype=np.float64)
    for start in range(0, n, _ROWS_PER_CHUNK):
        rows = similarity[start : start + _ROWS_PER_CHUNK]
        order = np.argsort(-rows, axis=1, kind="stable")
        relevant = labels[order] == labels[start : start + len(rows), None]
        aps[start : start + len(rows)] = ap_full_ranking(relevant)
    return summarise_aps(aps, subsets)


def score_rankings(
    rankings: ArrayLike | Mapping[str, Sequence[str]],
    labels: ArrayLike | None = None,
    *,
    ids: Sequence[str] | None = None,
    subsets: Sequence[tuple[str, int, int]] | None = GPR1200_SUBSETS,
) -> Gpr1200Scores:
    """Score full rankings: an ``n x n`` array of image indices in rank order (with
    ``labels``), or ``{query_id: [ranked ids]}`` (with ``ids``, the protocol order;
    labels then come from the file names unless given).

    Each ranking must hold every image once (the protocol ranks all of them).
    """
    if isinstance(rankings, Mapping):
        if ids is None:
            raise ValueError("rankings by id need ids=: the images in protocol order")
        ids = list(ids)
        labels = labels_of(ids) if labels is None else np.asarray(labels)
        position = {image_id: i for i, image_id in enumerate(ids)}
        missing = [q for q in ids if q not in rankings]
        if missing:
            raise DatasetError(
                f"{len(missing)} image(s) have no ranking, e.g. {missing[0]!r}; in GPR1200 "
                "every image is a query"
            )
        try:
            matrix = np.array([[position[d] for d in rankings[q]] for q in ids], dtype=np.int64)
        except KeyError as error:
            raise DatasetError(f"ranked id {error.args[0]!r} is not a GPR1200 image") from error
        except ValueError as error:  # rows of different lengths
            raise DatasetError(
                "GPR1200 rankings must be full: every query ranks all images"
            ) from error
    else:
        if labels is None:
            raise ValueError("an index matrix needs labels=")
        matrix = np.asarray(rankings, dtype=np.int64)
        labels = np.asarray(labels)
    n = len(labels)
    full = f"each of the {n} queries must rank all {n} images exactly once; search with k = {n}"
    if matrix.shape != (n, n):
        raise DatasetError(f"GPR1200 is scored over full rankings: {full} (got {matrix.shape})")
    aps = np.empty(n, dtype=np.float64)
    for start in range(0, n, _ROWS_PER_CHUNK):
        rows = matrix[start : start + _ROWS_PER_CHUNK]
        if not (np.sort(rows, axis=1) == np.arange(n)).all():
            raise DatasetError(f"GPR1200 is scored over full rankings: {full}")
        relevant = labels[rows] == labels[start : start + len(rows), None]
        aps[start : start + len(rows)] = ap_full_ranking(relevant)
    return summarise_aps(aps, subsets)


def summarise_aps(
    aps: np.ndarray, subsets: Sequence[tuple[str, int, int]] | None = GPR1200_SUBSETS
) -> Gpr1200Scores:
    """mAP and per-subset mAP (x100) of per-image APs in protocol order (a runner that
    scores its rankings chunk by chunk, never holding the n x n ranking, ends here)."""
    by_subset = {}
    for name, start, end in subsets or ():
        if not 0 <= start < end <= len(aps):
            raise ValueError(
                f"subset {name!r} spans images {start}..{end} but there are {len(aps)}; pass "
                "subsets=None or ranges that fit (the official ones need all 12,000 images)"
            )
        by_subset[name] = 100.0 * float(aps[start:end].mean())
    return Gpr1200Scores(100.0 * float(aps.mean()), by_subset, aps)
