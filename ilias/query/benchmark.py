"""Run a benchmark's image queries against a collection and score them (mAP@k, oracle)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ilias.eval import RetrievalScores, evaluate_rankings
from ilias.indexing import Filter, Hit, SearchParams
from ilias.loader import Benchmark
from ilias.query.retriever import Retriever, query_images_of


@dataclass(frozen=True)
class BenchmarkRun:
    """Scores plus what produced them: rankings per query and where the time went."""

    scores: RetrievalScores
    rankings: dict[str, list[Hit]]
    encode_seconds: float
    search_seconds: float

    @property
    def n_queries(self) -> int:
        return len(self.rankings)


def run_image_queries(
    benchmark: Benchmark,
    retriever: Retriever,
    *,
    k: int = 1000,
    filter: Filter | None = None,
    params: SearchParams | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> BenchmarkRun:
    """Encode every image query (cropped to its box), search top-k, compute mAP@k."""
    queries = benchmark.image_queries
    rankings: dict[str, list[Hit]] = {}
    encode_seconds = search_seconds = 0.0
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        began = time.perf_counter()
        vectors = retriever.encode_images(query_images_of(chunk))
        encode_seconds += time.perf_counter() - began
        began = time.perf_counter()
        results = retriever.search_vectors(vectors, k, filter, params)
        search_seconds += time.perf_counter() - began
        rankings.update({q.id: hits for q, hits in zip(chunk, results, strict=True)})
        if progress:
            progress(start + len(chunk), len(queries))
    ground_truth = {q.id: benchmark.positives_for(q.id) for q in queries}
    as_pairs = {q: [(h.id, h.score) for h in hits] for q, hits in rankings.items()}
    scores = evaluate_rankings(as_pairs, ground_truth, k)
    return BenchmarkRun(scores, rankings, encode_seconds, search_seconds)
