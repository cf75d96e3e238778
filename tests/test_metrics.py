"""mAP@k against hand-computed cases and against sklearn, the reference's own AP."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ilias.eval import average_precision_at_k, evaluate_rankings, oracle_at_k


def test_design_doc_case_untied():
    # labels [0,1,1,0,1], |G| = 3: (1/2 + 2/3 + 3/5) / 3
    ap = average_precision_at_k([5, 4, 3, 2, 1], [0, 1, 1, 0, 1], n_relevant=3)
    assert ap == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert round(ap, 3) == 0.589


def test_design_doc_case_two_positives_tied():
    # the positives at ranks 2 and 3 tie: both get P@3 = 2/3
    ap = average_precision_at_k([5, 4, 4, 2, 1], [0, 1, 1, 0, 1], n_relevant=3)
    assert ap == pytest.approx((2 / 3 + 2 / 3 + 3 / 5) / 3)
    assert round(ap, 3) == 0.644


def test_tie_with_a_negative_takes_precision_at_block_end():
    # positive tied with the negative ranked after it: P@2 = 1/2, not P@1 = 1
    assert average_precision_at_k([1.0, 1.0], [1, 0], n_relevant=1) == pytest.approx(0.5)


def test_normalised_by_min_k_and_ground_truth():
    # 2 of 4 positives found at ranks 1, 2 with k = 3: (1 + 1) / min(3, 4)
    assert average_precision_at_k([3, 2, 1], [1, 1, 0], n_relevant=4, k=3) == pytest.approx(2 / 3)
    # a positive beyond k does not count
    assert average_precision_at_k([3, 2, 1], [0, 0, 1], n_relevant=1, k=2) == 0.0


def test_unsorted_input_is_ranked_by_score():
    assert average_precision_at_k([1, 5, 4, 3, 2], [1, 0, 1, 1, 0], 3) == pytest.approx(
        (1 / 2 + 2 / 3 + 3 / 5) / 3
    )


def test_empty_and_no_positive_give_zero():
    assert average_precision_at_k([], [], n_relevant=3) == 0.0
    assert average_precision_at_k([0.9, 0.8], [0, 0], n_relevant=3) == 0.0


def test_oracle():
    assert oracle_at_k([0, 1, 0, 1], n_relevant=4, k=1000) == pytest.approx(0.5)
    assert oracle_at_k([1, 1, 1, 0], n_relevant=5, k=2) == pytest.approx(1.0)


def sklearn_reference_ap(scores, relevant, n_relevant, k):
    """The ILIAS reference's computation, written with sklearn as it is there."""
    scores, relevant = np.asarray(scores, float), np.asarray(relevant, bool)
    order = np.argsort(-scores, kind="stable")[:k]
    y_true, y_score = relevant[order], scores[order]
    if not y_true.any():
        return 0.0
    return average_precision_score(y_true, y_score) * y_true.sum() / min(k, n_relevant)


@pytest.mark.parametrize("seed", range(30))
def test_identical_to_sklearn_on_random_rankings_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.integers(0, 20, size=n) / 20  # few distinct values: many ties
    relevant = rng.random(n) < rng.uniform(0.02, 0.5)
    n_relevant = int(relevant.sum() + rng.integers(0, 5))
    k = int(rng.integers(1, 400))
    ours = average_precision_at_k(scores, relevant, n_relevant, k)
    expected = sklearn_reference_ap(scores, relevant, n_relevant, k) if n_relevant else 0.0
    assert ours == pytest.approx(expected, abs=1e-12)


def test_evaluate_rankings_counts_missing_queries_as_zero():
    gt = {"a/query/Q0.jpg": {"a/pos/P0.jpg"}, "b/query/Q0.jpg": {"b/pos/P0.jpg"}}
    rankings = {"a/query/Q0.jpg": [("a/pos/P0.jpg", 0.9), ("x", 0.1)]}
    result = evaluate_rankings(rankings, gt)
    assert result.per_query_ap == {"a/query/Q0.jpg": 1.0, "b/query/Q0.jpg": 0.0}
    assert result.map == pytest.approx(50.0)
    assert result.oracle == pytest.approx(50.0)
