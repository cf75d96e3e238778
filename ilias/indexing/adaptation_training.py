"""Train a linear adaptation layer on descriptors extracted from labelled records.

The orchestration above ``adaptation`` (the layer, its training on arrays, its file
format) and ``extract`` (the Dask pipeline): kept apart so that encoders, which load
layers, never depend on the extraction that builds encoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ilias.errors import EncoderSpecError
from ilias.indexing.adaptation import (
    EpochReport,
    TrainingResult,
    split_by_label,
    train_adaptation,
)
from ilias.indexing.extract import ExtractionOptions, extract


@dataclass
class AdaptationRun:
    """A trained layer with what it was trained on and how it did."""

    result: TrainingResult
    n_train: int
    n_heldout: int
    n_classes: int
    n_failed: int


def train_from_records(
    records: Sequence,
    encoder: str,
    *,
    resolution: int | None = None,
    scheduler: str = "local",
    n_workers: int | None = None,
    d_out: int = 512,
    epochs: int = 5,
    heldout_fraction: float = 0.2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> AdaptationRun:
    """Extract frozen descriptors of labelled records (Dask), then train the layer on them.

    ``records`` carry ``class`` and ``domain`` payloads (``loader.read_labelled``).
    """
    if "|adapt=" in encoder:
        raise EncoderSpecError("train on the base encoder: drop '|adapt=' from the spec")
    options = ExtractionOptions(
        encoder=encoder, resolution=resolution, scheduler=scheduler, n_workers=n_workers
    )
    label_of = {r.id: (r.payload["class"], r.payload["domain"]) for r in records}
    ids: list[str] = []
    parts: list[np.ndarray] = []
    n_failed = done = 0
    for part in extract(records, options):
        ids += part.ids
        parts.append(part.vectors)
        n_failed += len(part.failures)
        done += part.n_records
        if progress:
            progress(done, len(records))
    if not ids:
        raise EncoderSpecError("no labelled image could be decoded; see the log for reasons")
    x = np.concatenate(parts)
    names = sorted({label_of[i] for i in ids})
    index = {name: n for n, name in enumerate(names)}
    labels = np.array([index[label_of[i]] for i in ids])
    train, heldout = split_by_label(labels, heldout_fraction, seed)
    _, train_labels = np.unique(labels[train], return_inverse=True)  # dense 0..C-1
    result = train_adaptation(
        x[train],
        train_labels,
        x[heldout],
        labels[heldout],
        d_out=d_out,
        epochs=epochs,
        seed=seed,
        on_epoch=on_epoch,
    )
    return AdaptationRun(result, len(train), len(heldout), len(names), n_failed)
