"""GPR1200 protocol: hand-computed cases (self included, full ranking, subsets, ties)."""

from __future__ import annotations

import numpy as np
import pytest

from ilias.errors import DatasetError
from ilias.eval.gpr1200 import (
    GPR1200_SUBSETS,
    label_of,
    read_gpr1200,
    score_rankings,
    score_similarity,
)

# Four images, classes [0, 0, 1, 1]; rows are queries. Diagonal 1.0: each image finds itself.
SIMILARITY = np.array(
    [
        [1.0, 0.2, 0.8, 0.1],  # 0: [0, 2, 1, 3] rel [1, 0, 1, 0] -> (1 + 2/3) / 2
        [0.9, 1.0, 0.3, 0.4],  # 1: [1, 0, 3, 2] rel [1, 1, 0, 0] -> 1
        [0.7, 0.6, 1.0, 0.5],  # 2: [2, 0, 1, 3] rel [1, 0, 0, 1] -> (1 + 2/4) / 2
        [0.2, 0.9, 0.1, 1.0],  # 3: [3, 1, 0, 2] rel [1, 0, 0, 1] -> (1 + 2/4) / 2
    ]
)
LABELS = np.array([0, 0, 1, 1])
APS = [(1 + 2 / 3) / 2, 1.0, 0.75, 0.75]


def test_hand_computed_map_and_subsets():
    scores = score_similarity(SIMILARITY, LABELS, subsets=[("a", 0, 2), ("b", 2, 4)])
    np.testing.assert_allclose(scores.per_query_ap, APS)
    assert scores.map == pytest.approx(100 * np.mean(APS))
    assert scores.subsets["a"] == pytest.approx(100 * (APS[0] + APS[1]) / 2)
    assert scores.subsets["b"] == pytest.approx(75.0)


def test_the_query_itself_is_a_positive():
    # a class of one image: only itself is relevant, at rank 1 -> AP 1, not 0 or undefined
    similarity = np.array([[1.0, 0.5], [0.5, 1.0]])
    scores = score_similarity(similarity, [3, 4], subsets=None)
    assert scores.map == pytest.approx(100.0)
    # the same images, self ranked second: AP = 1/2 (n_pos = 1, found at rank 2)
    assert score_similarity([[0.5, 1.0], [0.5, 1.0]], [3, 4], subsets=None).per_query_ap[
        0
    ] == pytest.approx(0.5)


def test_ties_are_ranked_by_index():
    # query 0 ties image 1 (class 1) and image 2 (class 0): index order puts 1 first
    similarity = np.array([[1.0, 0.5, 0.5], [0.5, 1.0, 0.0], [0.5, 0.0, 1.0]])
    scores = score_similarity(similarity, [0, 1, 0], subsets=None)
    assert scores.per_query_ap[0] == pytest.approx((1 + 2 / 3) / 2)


def test_rankings_by_index_and_by_id_agree_with_the_similarity():
    order = np.argsort(-SIMILARITY, axis=1, kind="stable")
    by_index = score_rankings(order, LABELS, subsets=None)
    np.testing.assert_allclose(by_index.per_query_ap, APS)
    ids = ["0_a.jpg", "0_b.jpg", "1_a.jpg", "1_b.jpg"]
    by_id = {ids[q]: [ids[i] for i in order[q]] for q in range(4)}
    assert score_rankings(by_id, ids=ids, subsets=None).map == pytest.approx(by_index.map)


def test_partial_rankings_are_refused():
    order = np.argsort(-SIMILARITY, axis=1)[:, :2]
    with pytest.raises(DatasetError, match="full rankings"):
        score_rankings(order, LABELS, subsets=None)
    with pytest.raises(DatasetError, match="full rankings"):
        score_rankings(np.array([[0, 0, 1, 2]] * 4), LABELS, subsets=None)


def test_official_subsets_need_the_whole_set():
    assert [s[0] for s in GPR1200_SUBSETS] == [
        "landmarks",
        "iNat",
        "sketch",
        "INSTRE",
        "SOP",
        "faces",
    ]
    assert all(end - start == 2000 for _, start, end in GPR1200_SUBSETS)
    with pytest.raises(ValueError, match="subsets=None"):
        score_similarity(SIMILARITY, LABELS)


def test_against_the_authors_ap_loop_on_random_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(30), 10)
    features = rng.standard_normal((300, 16)) + 2 * rng.standard_normal((30, 16))[labels]
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    similarity = features @ features.T
    ours = score_similarity(similarity, labels, subsets=[("x", 0, 150), ("y", 150, 300)])
    expected = []
    for i, row in enumerate(np.argsort(-similarity, axis=1, kind="stable")):
        relevant = labels[row] == labels[i]
        total = 0.0
        for seen, rank in enumerate(np.flatnonzero(relevant), start=1):
            total += seen / (rank + 1)
        expected.append(total / relevant.sum())
    np.testing.assert_allclose(ours.per_query_ap, expected, atol=1e-12)
    assert ours.subsets["y"] == pytest.approx(100 * np.mean(expected[150:]))


def test_folder_listing_orders_by_integer_class(tmp_path):
    for name in ("10_x.jpg", "9_b.jpg", "9_a.jpg", "100_z.jpg"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    images = read_gpr1200(tmp_path)
    assert images.ids == ("9_a.jpg", "9_b.jpg", "10_x.jpg", "100_z.jpg")
    assert images.labels.tolist() == [9, 9, 10, 100]
    assert label_of("1199_some_name_with_underscores.jpg") == 1199
    with pytest.raises(DatasetError, match=r"<class>_<name>\.jpg"):
        label_of("landmark.jpg")
