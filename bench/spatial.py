"""Spatial verification per query on a realistic top 100: the per-iteration RANSAC loop it
replaced vs ``ilias.rerank.spatial.verify`` (all hypotheses at once), in the same run.

No demo or model needed: one query with 600 local descriptors (768-d, as DINOv2 ViT-B
patch tokens; then 112-d, as the offline EfficientNet-Lite0 map ilias extracts) and a
shortlist of 100 candidates with 100 each; a third of the candidates
show the query's object under a similarity transform (some of their patches are noisy
copies of query patches at transformed positions), the rest are unrelated. Both
implementations verify every candidate with the same seed; the bench checks that inlier
counts and transforms agree and prints the time per query (``verify`` per candidate, and
``verify_shortlist``, what the ``sp`` re-ranker calls: one similarity product per query).

Run:  python bench/spatial.py [--queries 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ilias.rerank.spatial import _fit, _samples, mutual_nearest_neighbours, verify, verify_shortlist


def loop_ransac(src, dst, *, model="similarity", threshold=24.0, iterations=200, seed=0):
    """The implementation ilias shipped before: one least-squares fit and one error pass
    per iteration, in Python (kept here only as the baseline)."""
    sample_size = 2 if model == "similarity" else 3
    if len(src) < sample_size:
        return 0, None
    rng = np.random.default_rng(seed)
    homogeneous = np.hstack([src, np.ones((len(src), 1))])
    best = np.zeros(len(src), dtype=bool)
    for _ in range(iterations):
        sample = rng.choice(len(src), size=sample_size, replace=False)
        transform = _fit(src[sample], dst[sample], model)
        if transform is None or not np.all(np.isfinite(transform)):
            continue
        inliers = np.linalg.norm(homogeneous @ transform.T - dst, axis=1) < threshold
        if inliers.sum() > best.sum():
            best = inliers
    if best.sum() < sample_size:
        return int(best.sum()), None
    return int(best.sum()), _fit(src[best], dst[best], model)


def loop_verify(qd, qxy, cd, cxy, **options):
    pairs = mutual_nearest_neighbours(qd, cd)
    return loop_ransac(qxy[pairs[:, 0]], cxy[pairs[:, 1]], **options)


def shortlist(rng: np.random.Generator, dim: int = 768, n_query: int = 600, n_db: int = 100):
    """A query and 100 candidates: (descriptors, xy) pairs, a third of them true matches."""

    def unit(x):
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    query = unit(rng.normal(size=(n_query, dim)))
    query_xy = rng.uniform(0, 724, (n_query, 2)).astype(np.float32)
    candidates = []
    for index in range(100):
        descriptors = unit(rng.normal(size=(n_db, dim)))
        xy = rng.uniform(0, 724, (n_db, 2)).astype(np.float32)
        if index % 3 == 0:  # the object: shared patches under one similarity transform
            shared = int(rng.integers(10, 80))
            picked = rng.choice(n_query, shared, replace=False)
            angle, scale = rng.uniform(-0.5, 0.5), rng.uniform(0.6, 1.5)
            rotation = scale * np.array(
                [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
            )
            descriptors[:shared] = unit(
                query[picked] + 0.5 * rng.normal(size=(shared, dim)) / dim**0.5
            )
            xy[:shared] = query_xy[picked] @ rotation.T + rng.uniform(-80, 80, 2)
            xy[:shared] += rng.normal(0, 6, (shared, 2)).astype(np.float32)
        candidates.append((descriptors, xy))
    return query, query_xy, candidates


def measure(queries: int, dim: int) -> None:
    """Old loop vs ``verify`` vs ``verify_shortlist`` on ``queries`` shortlists of ``dim``-d
    descriptors; each timed from a cold hypothesis cache."""
    rng = np.random.default_rng(0)
    data = [shortlist(rng, dim) for _ in range(queries)]

    began = time.perf_counter()
    old = [[loop_verify(q, qxy, d, xy) for d, xy in c] for q, qxy, c in data]
    old_s = (time.perf_counter() - began) / len(data)
    _samples.cache_clear()
    began = time.perf_counter()
    one = [[verify(q, qxy, d, xy) for d, xy in c] for q, qxy, c in data]
    one_s = (time.perf_counter() - began) / len(data)
    _samples.cache_clear()
    began = time.perf_counter()
    new = [verify_shortlist(q, qxy, c) for q, qxy, c in data]
    new_s = (time.perf_counter() - began) / len(data)
    assert [[v.inliers for v in r] for r in one] == [[v.inliers for v in r] for r in new]

    same = all(
        a[0] == b.inliers
        and (a[1] is None) == (b.transform is None)
        and (a[1] is None or np.allclose(a[1], b.transform, atol=1e-6))
        for rows_a, rows_b in zip(old, new, strict=True)
        for a, b in zip(rows_a, rows_b, strict=True)
    )
    counts = [b.inliers for rows in new for b in rows]
    print(f"\n{queries} queries x 100 candidates (600 / 100 local descriptors, {dim}-d)")
    print(f"inliers per candidate: median {np.median(counts):.0f}, max {max(counts)}")
    print(f"per-iteration loop (before):                   {1000 * old_s:8.1f} ms per query")
    print(f"all hypotheses at once (verify per candidate): {1000 * one_s:8.1f} ms per query")
    print(f"and one similarity product (verify_shortlist): {1000 * new_s:8.1f} ms per query")
    print(
        f"speed-up: {old_s / one_s:.1f}x and {old_s / new_s:.1f}x; "
        f"same inliers and transforms: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5)
    args = parser.parse_args()
    for dim in (768, 112):  # DINOv2 ViT-B tokens; the offline EfficientNet-Lite0 map
        measure(args.queries, dim)


if __name__ == "__main__":
    main()
