"""Rows of reference feature files into one collection: what a serial import and each
process of a parallel one (``feature_parts``) run, so both write the same points."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ilias.errors import DatasetError, VectorValidationError
from ilias.indexing.features import adapt_features, role_of
from ilias.indexing.prefetch import prefetched
from ilias.indexing.store import Store, validate_vectors
from ilias.loader.records import Role


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
