"""Spatial verification: do the matched patches agree on one geometric transform?

Mutual nearest neighbours between the query's and a candidate's local descriptors give
tentative correspondences (with patch centres); RANSAC fits a similarity transform (scale,
rotation, translation: 2 correspondences per hypothesis) or an affine one (3), and the
number of inliers is the geometric evidence. Deterministic for a given seed.

Why it is fast: a minimal sample determines its transform in closed form (2 points fix a
similarity, 3 an affine map), so all hypotheses are built and scored at once with numpy
instead of one least-squares fit and one error pass per iteration in Python. The
hypotheses are the very samples the per-iteration loop drew (``rng.choice`` per iteration
from a fresh ``default_rng(seed)``; they depend only on the number of matches, so they are
drawn once per count and cached), and the first hypothesis with the most inliers wins, as
before: the inliers, and the transform refitted on them, are those of the loop.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
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
    return _mutual(query @ candidate.T, min_similarity)


def _mutual(sims: np.ndarray, min_similarity: float = 0.0) -> np.ndarray:
    """Mutual nearest neighbours from a (query patches x candidate patches) similarity."""
    forward = sims.argmax(axis=1)
    backward = sims.argmax(axis=0)
    rows = np.arange(sims.shape[0])
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


@functools.lru_cache(maxsize=4096)
def _samples(n: int, size: int, iterations: int, seed: int) -> np.ndarray:
    """The minimal samples the RANSAC loop draws for ``n`` matches: (iterations, size).

    Drawn exactly as the loop did (one ``rng.choice`` per iteration), once per ``n``: a
    top-100 shortlist has a few dozen distinct match counts, so almost every candidate
    reuses a cached array. Read-only, as it is shared.
    """
    rng = np.random.default_rng(seed)
    drawn = np.array([rng.choice(n, size=size, replace=False) for _ in range(iterations)])
    drawn.setflags(write=False)
    return drawn.reshape(iterations, size)


def _similarities(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Closed-form similarity transforms of point pairs: (H, 2, 2) -> (H, 2, 3).

    With ``z = a + ib`` the map is ``w = z * p + t`` in complex numbers, so two points give
    ``z = (w1 - w0) / (p1 - p0)`` and ``t = w0 - z * p0``; coincident points give NaN.
    """
    p = src[..., 0] + 1j * src[..., 1]
    w = dst[..., 0] + 1j * dst[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (w[:, 1] - w[:, 0]) / (p[:, 1] - p[:, 0])
    t = w[:, 0] - z * p[:, 0]
    a, b = z.real, z.imag
    return np.stack([np.stack([a, -b, t.real], axis=1), np.stack([b, a, t.imag], axis=1)], axis=1)


def _affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact affine maps of point triples: (H, 3, 2) -> (H, 2, 3); collinear ones NaN."""
    design = np.concatenate([src, np.ones((*src.shape[:2], 1))], axis=2)  # (H, 3, 3)
    out = np.full((len(src), 2, 3), np.nan)
    # rank-deficient as least squares judges it (collinear patch centres on the grid):
    # those go back to the least-squares fit, which returns its minimum-norm solution
    singular = np.linalg.matrix_rank(design) < 3
    if (~singular).any():
        solved = np.linalg.solve(design[~singular], dst[~singular])  # (h, 3, 2)
        out[~singular] = solved.transpose(0, 2, 1)
    return out


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
    inliers, transform = ransac_inliers(
        src, dst, model=model, threshold=threshold, iterations=iterations, seed=seed
    )
    return int(inliers.sum()), transform


def ransac_inliers(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    model: str = "similarity",
    threshold: float = 24.0,
    iterations: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """``ransac``'s work, with which correspondences are the inliers (a bool per pair):
    what the page draws as the matches that agree on one transform."""
    sample_size = 2 if model == "similarity" else 3
    if len(src) < sample_size:
        return np.zeros(len(src), dtype=bool), None
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    samples = _samples(len(src), sample_size, iterations, seed)
    if model == "similarity":
        transforms = _similarities(src[samples], dst[samples])
    else:
        transforms = _affines(src[samples], dst[samples])
    valid = np.isfinite(transforms).all(axis=(1, 2))
    if not valid.all():  # a degenerate sample: the loop's least squares still gave a fit
        for h in np.flatnonzero(~valid):
            fitted = _fit(src[samples[h]], dst[samples[h]], model)
            if fitted is not None and np.isfinite(fitted).all():
                transforms[h], valid[h] = fitted, True
    homogeneous = np.hstack([src, np.ones((len(src), 1))])
    mapped = (transforms.reshape(-1, 3) @ homogeneous.T).reshape(len(transforms), 2, -1)
    diff = mapped - dst.T  # (H, 2, n)
    diff *= diff
    inliers = np.sqrt(diff[:, 0] + diff[:, 1]) < threshold  # (H, n), the loop's norm
    counts = np.where(valid, inliers.sum(axis=1), -1)
    best = int(np.argmax(counts))  # the first hypothesis with the most, as the loop kept
    best_inliers = inliers[best] if counts[best] > 0 else np.zeros(len(src), dtype=bool)
    if best_inliers.sum() < sample_size:
        return best_inliers, None
    return best_inliers, _fit(src[best_inliers], dst[best_inliers], model)


def verify_shortlist(
    query_descriptors: np.ndarray,
    query_xy: np.ndarray,
    candidates: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    model: str = "similarity",
    threshold: float = 24.0,
    iterations: int = 200,
    seed: int = 0,
) -> list[Verification]:
    """``verify`` for every ``(descriptors, xy)`` candidate of one query, the same results.

    The descriptor similarities of all candidates come from one matrix product (600 x 100
    x 768 per candidate as 100 small products costs several times one large one), then
    each candidate's slice is matched and verified.
    """
    if not candidates:
        return []
    sizes = [len(descriptors) for descriptors, _ in candidates]
    stacked = np.concatenate([descriptors for descriptors, _ in candidates])
    sims = query_descriptors @ stacked.T if len(query_descriptors) and len(stacked) else None
    out = []
    start = 0
    for (_, xy), size in zip(candidates, sizes, strict=True):
        if sims is None or size == 0:
            pairs = np.empty((0, 2), dtype=np.int64)
        else:
            pairs = _mutual(sims[:, start : start + size])
        start += size
        inliers, transform = ransac(
            query_xy[pairs[:, 0]], xy[pairs[:, 1]], model=model, threshold=threshold,
            iterations=iterations, seed=seed,
        )  # fmt: skip
        out.append(Verification(inliers, len(pairs), transform))
    return out


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
