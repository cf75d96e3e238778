"""Run a benchmark's queries (image, text or hybrid) against a collection: mAP@k, oracle."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ilias.eval import RetrievalScores, evaluate_rankings
from ilias.indexing import Filter, Hit, SearchParams
from ilias.loader import Benchmark
from ilias.query.retriever import Retriever, query_images_of
from ilias.rerank import Reranker, RerankQuery


@dataclass(frozen=True)
class BenchmarkRun:
    """Scores plus what produced them: rankings per query and where the time went."""

    scores: RetrievalScores
    rankings: dict[str, list[Hit]]
    encode_seconds: float
    search_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # search + each re-ranker

    @property
    def n_queries(self) -> int:
        return len(self.rankings)


QueryKind = Literal["image", "text", "hybrid"]


def run_queries(
    benchmark: Benchmark,
    retriever: Retriever,
    kind: QueryKind = "image",
    *,
    k: int = 1000,
    weight: float = 0.5,
    filter: Filter | None = None,
    params: SearchParams | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    rerank: Sequence[Reranker] = (),
) -> BenchmarkRun:
    """Run one kind of query over the benchmark and compute mAP@k and oracle@k.

    ``image``: every image query, cropped to its box. ``text``: every text query (the whole
    ``T*.txt``). ``hybrid``: every image query paired with its instance's text query,
    ranked by ``(1 - weight) * i2i + weight * t2i``. Image and text queries are evaluated
    separately, as in ILIAS. ``rerank`` re-ranks each image query's top k (image kind only).
    """
    if kind == "image":
        queries: list = benchmark.image_queries
    elif kind == "text":
        queries = benchmark.text_queries
    elif kind == "hybrid":
        texts = {t.instance: t.text for t in benchmark.text_queries}
        queries = [q for q in benchmark.image_queries if q.payload.get("instance") in texts]
    else:
        raise ValueError(f"unknown query kind {kind!r}: image, text or hybrid")
    if rerank and kind != "image":
        raise ValueError("re-rankers apply to image queries")
    rankings: dict[str, list[Hit]] = {}
    encode_seconds = search_seconds = 0.0
    stages: dict[str, float] = {}
    needs_local = any(step.needs_local for step in rerank)
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        began = time.perf_counter()
        local: list = [None] * len(chunk)
        if kind == "text":
            vectors = retriever.encoder.encode_texts([q.text for q in chunk])
        elif needs_local:
            vectors, local = retriever.encode_with_local(query_images_of(chunk))
        else:
            vectors = retriever.encode_images(query_images_of(chunk))
        if kind == "hybrid":
            text_vectors = retriever.encoder.encode_texts(
                [texts[q.payload["instance"]] for q in chunk]
            )
        encode_seconds += time.perf_counter() - began
        began = time.perf_counter()
        if kind == "hybrid":
            results = retriever.hybrid_vectors(vectors, text_vectors, weight, k, filter, params)
        elif rerank:
            results = [
                retriever.rerank_query(RerankQuery(v, f), rerank, k, filter, params, stages)
                for v, f in zip(vectors, local, strict=True)
            ]
        else:
            results = retriever.search_vectors(vectors, k, filter, params)
        search_seconds += time.perf_counter() - began
        rankings.update({q.id: hits for q, hits in zip(chunk, results, strict=True)})
        if progress:
            progress(start + len(chunk), len(queries))
    ground_truth = {q.id: benchmark.positives_for(q.id) for q in queries}
    as_pairs = {q: [(h.id, h.score) for h in hits] for q, hits in rankings.items()}
    scores = evaluate_rankings(as_pairs, ground_truth, k)
    return BenchmarkRun(scores, rankings, encode_seconds, search_seconds, stages)


def run_image_queries(benchmark: Benchmark, retriever: Retriever, **kwargs: Any) -> BenchmarkRun:
    """Image-to-image evaluation (see ``run_queries``)."""
    return run_queries(benchmark, retriever, "image", **kwargs)
