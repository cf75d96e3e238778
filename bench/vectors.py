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


class ClusteredStream:
    """The same hard distribution, made chunk by chunk so N x d never sits in memory at once.

    Chunk ``c`` comes from its own generator (seeded by ``seed`` and ``c``), so any chunk
    can be made again, alone and identically: the load streams the chunks once and the
    exact baseline streams them again. Queries come from a stream no chunk uses.
    """

    def __init__(self, n: int, dim: int, seed: int = 0, chunk: int = 20_000):
        self.n, self.dim, self.seed, self.chunk_size = n, dim, seed, chunk
        rng = np.random.default_rng(seed)
        self.centers = rng.standard_normal((max(10, n // 200), dim)).astype(np.float32)

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.chunk_size)

    def chunk(self, index: int) -> np.ndarray:
        """Rows ``index * chunk`` up to the next chunk (or ``n``), unit float32."""
        rows = min(self.chunk_size, self.n - index * self.chunk_size)
        return self._draw(np.random.default_rng([self.seed, index]), rows)

    def queries(self, count: int) -> np.ndarray:
        return self._draw(np.random.default_rng([self.seed, 1 << 40]), count)

    def _draw(self, rng: np.random.Generator, rows: int) -> np.ndarray:
        labels = rng.integers(0, len(self.centers), rows)
        x = self.centers[labels] + 0.9 * rng.standard_normal((rows, self.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
