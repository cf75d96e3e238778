"""alpha query expansion: the query moved toward its own top-n neighbours, then searched again.

``q' = normalize(q + sum_{i<=n} max(q . x_i, 0)^alpha x_i)`` with the stored vectors of the
top n. Confident neighbours pull hardest; alpha sharpens that. n = 1, alpha = 1 is the
setting of the ILIAS paper's table.
"""

from __future__ import annotations

import numpy as np


def expand_query(query: np.ndarray, neighbours: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """The expanded, unit-norm query; ``neighbours`` are the top-n stored vectors (n, d)."""
    query = np.asarray(query, dtype=np.float32)
    neighbours = np.asarray(neighbours, dtype=np.float32).reshape(-1, query.shape[0])
    weights = np.maximum(neighbours @ query, 0.0) ** alpha
    expanded = query + weights @ neighbours
    return (expanded / np.linalg.norm(expanded)).astype(np.float32)
