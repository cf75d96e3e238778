"""Retrieval metrics, exactly as the ILIAS reference computes them.

ILIAS AP@k (k = 1000 by default), for one query with ground-truth set G::

    rank the results by score (descending; stable, so equal scores keep retrieval order)
    keep the top k; y_i = 1 if result i is in G
    AP@k = (1 / min(k, |G|)) * sum_{i <= k, y_i = 1} P@b(i)

where b(i) is the last rank of the block of results tied with i (sklearn's
``average_precision_score`` semantics, which the reference uses: a tied block enters the
precision-recall curve at once, so each positive in it gets the precision at the block's
end). Without ties b(i) = i, the rectangle rule. A query with no positive in the top k has
AP 0 and still counts. mAP = 100 * mean AP over queries.

Oracle@k = (#positives in the top k) / min(k, |G|): the AP of a perfect re-ranking of the
shortlist. (The reference multiplies the top-k hit rate by k / |G|, which is the same
number whenever a ranking holds k results and |G| <= k, as in ILIAS.)

This module depends on numpy only, so any stage (and any user) can score rankings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


def average_precision_at_k(
    scores: ArrayLike, relevant: ArrayLike, n_relevant: int, k: int = 1000
) -> float:
    """ILIAS AP@k of one ranked list; ``relevant[i]`` says whether result i is in G.

    ``scores`` and ``relevant`` describe the retrieved results in any order; they are
    sorted by descending score here (stable, so a search engine's order breaks no ties).
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be 1-d, equal")
    if n_relevant <= 0 or k <= 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")[:k]
    top_scores, top_relevant = scores[order], relevant[order]
    if not top_relevant.any():
        return 0.0
    # Index of the last element of each element's tie block (scores are sorted, so ties
    # are contiguous): the position before the next change of score.
    n = len(top_scores)
    change = np.flatnonzero(np.diff(top_scores) != 0)
    block_end = np.concatenate([change, [n - 1]])
    block_of = np.concatenate([[0], np.cumsum(np.diff(top_scores) != 0)])
    end_rank = block_end[block_of] + 1  # 1-based rank at the end of each element's block
    hits_at_end = np.cumsum(top_relevant)[end_rank - 1]
    precision = hits_at_end / end_rank
    return float(precision[top_relevant].sum() / min(k, n_relevant))


def average_precision_batch(
    scores: ArrayLike, relevant: ArrayLike, n_relevant: ArrayLike, k: int = 1000
) -> np.ndarray:
    """ILIAS AP@k of many ranked lists at once: row i equals ``average_precision_at_k`` of row i.

    ``scores`` and ``relevant`` are ``(n_queries, m)``; ``n_relevant`` is ``|G|`` per row. The
    same formula as above, vectorised over rows so that a whole benchmark (1,232 queries x
    1,000 results) takes milliseconds instead of a Python loop. Rows with fewer than ``m``
    results are padded with ``-inf`` scores that are not relevant: padding sorts after every
    real result and is never a positive, so it changes no AP.
    """
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.ndim != 2 or scores.shape != relevant.shape:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be 2-d, equal")
    n_relevant = np.asarray(n_relevant, dtype=np.int64).reshape(-1)
    n_rows, n_cols = scores.shape
    if len(n_relevant) != n_rows:
        raise ValueError(f"n_relevant has {len(n_relevant)} entries for {n_rows} rows")
    if np.isnan(scores).any():
        raise ValueError("scores hold NaN: a NaN cannot be ranked")
    aps = np.zeros(n_rows, dtype=np.float64)
    if n_rows == 0 or n_cols == 0 or k <= 0:
        return aps
    if (scores[:, 1:] <= scores[:, :-1]).all():
        # Already in descending order (as a search engine returns results): the stable
        # sort would be the identity, so skip it.
        top_scores, top_relevant = scores[:, :k], relevant[:, :k]
    else:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_relevant = np.take_along_axis(relevant, order, axis=1)
    width = top_scores.shape[1]
    # A tie block ends where the next score differs; each position's block end is the
    # nearest block end at or after it (a reversed running minimum).
    is_end = np.ones((n_rows, width), dtype=bool)
    is_end[:, :-1] = top_scores[:, 1:] != top_scores[:, :-1]
    ends = np.where(is_end, np.arange(width), width)
    block_end = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    hits_at_end = np.take_along_axis(np.cumsum(top_relevant, axis=1), block_end, axis=1)
    precision_sum = np.where(top_relevant, hits_at_end / (block_end + 1), 0.0).sum(axis=1)
    denominator = np.minimum(k, n_relevant)
    counted = denominator > 0
    aps[counted] = precision_sum[counted] / denominator[counted]
    return aps


def oracle_at_k(relevant_in_ranking: ArrayLike, n_relevant: int, k: int = 1000) -> float:
    """Fraction of the reachable positives that the top k holds (``relevant`` in rank order)."""
    if n_relevant <= 0 or k <= 0:
        return 0.0
    top = np.asarray(relevant_in_ranking, dtype=bool)[:k]
    return float(top.sum() / min(k, n_relevant))


@dataclass(frozen=True)
class RetrievalScores:
    """mAP@k and oracle@k (both x100) with the per-query APs behind them (0-1)."""

    map: float
    oracle: float
    k: int
    per_query_ap: dict[str, float]
    per_query_oracle: dict[str, float]

    @property
    def n_queries(self) -> int:
        return len(self.per_query_ap)

    @classmethod
    def of_queries(
        cls, aps: dict[str, float], oracles: dict[str, float], k: int
    ) -> RetrievalScores:
        """The means (x100) of per-query APs and oracles: every query counts once."""
        return cls(
            map=100.0 * float(np.mean(list(aps.values()))),
            oracle=100.0 * float(np.mean(list(oracles.values()))),
            k=k,
            per_query_ap=aps,
            per_query_oracle=oracles,
        )


def evaluate_rankings(
    rankings: Mapping[str, Sequence[tuple[str, float]]],
    ground_truth: Mapping[str, Collection[str]],
    k: int = 1000,
) -> RetrievalScores:
    """Score many queries: ``rankings[q]`` is ``[(db_id, score), ...]`` in retrieval order.

    Every query in ``ground_truth`` counts; one missing from ``rankings`` (or with an empty
    ranking) has AP 0, as a query that retrieved nothing does in the reference.
    """
    aps: dict[str, float] = {}
    oracles: dict[str, float] = {}
    for query_id, relevant_ids in ground_truth.items():
        relevant_ids = set(relevant_ids)
        ranking = list(rankings.get(query_id, ()))
        if not ranking:
            aps[query_id] = oracles[query_id] = 0.0
            continue
        ids = [db_id for db_id, _ in ranking]
        scores = np.fromiter((score for _, score in ranking), dtype=np.float64, count=len(ids))
        relevant = np.fromiter((i in relevant_ids for i in ids), dtype=bool, count=len(ids))
        aps[query_id] = average_precision_at_k(scores, relevant, len(relevant_ids), k)
        order = np.argsort(-scores, kind="stable")
        oracles[query_id] = oracle_at_k(relevant[order], len(relevant_ids), k)
    if not aps:
        raise ValueError("no queries to evaluate: the ground truth is empty")
    return RetrievalScores.of_queries(aps, oracles, k)
