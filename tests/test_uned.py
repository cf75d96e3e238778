"""UnED protocol: hand-computed cases (self-drop, same domain, n_q < 5, ties, domain mean)."""

from __future__ import annotations

import numpy as np
import pytest

from ilias.errors import DatasetError
from ilias.eval.uned import (
    UnedDomain,
    merged_index,
    score_rankings,
    score_similarity,
    score_top_positions,
)

# Domain "a": queries == index (self-drop). Domain "b": separate splits, and its index
# image b0 carries label 0, a label of domain "a" too: it must never count for "a".
DOMAIN_A = UnedDomain(
    "a", ["a0", "a1", "a2", "a3"], [0, 0, 0, 1], ["a0", "a1", "a2", "a3"], [0, 0, 0, 1]
)
DOMAIN_B = UnedDomain("b", ["bq0", "bq1"], [5, 6], ["b0", "b1", "b2"], [0, 5, 5])
DOMAINS = [DOMAIN_A, DOMAIN_B]

RANKINGS = {
    # self first, dropped; then b0 (label 0 but domain b: wrong), a1 (right).
    # n_q = 3 - 1 = 2: top 2 after the drop = [b0, a1] -> MP 1/2; R@1 0
    "a0": ["a0", "b0", "a1", "a3", "a2", "b1"],
    # after the drop [a0, a2, ...]: MP 2/2, R@1 1
    "a1": ["a1", "a0", "a2", "b0", "a3", "b1"],
    # after the drop [a3, b0, a1, a0, b1]: top 2 = [a3, b0] -> 0, R@1 0
    "a2": ["a2", "a3", "b0", "a1", "a0", "b1"],
    # label 1 alone in its domain: n_q = 0 -> no mMP (counted apart); R@1 0
    "a3": ["a3", "a0", "a1", "a2", "b0", "b1"],
    # label 5: b1, b2 relevant (n_q 2); no drop: top 2 = [b2, a0] -> 1/2, R@1 1
    "bq0": ["b2", "a0", "b1", "a1", "a2"],
    # label 6: nothing relevant (n_q 0): no mMP; R@1 0
    "bq1": ["b1", "b2", "a0", "a1", "a2"],
}


def test_hand_computed_scores():
    scores = score_rankings(DOMAINS, RANKINGS)
    a, b = scores.domains["a"], scores.domains["b"]
    assert a.r_at_1 == pytest.approx(100 * 1 / 4)
    assert a.mmp == pytest.approx(100 * (0.5 + 1.0 + 0.0) / 3)
    assert a.n_without_relevant == 1
    assert b.r_at_1 == pytest.approx(50.0)
    assert b.mmp == pytest.approx(50.0)
    assert b.n_without_relevant == 1
    # unweighted over domains (pooling the 6 queries would give other numbers)
    assert scores.r_at_1 == pytest.approx((25.0 + 50.0) / 2)
    assert scores.mmp == pytest.approx((100 / 2 + 50.0) / 2)


def test_n_q_below_five_divides_by_n_q_and_five_caps_it():
    many = UnedDomain("m", ["q"], [1], [f"x{i}" for i in range(8)], [1] * 7 + [2])
    # 7 relevant (n_q = 7 -> cut-off 5); the top 5 hold 4 of them
    ranking = {"q": ["x0", "x7", "x1", "x2", "x3", "x4"]}
    assert score_rankings([many], ranking).mmp == pytest.approx(100 * 4 / 5)
    few = UnedDomain("f", ["q"], [1], ["y0", "y1", "y2"], [1, 1, 2])
    # n_q = 2: only the top 2 count, [y2, y0] -> 1/2 (y1 at rank 3 does not count)
    assert score_rankings([few], {"q": ["y2", "y0", "y1"]}).mmp == pytest.approx(50.0)


def test_similarity_matrix_with_ties_ranks_lower_index_first():
    index = merged_index(DOMAINS)
    assert index.ids == ("a0", "a1", "a2", "a3", "b0", "b1", "b2")
    similarity_b = np.array(
        [
            # b1 (col 5) and b2 (col 6) tie with a0 (col 0): a0 comes first (lower index)
            [0.9, 0.1, 0.1, 0.1, 0.2, 0.9, 0.9],
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, 0.0],
        ]
    )
    similarity_a = np.eye(4, 7) + 0.01 * np.arange(7)[None, :]
    scores = score_similarity(DOMAINS, {"a": similarity_a, "b": similarity_b})
    # bq0: top = [a0, b1, b2]: R@1 wrong; n_q 2: [a0, b1] -> 1/2
    assert scores.domains["b"].r_at_1 == pytest.approx(0.0)
    assert scores.domains["b"].mmp == pytest.approx(50.0)


def test_top_positions_path_agrees_with_ids():
    index = merged_index(DOMAINS)
    position = {image: i for i, image in enumerate(index.ids)}
    top = {
        d.name: np.array([[position[i] for i in RANKINGS[q][:6]] for q in d.query_ids])
        for d in DOMAINS
    }
    assert (
        score_top_positions(DOMAINS, top).to_dict() == score_rankings(DOMAINS, RANKINGS).to_dict()
    )


def test_short_or_missing_rankings_are_refused():
    with pytest.raises(DatasetError, match="no ranking"):
        score_rankings(DOMAINS, {q: r for q, r in RANKINGS.items() if q != "a0"})
    short = {q: r[:2] for q, r in RANKINGS.items()}
    with pytest.raises(DatasetError, match="top 6"):
        score_rankings(DOMAINS, short)
    with pytest.raises(DatasetError, match="repeat across domains"):
        merged_index([DOMAIN_B, DOMAIN_B])


def reference_domain(query_labels, index_labels, index_domains, domain, top, throw_first, k=5):
    """The authors' loop (R@1, MP@k) re-stated, for one domain's queries."""
    counter = {}
    for label in index_labels[index_domains == domain]:
        counter[label] = counter.get(label, 0) + 1
    correct_1, mp = 0, 0.0
    first = 1 if throw_first else 0
    for label, nearest in zip(query_labels, top, strict=True):
        hit = [index_labels[j] == label and index_domains[j] == domain for j in nearest]
        correct_1 += hit[first]
        n = counter.get(label, 0)
        n_true = n - 1 if throw_first else n
        count = sum(hit[: min(k + first, n)]) - (1 if throw_first else 0)
        mp += count / min(n_true, k)
    return 100 * correct_1 / len(top), 100 * mp / len(top)


def test_against_the_authors_loop_on_random_data():
    rng = np.random.default_rng(0)
    domains = []
    for name, shared in (("x", True), ("y", False), ("z", True)):
        labels = rng.integers(0, 6, 40)
        labels[:12] = np.repeat(np.arange(6), 2)  # every label at least twice
        index_ids = [f"{name}{i}" for i in range(40)]
        if shared:
            domains.append(UnedDomain(name, index_ids, labels, index_ids, labels))
        else:
            domains.append(
                UnedDomain(
                    name,
                    [f"{name}q{i}" for i in range(15)],
                    rng.integers(0, 6, 15),
                    index_ids,
                    labels,
                )
            )
    index = merged_index(domains)
    features = rng.standard_normal((len(index), 8))
    similarity = {}
    for d in domains:
        rows = [index.ids.index(q) if q in index.ids else None for q in d.query_ids]
        queries = np.array([features[r] if r is not None else rng.standard_normal(8) for r in rows])
        similarity[d.name] = queries @ features.T
        similarity[d.name][
            [i for i, r in enumerate(rows) if r is not None], [r for r in rows if r is not None]
        ] = 1e9  # self first
    ours = score_similarity(domains, similarity)
    for d in domains:
        top = np.argsort(-similarity[d.name], axis=1, kind="stable")[:, :6]
        r1, mp = reference_domain(
            d.query_labels, index.labels, index.domains, d.name, top, d.shared
        )
        assert ours.domains[d.name].r_at_1 == pytest.approx(r1)
        assert ours.domains[d.name].mmp == pytest.approx(mp)
