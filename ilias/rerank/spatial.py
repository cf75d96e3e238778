"""Spatial verification: do the matched patches agree on one geometric transform?

Mutual nearest neighbours between the query's and a candidate's local descriptors give
tentative correspondences (with patch centres); RANSAC fits a similarity transform (scale,
rotation, translation: 2 correspondences per hypothesis) or an affine one (3), and the
number of inliers is the geometric evidence. Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Verification:
    inliers: int
    matches: int
    transform: np.ndarray | None  # 2x3 matrix mapping query xy to candidate xy


def mutual_nearest_neighbours(
    query: np.ndarray, candidate: np.ndarray, min_similarity: float = 0.0
) -> np.ndarray:
    """Index pairs (i, j): j is i's best match and i is j's; (m, 2) int array."""
    if len(query) == 0 or len(candidate) == 0:
        return np.empty((0, 2), dtype=np.int64)
    sims = query @ candidate.T
    forward = sims.argmax(axis=1)
    backward = sims.argmax(axis=0)
    rows = np.arange(len(query))
    mutual = (backward[forward] == rows) & (sims[rows, forward] > min_similarity)
    return np.stack([rows[mutual], forward[mutual]], axis=1)


def _fit(src: np.ndarray, dst: np.ndarray, model: str) -> np.ndarray | None:
    """Least-squares 2x3 transform from src to dst (similarity or affine)."""
    n = len(src)
    if model == "affine":
        design = np.hstack([src, np.ones((n, 1))])
        solution, *_ = np.linalg.lstsq(design, dst, rcond=None)
        return solution.T
    # similarity: [a -b tx; b a ty]
    design = np.zeros((2 * n, 4))
    design[0::2] = np.column_stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)])
    design[1::2] = np.column_stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def ransac(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    model: str = "similarity",
    threshold: float = 24.0,
    iterations: int = 200,
    seed: int = 0,
) -> tuple[int, np.ndarray | None]:
    """Best inlier count and its refitted transform; ``threshold`` in candidate pixels."""
    sample_size = 2 if model == "similarity" else 3
    if len(src) < sample_size:
        return 0, None
    rng = np.random.default_rng(seed)
    homogeneous = np.hstack([src, np.ones((len(src), 1))])
    best_inliers = np.zeros(len(src), dtype=bool)
    for _ in range(iterations):
        sample = rng.choice(len(src), size=sample_size, replace=False)
        transform = _fit(src[sample], dst[sample], model)
        if transform is None or not np.all(np.isfinite(transform)):
            continue
        errors = np.linalg.norm(homogeneous @ transform.T - dst, axis=1)
        inliers = errors < threshold
        if inliers.sum() > best_inliers.sum():
            best_inliers = inliers
    if best_inliers.sum() < sample_size:
        return int(best_inliers.sum()), None
    return int(best_inliers.sum()), _fit(src[best_inliers], dst[best_inliers], model)


def verify(
    query_descriptors: np.ndarray,
    query_xy: np.ndarray,
    candidate_descriptors: np.ndarray,
    candidate_xy: np.ndarray,
    *,
    model: str = "similarity",
    threshold: float = 24.0,
    iterations: int = 200,
    seed: int = 0,
) -> Verification:
    pairs = mutual_nearest_neighbours(query_descriptors, candidate_descriptors)
    inliers, transform = ransac(
        query_xy[pairs[:, 0]],
        candidate_xy[pairs[:, 1]],
        model=model,
        threshold=threshold,
        iterations=iterations,
        seed=seed,
    )
    return Verification(inliers, len(pairs), transform)
