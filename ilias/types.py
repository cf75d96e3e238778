"""Value types shared by the stages: hits, search knobs, filters, local descriptors.

A leaf module (the standard library only; numpy is named in annotations), so that every
stage, the CLI and the service can name these types without importing torch, dask or a
Qdrant engine, and ``ilias --help`` without numpy. The stages re-export them from their
public faces (``ilias.indexing``, ``ilias.query``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ilias.errors import IliasError

if TYPE_CHECKING:  # annotations only: ``ilias --help`` imports this module, not numpy
    import numpy as np


@dataclass(frozen=True)
class Hit:
    """One search result: the dataset id, the similarity, the stored payload."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Range:
    """A numeric payload range for filters (``gte``/``lte`` inclusive, ``gt``/``lt`` strict)."""

    gte: float | None = None
    lte: float | None = None
    gt: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        # NaN or inf reaching the engine panics one of Qdrant Edge's threads; refuse here,
        # whichever way the range was made (--where, the service, the Python API).
        for bound in ("gte", "lte", "gt", "lt"):
            value = getattr(self, bound)
            if value is not None and not math.isfinite(value):
                raise IliasError(f"range {bound} = {value}: give a finite number")


# field -> value (match), list of values (match any), or Range; every clause must hold.
# Passed to the engine as a real Qdrant filter, served by payload indexes; never applied in
# Python after the search.
Filter = Mapping[str, Any]


# Bounds of the search knobs: an ef beyond the candidates any collection here holds buys
# nothing but time (and 2**64 overflows the engine's usize), an oversampling beyond 100x
# k candidates rescored is a scan in disguise.
MAX_HNSW_EF = 100_000
MAX_OVERSAMPLING = 100.0


@dataclass(frozen=True)
class SearchParams:
    """Search knobs, with Qdrant's meaning: ``oversampling`` and ``rescore`` are int8 ones."""

    exact: bool = False
    hnsw_ef: int | None = None
    oversampling: float | None = None
    rescore: bool = True
    ignore_quantization: bool = False  # search the float32 originals (quality baseline)

    def __post_init__(self) -> None:
        if self.hnsw_ef is not None and self.hnsw_ef < 1:
            raise IliasError(f"hnsw_ef = {self.hnsw_ef}: give a positive number (--hnsw-ef)")
        if self.hnsw_ef is not None and self.hnsw_ef > MAX_HNSW_EF:
            raise IliasError(
                f"hnsw_ef = {self.hnsw_ef}: give a number from 1 to {MAX_HNSW_EF:,} (--hnsw-ef)"
            )
        if self.oversampling is not None and not self.oversampling >= 1.0:
            raise IliasError(
                f"oversampling = {self.oversampling}: give a factor of at least 1 (--oversampling)"
            )
        if self.oversampling is not None and self.oversampling > MAX_OVERSAMPLING:
            raise IliasError(
                f"oversampling = {self.oversampling}: give a factor from 1 to "
                f"{MAX_OVERSAMPLING:g} (--oversampling)"
            )


@dataclass(frozen=True)
class LocalConfig:
    """How many local descriptors to keep, from which layer, and whether to binarise them."""

    top_k_database: int = 100
    top_k_query: int = 600
    layer: int | None = None  # feature index for forward_intermediates; None: model default
    binarize: bool = False
    detector: str | None = None  # a learned patch scorer (``load_detector``); None: token norm

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_k_database": self.top_k_database,
            "top_k_query": self.top_k_query,
            "layer": self.layer,
            "binarize": self.binarize,
            "detector": self.detector,
        }


@dataclass(frozen=True)
class LocalFeatures:
    """``descriptors`` (k, d) unit rows, ``xy`` (k, 2) patch centres in original pixels."""

    descriptors: np.ndarray
    xy: np.ndarray
    weights: np.ndarray


__all__ = ["Filter", "Hit", "LocalConfig", "LocalFeatures", "Range", "SearchParams"]
