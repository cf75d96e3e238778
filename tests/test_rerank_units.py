"""Re-ranking building blocks on hand-made data: aQE, Chamfer, RANSAC, AMES."""

import numpy as np
import pytest
import torch

from ilias.errors import IliasError
from ilias.rerank.ames import Ames, combine, load_ames
from ilias.rerank.aqe import expand_query
from ilias.rerank.chamfer import chamfer_rank, chamfer_similarity
from ilias.rerank.spatial import mutual_nearest_neighbours, ransac, verify, verify_shortlist


def unit(v):
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_alpha_qe_formula():
    q = unit([1, 0, 0])
    x = unit([[1, 1, 0], [0, 0, 1]])
    # weights (q.x)^alpha: 0.7071^2 = 0.5 for the first, 0 for the orthogonal one
    expected = unit(q + 0.5 * x[0])
    np.testing.assert_allclose(expand_query(q, x, alpha=2), expected, atol=1e-6)
    np.testing.assert_allclose(expand_query(q, x[:0], alpha=1), q, atol=1e-6)  # n = 0


def test_chamfer_by_hand():
    query = unit([[1, 0], [0, 1]])
    a = unit([[1, 0], [1, 1]])  # max per query row: 1, 0.7071
    b = unit([[0, 1]])  # 0, 1
    assert chamfer_similarity(query, a) == pytest.approx((1 + 0.70710678) / 2)
    assert chamfer_similarity(query, b) == pytest.approx(0.5)
    assert [i for i, _ in chamfer_rank(query, {"b": b, "a": a})] == ["a", "b"]
    assert chamfer_similarity(query, np.empty((0, 2))) == 0.0


def test_mutual_nearest_neighbours():
    q = unit([[1, 0], [0.9, 0.1], [0, 1]])
    c = unit([[1, 0.05], [0, 1]])
    pairs = mutual_nearest_neighbours(q, c)
    assert pairs.tolist() == [[0, 0], [2, 1]]  # q1's best is c0, but c0 prefers q0


def test_ransac_recovers_a_similarity_transform_with_outliers():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 400, size=(40, 2))
    angle, scale, shift = np.deg2rad(20), 0.5, np.array([30.0, -10.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rotation.T + shift
    dst[30:] = rng.uniform(0, 400, size=(10, 2))  # 10 outliers
    inliers, transform = ransac(src, dst, threshold=3.0, seed=1)
    assert inliers == 30
    np.testing.assert_allclose(transform[:, :2], rotation, atol=1e-6)
    assert ransac(src, dst, threshold=3.0, seed=1)[0] == inliers  # deterministic
    assert ransac(src[:1], dst[:1])[0] == 0


def test_verify_prefers_the_geometrically_consistent_candidate():
    rng = np.random.default_rng(1)
    descriptors = unit(rng.standard_normal((30, 16)))
    xy = rng.uniform(0, 300, size=(30, 2))
    same = verify(descriptors, xy, descriptors, xy * 0.8 + 5)  # scaled copy: all agree
    permuted = rng.permutation(xy)
    shuffled = verify(descriptors, xy, descriptors, permuted)
    assert same.inliers == 30 and same.matches == 30
    np.testing.assert_allclose(same.transform, [[0.8, 0, 5], [0, 0.8, 5]], atol=1e-6)
    # a random permutation leaves 5 correspondences that happen to agree (seeded data and
    # RANSAC), and the returned transform keeps exactly those within the 24 px threshold
    assert shuffled.matches == 30 and shuffled.inliers == 5
    mapped = np.hstack([xy, np.ones((30, 1))]) @ shuffled.transform.T
    assert int((np.linalg.norm(mapped - permuted, axis=1) < 24.0).sum()) == 5


def test_ransac_pins_the_inliers_of_the_per_iteration_loop():
    # 40 matches, 25 under one similarity (4 px noise), 15 random: the counts the former
    # per-iteration loop (one least-squares fit per iteration) found for these seeds
    rng = np.random.default_rng(7)
    src = rng.uniform(0, 400, (40, 2))
    dst = src @ np.array([[0.9, -0.3], [0.3, 0.9]]).T + [20, -10] + rng.normal(0, 4, (40, 2))
    dst[:15] = rng.uniform(0, 400, (15, 2))
    expected = {
        ("similarity", 4.0): (14, 14), ("similarity", 8.0): (25, 24),
        ("similarity", 24.0): (25, 25), ("affine", 4.0): (14, 12),
        ("affine", 8.0): (24, 22), ("affine", 24.0): (25, 25),
    }  # fmt: skip
    for (model, threshold), counts in expected.items():
        found = tuple(
            ransac(src, dst, model=model, threshold=threshold, seed=seed)[0] for seed in (0, 5)
        )
        assert found == counts, (model, threshold)


def test_ransac_counts_exact_inliers_on_constructed_matches():
    # a 3 x 4 grid of patch centres (collinear triples included) mapped exactly by a
    # similarity, plus 3 matches displaced by 300-350 px: exactly 12 inliers at 24 px,
    # for both models; 2 exact matches are all a similarity needs, an affine map needs 3
    grid = np.array([[x, y] for x in (8.0, 104.0, 200.0) for y in (8.0, 104.0, 200.0, 296.0)])
    src = np.vstack([grid, [[400.0, 400.0], [480.0, 240.0], [240.0, 560.0]]])
    similarity = np.array([[1.2, -0.4], [0.4, 1.2]])
    dst = src @ similarity.T + [5.0, 7.0]
    dst[12:] += [[300.0, 0.0], [0.0, -300.0], [250.0, 250.0]]
    for model in ("similarity", "affine"):
        inliers, transform = ransac(src, dst, model=model, threshold=24.0, seed=0)
        assert inliers == 12
        np.testing.assert_allclose(transform, [[1.2, -0.4, 5.0], [0.4, 1.2, 7.0]], atol=1e-9)
    assert ransac(src[:2], dst[:2])[0] == 2 and ransac(src[:2], dst[:2], model="affine")[0] == 0


def test_verify_shortlist_equals_verify_per_candidate():
    rng = np.random.default_rng(3)
    query = unit(rng.standard_normal((60, 16)))
    query_xy = rng.uniform(0, 300, (60, 2))
    candidates = []
    for index in range(6):
        descriptors = unit(rng.standard_normal((20, 16)))
        xy = rng.uniform(0, 1e5, (20, 2))  # random matches far apart: only a pair agrees
        if index % 2 == 0:  # 12 patches of the query, moved by one similarity
            descriptors[:12] = query[index : index + 12]
            xy[:12] = query_xy[index : index + 12] * 0.7 + 10
        candidates.append((descriptors, xy))
    candidates.append((np.empty((0, 16)), np.empty((0, 2))))
    batched = verify_shortlist(query, query_xy, candidates)
    single = [verify(query, query_xy, d, xy) for d, xy in candidates]
    # a similarity through any 2 matches fits those 2: a random candidate scores exactly 2
    assert [v.inliers for v in batched] == [v.inliers for v in single] == [12, 2, 12, 2, 12, 2, 0]
    assert [v.matches for v in batched] == [v.matches for v in single]


def test_ames_shapes_padding_and_combination(tmp_path):
    torch.manual_seed(0)
    model = Ames(local_dim=24, layers=2).eval()
    rng = np.random.default_rng(0)
    query = unit(rng.standard_normal((7, 24)))
    candidates = [unit(rng.standard_normal((n, 24))) for n in (5, 3, 9)]
    logits = model.score_pairs(query, candidates)
    assert logits.shape == (3,) and np.isfinite(logits).all()
    # padding must not change a candidate's logit: each scored alone gives the same
    for row, candidate in enumerate(candidates):
        alone = model.score_pairs(query, [candidate])
        assert logits[row] == pytest.approx(alone[0], abs=1e-5)
    assert len(set(np.round(logits, 4))) == 3  # and the three pairs differ
    assert model.score_pairs(query, []).shape == (0,)
    assert combine(np.array([0.5]), np.array([0.0]), lam=0.5, gamma=1.0)[0] == pytest.approx(0.5)
    assert combine(np.array([0.2]), np.array([100.0]), lam=0.0, gamma=2.0)[0] == pytest.approx(1.0)
    torch.save(model.state_dict(), tmp_path / "ames.pt")
    loaded = load_ames(tmp_path / "ames.pt", local_dim=24)
    np.testing.assert_allclose(loaded.score_pairs(query, candidates), logits, atol=1e-5)
    with pytest.raises(IliasError, match="24-d local descriptors, the collection has 32-d"):
        load_ames(tmp_path / "ames.pt", local_dim=32)


def test_select_local_by_norm_or_by_a_learned_detector(tmp_path):
    from ilias.indexing.local_features import load_detector, select_local

    fmap = torch.zeros(4, 2, 3)  # C=4, H=2, W=3
    fmap[0, 0, 0] = 5.0  # strongest token (norm) at row 0, col 0
    fmap[3, 1, 2] = 1.0  # the detector's favourite: channel 3, row 1, col 2
    by_norm = select_local(fmap, top_k=1, scale_x=16, scale_y=16)
    np.testing.assert_allclose(by_norm.xy, [[8.0, 8.0]])  # centre of cell (0, 0)
    torch.save({"weight": torch.tensor([0.0, 0.0, 0.0, 1.0]), "bias": torch.zeros(1)},
               tmp_path / "detector.pt")  # fmt: skip
    detector = load_detector(str(tmp_path / "detector.pt"))
    by_detector = select_local(fmap, top_k=1, scale_x=16, scale_y=16, detector=detector)
    np.testing.assert_allclose(by_detector.xy, [[40.0, 24.0]])  # centre of cell (1, 2)
    np.testing.assert_allclose(by_detector.descriptors, [[0, 0, 0, 1]])
    binary = select_local(fmap, top_k=1, scale_x=16, scale_y=16, binarize=True)
    np.testing.assert_allclose(binary.descriptors, [[0.5, 0.5, 0.5, 0.5]])  # signs, unit norm
