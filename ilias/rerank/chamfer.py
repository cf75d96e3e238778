"""Chamfer similarity between sets of local descriptors: the numpy reference.

``CS(Q, X) = (1/|Q|) sum_{q in Q} max_{x in X} q . x``: every query patch finds its best
match in the candidate. Qdrant's MAX_SIM multivector comparator computes the same sum
without the 1/|Q|, so for one query both rank candidates identically; the engine does it
inside one query (``Store.rescore_local``), this module is the reference the tests hold it to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from ilias.types import Hit


def chamfer_similarity(query: np.ndarray, candidate: np.ndarray) -> float:
    if len(query) == 0 or len(candidate) == 0:
        return 0.0
    return float((np.asarray(query) @ np.asarray(candidate).T).max(axis=1).mean())


def chamfer_rank(
    query: np.ndarray, candidates: Mapping[str, np.ndarray], ids: Sequence[str] | None = None
) -> list[tuple[str, float]]:
    """Candidates ranked by CS (stable for ties, in the given id order)."""
    ids = list(ids if ids is not None else candidates)
    scores = [chamfer_similarity(query, candidates[i]) for i in ids]
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [(ids[j], scores[j]) for j in order]


def max_sim_to_chamfer(hits: Sequence[Hit], n_query: int) -> list[Hit]:
    """Qdrant's MAX_SIM scores (sums over the query's patches) as Chamfer means."""
    size = max(1, n_query)
    return [replace(h, score=h.score / size) for h in hits]
