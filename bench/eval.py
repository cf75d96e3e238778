"""Evaluation speed: mAP@1k of 1,232 queries x 1,000 results, ilias vs the sklearn reference.

The baseline is the ILIAS reference's computation (``evaluation/src/dataset.py``): one
``sklearn.metrics.average_precision_score`` call per query, rescaled to AP@k, in a Python
loop. It is measured in the same run, on the same random rankings (scores rounded to three
decimals, so ties are frequent), and every ilias number is checked against it.

Two levels:
- arrays: scores and relevance flags already in memory (``average_precision_batch``, the
  per-query ``average_precision_at_k``, and the sklearn loop);
- ids: rankings of database ids and ground-truth sets, as a similarity file holds them
  (``evaluate_rankings`` vs the reference's ``np.isin`` + sklearn per query).

Run:  python bench/eval.py [--queries 1232] [--results 1000] [--repeat 3]
Needs scikit-learn (the dev extra).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score

from ilias.eval import average_precision_at_k, average_precision_batch, evaluate_rankings

K = 1000


def random_rankings(n_queries: int, n_results: int, seed: int = 0):
    """Scores with ties, 0-50 positives retrieved per query, |G| >= retrieved positives."""
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n_queries, n_results)), 3)
    scores = -np.sort(-scores, axis=1)  # retrieval order, as a search engine returns it
    # positives crowd the top of the ranking, as they do for a useful model
    rate = rng.uniform(0.0, 0.5, size=(n_queries, 1)) * np.exp(-np.arange(n_results) / 100)
    relevant = rng.random((n_queries, n_results)) < rate
    n_relevant = relevant.sum(axis=1) + rng.integers(1, 10, size=n_queries)
    return scores, relevant, n_relevant


def sklearn_ap(scores: np.ndarray, relevant: np.ndarray, n_relevant: int, k: int) -> float:
    """The reference's AP@k: sklearn's AP on the top k, rescaled by hits / min(k, |G|)."""
    order = np.argsort(-scores, kind="stable")[:k]
    y_true = relevant[order]
    if not y_true.any():
        return 0.0
    return average_precision_score(y_true, scores[order]) * y_true.sum() / min(k, n_relevant)


def best_of(repeat: int, work: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - began)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1232)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    scores, relevant, n_relevant = random_rankings(args.queries, args.results)
    n = args.queries

    # arrays
    t_sklearn, ref = best_of(
        args.repeat,
        lambda: np.array([sklearn_ap(scores[i], relevant[i], n_relevant[i], K) for i in range(n)]),
    )
    t_loop, loop = best_of(
        args.repeat,
        lambda: np.array(
            [average_precision_at_k(scores[i], relevant[i], n_relevant[i], K) for i in range(n)]
        ),
    )
    t_batch, batch = best_of(
        args.repeat, lambda: average_precision_batch(scores, relevant, n_relevant, K)
    )

    # ids: rankings and ground truth as a similarity file and the dataset give them
    db = np.array([f"db/{i:07d}.jpg" for i in range(args.results * 20)])
    rng = np.random.default_rng(1)
    rankings, truth = {}, {}
    for i in range(n):
        ids = rng.choice(db, args.results, replace=False)
        positives = set(ids[relevant[i]]) | {
            f"unretrieved/{i}/{j}" for j in range(n_relevant[i] - relevant[i].sum())
        }
        rankings[f"q{i}"] = list(zip(ids.tolist(), scores[i].tolist(), strict=True))
        truth[f"q{i}"] = positives

    def reference_ids() -> np.ndarray:
        aps = []
        for query, ranking in rankings.items():
            ids = np.array([d for d, _ in ranking])
            s = np.array([v for _, v in ranking])
            order = np.argsort(-s, kind="stable")
            y_true = np.isin(ids[order][:K], list(truth[query]))
            ap = 0.0
            if y_true.any():
                ap = average_precision_score(y_true, s[order][:K])
                ap *= y_true.sum() / min(K, len(truth[query]))
            aps.append(ap)
        return np.array(aps)

    t_ref_ids, ref_ids = best_of(args.repeat, reference_ids)
    t_ids, ours = best_of(args.repeat, lambda: evaluate_rankings(rankings, truth, K))

    diff_batch = float(np.abs(batch - ref).max())
    diff_loop = float(np.abs(loop - ref).max())
    diff_ids = float(
        np.abs(np.array([ours.per_query_ap[f"q{i}"] for i in range(n)]) - ref_ids).max()
    )
    print(f"mAP@{K} of {n} queries x {args.results} results (ties: scores rounded to 1e-3)")
    print(f"{'method':48s} {'time':>10s} {'vs sklearn':>11s} {'max |dAP|':>10s}")
    rows = [
        ("arrays: sklearn per query (reference)", t_sklearn, 0.0),
        ("arrays: ilias average_precision_at_k per query", t_loop, diff_loop),
        ("arrays: ilias average_precision_batch", t_batch, diff_batch),
    ]
    for name, seconds, diff in rows:
        print(f"{name:48s} {seconds * 1000:8.1f}ms {t_sklearn / seconds:10.1f}x {diff:10.1e}")
    print(
        f"{'ids: np.isin + sklearn per query (reference)':48s} {t_ref_ids * 1000:8.1f}ms "
        f"{'1.0x':>11s} {0.0:10.1e}"
    )
    print(
        f"{'ids: ilias evaluate_rankings':48s} {t_ids * 1000:8.1f}ms "
        f"{t_ref_ids / t_ids:10.1f}x {diff_ids:10.1e}"
    )
    print(f"mAP: reference {100 * ref.mean():.10f}, ilias batch {100 * batch.mean():.10f}")
    print(
        f"summary: ilias batch mAP@1k {t_sklearn / t_batch:.0f}x faster than the sklearn reference "
        f"({t_batch * 1000:.1f} ms vs {t_sklearn * 1000:.0f} ms), from ids "
        f"{t_ref_ids / t_ids:.1f}x; max |dAP| {max(diff_batch, diff_loop, diff_ids):.1e}"
    )
    if max(diff_batch, diff_loop, diff_ids) > 1e-9:
        raise SystemExit("ilias and the sklearn reference disagree")


if __name__ == "__main__":
    main()
