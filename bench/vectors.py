"""Hard synthetic vectors for the search benchmarks: many near neighbours per point.

Points scatter around ``n / 200`` random centres with noise about as large as the centres,
so a top 1000 spans several overlapping clusters and graph search has to work for it.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """``n`` unit float32 rows of dimension ``dim`` (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(10, n // 200), dim)).astype(np.float32)
    labels = rng.integers(0, len(centers), n)
    x = centers[labels] + 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
