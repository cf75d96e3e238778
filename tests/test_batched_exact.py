"""Batched exact search: all queries ranked in one pass over the stored vectors, streamed
from the collection, equals the per-query exact search of the engine and numpy's brute
force, on every storage layout and both index kinds (ties at the k-th score aside)."""

from __future__ import annotations

import numpy as np
import pytest

from ilias.indexing import CollectionConfig, EdgeStore, open_store
from ilias.indexing.store.layout import PRESETS
from ilias.query import EXACT, Retriever
from ilias.query.exact import exact_top_k, hits_of_keys

K = 100


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 100), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def same_up_to_kth_ties(found: list[str], truth: list[str], scores: dict[str, float]) -> bool:
    """Equal sets, or sets that differ only by points tied with the k-th score."""
    if set(found) == set(truth):
        return True
    kth = scores[truth[-1]]
    differ = set(found) ^ set(truth)
    return all(abs(scores[i] - kth) < 1e-3 for i in differ)


def loaded(store, name: str, base: np.ndarray, **config) -> list[str]:
    ids = [f"v{i}" for i in range(len(base))]
    store.create_collection(name, CollectionConfig(dim=base.shape[1], payload_indexes={}, **config))
    for start in range(0, len(base), 2500):
        chunk = ids[start : start + 2500]
        store.upsert(name, chunk, base[start : start + 2500], [{} for _ in chunk])
    store.finish_load(name)
    return ids


def batched(store, name: str, queries: np.ndarray, k: int, device: str = "cpu", **kw):
    stream = store.stream_vectors(name, block=1500, **kw)
    result = exact_top_k({"q": queries}, stream.blocks, k, device=device)
    return hits_of_keys(result.keys["q"], result.scores["q"], stream.names()), stream


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("index", ["scan", "hnsw"])
def test_batched_equals_per_query_exact_and_numpy_on_every_layout(tmp_path, preset, index):
    data = clustered(6_000 + 30, 48, seed=1)
    base, queries = data[:6_000], data[6_000:]
    with EdgeStore(tmp_path) as store:
        ids = loaded(store, "c", base, storage=preset, index=index, expected_points=6_000)
        rows, stream = batched(store, "c", queries, K)
        assert stream.direct  # read from the segment files, not the scroll
        assert stream.total == 6_000
        per_query = Retriever(store, "c").search_vectors(queries, K, params=EXACT)
    scores = queries @ base.T
    tolerance = 2e-3 if preset == "compact" else 1e-5  # float16 originals
    for q, (got, engine) in enumerate(zip(rows, per_query, strict=True)):
        by_id = {ids[j]: float(s) for j, s in enumerate(scores[q])}
        truth = [ids[j] for j in np.argsort(-scores[q], kind="stable")[:K]]
        assert len(got) == K
        assert same_up_to_kth_ties([h.id for h in got], truth, by_id)
        assert same_up_to_kth_ties([h.id for h in got], [h.id for h in engine], by_id)
        got_scores = np.array([h.score for h in got])
        assert (np.diff(got_scores) <= 0).all()  # best first
        np.testing.assert_allclose(got_scores, [by_id[h.id] for h in got], atol=tolerance)
        np.testing.assert_allclose(got_scores, [h.score for h in engine], atol=tolerance)


def test_scroll_stream_and_torch_give_the_same_lists_as_the_direct_read(tmp_path):
    pytest.importorskip("torch")
    data = clustered(5_000 + 20, 32, seed=2)
    base, queries = data[:5_000], data[5_000:]
    with EdgeStore(tmp_path) as store:
        loaded(store, "c", base, storage="compact", index="scan", expected_points=5_000)
        direct, _ = batched(store, "c", queries, K)
        scrolled, stream = batched(store, "c", queries, K, direct=False)
        assert not stream.direct
        on_torch, _ = batched(store, "c", queries, K, device="torch-cpu")
    for a, b, c in zip(direct, scrolled, on_torch, strict=True):
        assert [h.id for h in a] == [h.id for h in b]
        assert {h.id for h in a} == {h.id for h in c}
        np.testing.assert_allclose([h.score for h in a], [h.score for h in c], atol=1e-6)


def test_filtered_and_server_streams_go_through_the_scroll(tmp_path):
    data = clustered(1_200 + 5, 16, seed=3)
    base, queries = data[:1_200], data[1_200:]
    store = open_store("memory:")
    with store:
        ids = [f"v{i}" for i in range(len(base))]
        store.create_collection("c", CollectionConfig(dim=16, payload_indexes={"role": "keyword"}))
        roles = ["positive" if i % 3 == 0 else "distractor" for i in range(len(ids))]
        store.upsert("c", ids, base, [{"role": r} for r in roles])
        store.finish_load("c")
        rows, stream = batched(store, "c", queries, 50, filter={"role": "positive"})
        assert not stream.direct and stream.total == 400
        per_query = store.search("c", queries, 50, filter={"role": "positive"}, params=EXACT)
    for got, engine in zip(rows, per_query, strict=True):
        assert all(int(h.id[1:]) % 3 == 0 for h in got)
        assert {h.id for h in got} == {h.id for h in engine}


def test_ties_at_the_kth_score_and_fewer_points_than_k(tmp_path):
    # Four copies of one vector tie: k = 2 keeps two of them (which: the tie's choice),
    # listed by score, then in the engine's order.
    base = np.zeros((6, 4), np.float32)
    base[:4, 0] = 1.0
    base[4:, 1] = 1.0
    query = np.array([[1.0, 0.0, 0.0, 0.0]], np.float32)
    blocks = [(np.arange(0, 3), base[:3]), (np.arange(3, 6), base[3:])]
    result = exact_top_k({"q": query}, iter(blocks), 2)
    (kept,) = result.keys["q"].tolist()
    assert set(kept) <= {0, 1, 2, 3} and kept == sorted(kept) and len(set(kept)) == 2
    np.testing.assert_allclose(result.scores["q"], [[1.0, 1.0]])
    result = exact_top_k({"q": query}, iter(blocks), 10)  # more than there are
    assert result.keys["q"][0, :6].tolist() == [0, 1, 2, 3, 4, 5]
    assert (result.keys["q"][0, 6:] == -1).all()
    names = [f"p{i}" for i in range(6)]
    (hits,) = hits_of_keys(result.keys["q"], result.scores["q"], names)
    assert [h.id for h in hits] == names
