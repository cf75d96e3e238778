"""Exact search is exact where HNSW is not: a collection well above Qdrant's full-scan
threshold (10,000 KB of vectors), searched both ways, against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from ilias.indexing import CollectionConfig, EdgeStore
from ilias.query import EXACT, Retriever, recall_at_k
from ilias.types import SearchParams

N, DIM, K = 60_000, 64, 1000  # 60,000 x 64 float32 = 15,000 KB: HNSW is really used


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Many near neighbours (hard for HNSW): points around n / 200 centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 200, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    data = clustered(N + 20, DIM)
    base, queries = data[:N], data[N:]
    with EdgeStore(tmp_path_factory.mktemp("exact")) as store:
        store.create_collection("big", CollectionConfig(dim=DIM, payload_indexes={}))
        for start in range(0, N, 10_000):
            ids = [f"v{i}" for i in range(start, start + 10_000)]
            store.upsert("big", ids, base[start : start + 10_000], [{} for _ in ids])
        store.finish_load("big")
        assert store.info("big").indexed_vectors == N
        yield Retriever(store, "big"), base, queries


@pytest.mark.slow
def test_exact_search_returns_numpy_top_k_where_hnsw_does_not(collection):
    retriever, base, queries = collection
    scores = queries @ base.T
    truth = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    exact = retriever.search_vectors(queries, K, params=EXACT)
    found = np.array([[int(h.id[1:]) for h in row] for row in exact])
    # the same top k as numpy, each with its true score, in score order (points whose
    # float32 scores tie exactly may come in either order: "ties aside")
    assert [set(row) for row in found.tolist()] == [set(row) for row in truth.tolist()]
    engine_scores = np.array([[h.score for h in row] for row in exact])
    np.testing.assert_allclose(engine_scores, np.take_along_axis(scores, found, axis=1), atol=1e-6)
    np.testing.assert_allclose(engine_scores, np.take_along_axis(scores, truth, axis=1), atol=1e-6)
    # The default HNSW over int8 misses some of them on this data: exactness is not vacuous.
    approximate = retriever.search_vectors(queries, K, params=SearchParams())
    overlap = [
        len({h.id for h in a} & {f"v{j}" for j in t}) / K
        for a, t in zip(approximate, truth, strict=True)
    ]
    assert np.mean(overlap) < 0.99
    # recall_at_k, which approximate evaluation runs report, is exactly that overlap
    assert recall_at_k(retriever, queries, K, None, SearchParams()) == pytest.approx(overlap)
