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
    Init,
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
    heldout_fraction: float = 0.0,
    seed: int = 0,
    init: Init = "reference",
    drop_last: bool = True,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> AdaptationRun:
    """Extract frozen descriptors of labelled records (Dask), then train the layer on them.

    ``records`` carry ``class`` and ``domain`` payloads (``loader.read_labelled``). By default
    every label is trained on, as the reference trains on all of UnED; ``heldout_fraction > 0``
    holds that share of the labels out for a retrieval check on classes never trained on.
    Descriptors and label numbers follow the records' order (labels numbered by first
    appearance, as the reference numbers UnED's), whatever order the workers finish in, so
    one seed gives one layer.
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
    position = {r.id: n for n, r in enumerate(records)}
    order = np.argsort([position[i] for i in ids], kind="stable")
    x = np.concatenate(parts)[order]
    ids = [ids[i] for i in order]
    index: dict[tuple[str, str], int] = {}
    for i in ids:
        index.setdefault(label_of[i], len(index))
    labels = np.array([index[label_of[i]] for i in ids])
    train, heldout = split_by_label(labels, heldout_fraction, seed)
    # dense 0..C-1; without a hold-out the first-appearance numbers are kept as they are
    _, train_labels = np.unique(labels[train], return_inverse=True)
    result = train_adaptation(
        x[train],
        train_labels,
        x[heldout] if len(heldout) else None,
        labels[heldout] if len(heldout) else None,
        d_out=d_out,
        epochs=epochs,
        seed=seed,
        init=init,
        drop_last=drop_last,
        on_epoch=on_epoch,
    )
    return AdaptationRun(result, len(train), len(heldout), len(index), n_failed)
