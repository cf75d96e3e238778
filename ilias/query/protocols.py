"""GPR1200 and UnED against a collection: their queries searched, scored by their protocol.

ILIAS has its own runner (``evaluation.evaluate_collection``); these two benchmarks rank
differently, so they get their own, sharing the store, the search parameters and the
scorers of ``ilias.eval.gpr1200`` / ``ilias.eval.uned``:

- **GPR1200**: every image queries the whole collection, itself included, with a full
  ranking (k = number of images). A query's vector is the stored one (the image is in the
  collection, encoded exactly as a query would be), so nothing is encoded twice.
- **UnED**: each domain's queries search the merged index (every domain's index split);
  the top ``k + 1`` where the query split is the index split (the query itself is dropped),
  else the top ``k``. Queries stored in the index reuse their vectors; a separate query
  split is encoded with the collection's encoder.

The default search is exact (``EXACT``), the ranking the authors' brute-force code gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ilias.errors import DatasetError
from ilias.eval import gpr1200 as gpr, uned
from ilias.loader.gpr1200 import Gpr1200Dataset
from ilias.loader.uned import UnedDataset
from ilias.query.evaluation import EXACT
from ilias.types import Hit, SearchParams

if TYPE_CHECKING:
    from ilias.indexing import Store

Progress = Callable[[str, int, int], None]  # (stage, done, total)
BATCH = 64  # queries per search call


@dataclass(frozen=True)
class ProtocolRun:
    """Scores of one protocol run and where the time went."""

    scores: gpr.Gpr1200Scores | uned.UnedScores
    encode_seconds: float
    search_seconds: float
    score_seconds: float
    n_queries: int


def evaluate_gpr1200(
    store: Store,
    collection: str,
    dataset: Gpr1200Dataset,
    *,
    params: SearchParams | None = None,
    progress: Progress | None = None,
    subsets: Sequence[tuple[str, int, int]] | None = gpr.GPR1200_SUBSETS,
) -> ProtocolRun:
    """Every image against all images, full rankings, GPR1200 mAP (and per subset).

    ``subsets`` None where the folder is not the official 12,000 images (a sample).
    """
    view = store.collection(collection)
    ids = list(dataset.ids)
    position = {image_id: i for i, image_id in enumerate(ids)}
    began = time.perf_counter()
    stored = view.retrieve_vectors(ids)
    missing = [i for i in ids if i not in stored]
    if missing:
        raise DatasetError(
            f"{len(missing)} GPR1200 image(s) are not in collection {collection!r} (e.g. "
            f"{missing[0]!r}; unreadable?); GPR1200 ranks every image, so all must load"
        )
    encode_s = time.perf_counter() - began
    search_s = score_s = 0.0
    aps = np.empty(len(ids), dtype=np.float64)
    for start in range(0, len(ids), BATCH):  # scored per batch: never an n x n array
        chunk = ids[start : start + BATCH]
        began = time.perf_counter()
        found = view.search(np.stack([stored[i] for i in chunk]), len(ids), None, params or EXACT)
        search_s += time.perf_counter() - began
        began = time.perf_counter()
        rows = np.stack([_full_ranking(hits, position) for hits in found])
        relevant = dataset.labels[rows] == dataset.labels[start : start + len(chunk), None]
        aps[start : start + len(chunk)] = gpr.ap_full_ranking(relevant)
        score_s += time.perf_counter() - began
        if progress:
            progress("GPR1200 queries", min(start + BATCH, len(ids)), len(ids))
    scores = gpr.summarise_aps(aps, subsets)
    return ProtocolRun(scores, encode_s, search_s, score_s, len(ids))


def _full_ranking(hits: list[Hit], position: dict[str, int]) -> np.ndarray:
    """Positions in rank order, each image once; images a (non-exact) search left out
    follow in protocol order, so the ranking stays full as the protocol needs."""
    ranked = np.array([position[h.id] for h in hits if h.id in position], dtype=np.int64)
    if len(ranked) == len(position):
        return ranked
    missing = np.setdiff1d(np.arange(len(position)), ranked)
    return np.concatenate([ranked, missing])


def evaluate_uned(
    store: Store,
    collection: str,
    dataset: UnedDataset,
    *,
    k: int = 5,
    params: SearchParams | None = None,
    progress: Progress | None = None,
    batch_size: int = 16,
) -> ProtocolRun:
    """Each domain's queries against the merged index; R@1 and mMP@k per domain and mean."""
    from ilias.query.retriever import Retriever, query_images_of

    domains = [
        uned.UnedDomain(
            d.name,
            tuple(r.id for r in d.queries),
            d.query_labels,
            tuple(r.id for r in d.index),
            d.index_labels,
        )
        for d in dataset.domains
    ]
    index = uned.merged_index(domains)
    position = {image_id: i for i, image_id in enumerate(index.ids)}
    retriever = Retriever(store, collection, params=params or EXACT)
    encode_s = search_s = 0.0
    top: dict[str, np.ndarray] = {}
    total = sum(len(d.queries) for d in dataset.domains)
    done = 0
    for splits, domain in zip(dataset.domains, domains, strict=True):
        width = min(k + int(domain.shared), len(index))
        rows: list[list[int]] = []
        for start in range(0, len(splits.queries), batch_size):
            chunk = list(splits.queries[start : start + batch_size])
            began = time.perf_counter()
            if domain.shared:
                stored = retriever.view.retrieve_vectors([r.id for r in chunk])
                lost = [r.id for r in chunk if r.id not in stored]
                if lost:
                    raise DatasetError(
                        f"UnED query {lost[0]!r} ({domain.name}) is not in collection "
                        f"{collection!r}; was it unreadable?"
                    )
                vectors = np.stack([stored[r.id] for r in chunk])
            else:
                vectors = retriever.encode_images(query_images_of(chunk))
            encode_s += time.perf_counter() - began
            began = time.perf_counter()
            found = retriever.search_vectors(vectors, width, None, params or EXACT)
            search_s += time.perf_counter() - began
            rows += [[position[h.id] for h in hits] for hits in found]
            done += len(chunk)
            if progress:
                progress("UnED queries", done, total)
        if any(len(r) < width for r in rows):
            raise DatasetError(
                f"UnED domain {domain.name}: a search returned fewer than {width} results; "
                f"is the whole index in collection {collection!r}?"
            )
        top[domain.name] = np.array(rows, dtype=np.int64).reshape(len(rows), width)
    began = time.perf_counter()
    scores = uned.score_top_positions(domains, top, k=k)
    return ProtocolRun(scores, encode_s, search_s, time.perf_counter() - began, total)


__all__ = ["ProtocolRun", "evaluate_gpr1200", "evaluate_uned"]
