"""Breakdowns by hand-computed cases and against a re-statement of the reference's report."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ilias.errors import DatasetError
from ilias.eval import (
    CLUTTER_GROUPS,
    SCALE_GROUPS,
    category_breakdown,
    compute_breakdowns,
    group_breakdown,
    parse_taxonomy,
    read_taxonomy,
)

SMALL, MID, LARGE = (
    "0-0.06880213760855043",
    "0.13526567164179104-0.2729876723163842",
    ("0.2729876723163842-inf"),
)


def _one_query(ranking, k=1000, positives=("p1", "p2", "p3")):
    truth = {"A": set(positives)}
    scales = {"p1": 0.01, "p2": 0.2, "p3": 0.5}
    return group_breakdown(
        {"A/query/Q0": ranking}, truth, {"A/query/Q0": "A"}, scales, SCALE_GROUPS, k
    )


def test_positives_outside_a_group_leave_the_ranking_and_the_ground_truth():
    ranking = [("p2", 5.0), ("n1", 4.0), ("p1", 3.0), ("n2", 2.0), ("p3", 1.0)]
    maps, counts = _one_query(ranking)
    # small: p2, p3 removed -> [n1, p1, n2], G = {p1}: AP = 1/2 (not 1/3, as it would be
    # if p2 merely stopped counting as relevant but kept its place)
    assert maps[SMALL] == pytest.approx(50.0)
    # mid: p1, p3 removed -> [p2, n1, n2]: AP = 1
    assert maps[MID] == pytest.approx(100.0)
    # large: p1, p2 removed -> [n1, n2, p3]: AP = 1/3
    assert maps[LARGE] == pytest.approx(100 / 3)
    # [0.069, 0.135) holds no positive of A: the query is skipped, the group absent
    assert "0.06880213760855043-0.13526567164179104" not in maps
    assert counts == {SMALL: 1, MID: 1, LARGE: 1}


def test_removal_happens_before_the_top_k_cut():
    # k = 2: p1 is third, but p2 leaves the small group's ranking, so p1 moves up to rank 2
    maps, _ = _one_query([("p2", 3.0), ("n1", 2.0), ("p1", 1.0)], k=2)
    assert maps[SMALL] == pytest.approx(50.0)


def test_unretrieved_positives_of_the_group_still_count_in_the_denominator():
    scales = {"p1": 0.01, "p4": 0.02, "p2": 0.5}
    maps, _ = group_breakdown(
        {"A/query/Q0": [("p1", 2.0), ("n", 1.0)]},
        {"A": {"p1", "p2", "p4"}},
        {"A/query/Q0": "A"},
        scales,
        SCALE_GROUPS,
    )
    assert maps[SMALL] == pytest.approx(50.0)  # p1 at rank 1, p4 never found: 1 / 2


def test_clutter_keys_are_spelled_as_the_reference_spells_them():
    maps, _ = group_breakdown(
        {"A/q": [("p1", 1.0)]}, {"A": {"p1"}}, {"A/q": "A"}, {"p1": 60}, CLUTTER_GROUPS
    )
    assert maps == {"53-inf": 100.0}


def test_positives_without_a_value_fall_outside_every_group():
    maps, _ = group_breakdown(
        {"A/q": [("p1", 2.0), ("p2", 1.0)]},
        {"A": {"p1", "p2"}},
        {"A/q": "A"},
        {"p1": None, "p2": 0.01},
        SCALE_GROUPS,
    )
    assert maps == {SMALL: 100.0}  # p1 removed: p2 is first


def test_categories_average_per_instance_first():
    per_query = {"a/q0": 1.0, "a/q1": 0.0, "a/q2": 0.0, "b/q0": 1.0, "c/q0": 0.5}
    instances = {q: q.split("/")[0] for q in per_query}
    taxonomy = {"a": ("toy", "plushie"), "b": ("toy", "vehicle")}
    categories, subcategories, counts, uncategorised = category_breakdown(
        per_query, instances, taxonomy
    )
    # per instance: a = 1/3, b = 1; the category is their mean 2/3 (a query mean: 1/2)
    assert categories == {"toy": pytest.approx(100 * 2 / 3)}
    assert subcategories == {"toy-plushie": pytest.approx(100 / 3), "toy-vehicle": 100.0}
    assert counts == {"category:toy": 4}
    assert uncategorised == ("c",)


def test_taxonomy_shape_is_checked(tmp_path):
    good = {"toy": {"stuffed": {"plushie": ["a", "b"], "felting": ["c"]}}}
    assert parse_taxonomy(good)["c"] == ("toy", "stuffed")
    with pytest.raises(DatasetError, match="appears twice"):
        parse_taxonomy({"x": {"y": {"z": ["a"]}}, "u": {"v": {"w": ["a"]}}})
    with pytest.raises(DatasetError, match="list of instance names"):
        parse_taxonomy({"x": {"y": {"z": "a"}}})
    path = tmp_path / "taxonomy.json"
    path.write_text(json.dumps(good))
    assert read_taxonomy(path)["a"] == ("toy", "stuffed")
    with pytest.raises(DatasetError, match="does not exist"):
        read_taxonomy(tmp_path / "missing.json")


# ------------------------------------------------- against the reference's report logic


def _reference_ap(truth, ids, scores, k, excluded):
    keep = np.array([i not in excluded for i in ids], dtype=bool)
    ids, scores = ids[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    gt = truth - excluded
    y_true = np.isin(ids[order][:k], list(gt))
    if not y_true.any():
        return 0.0
    ap = average_precision_score(y_true, scores[order][:k])
    return ap * y_true.sum() / min(k, len(gt))


def reference_report(rankings, truth, info, taxonomy, k):
    """The reference's report: per-group APs appended per query, categories per instance."""
    scale, clutter = defaultdict(list), defaultdict(list)
    categories = defaultdict(lambda: defaultdict(list))
    for query, ranking in rankings.items():
        instance = query.split("/")[0]
        ids = np.array([d for d, _ in ranking])
        scores = np.array([s for _, s in ranking])
        ap = _reference_ap(truth[instance], ids, scores, k, set())
        categories[taxonomy[instance][0]][instance].append(100 * ap)
        for groups, column, out in ((SCALE_GROUPS, 0, scale), (CLUTTER_GROUPS, 1, clutter)):
            for low, high in groups:
                excluded = {p for p in truth[instance] if not low <= info[p][column] < high}
                if truth[instance] - excluded:
                    group_ap = _reference_ap(truth[instance], ids, scores, k, excluded)
                    out[f"{low}-{high}"].append(100 * group_ap)
    return (
        {key: np.mean(v) for key, v in scale.items()},
        {key: np.mean(v) for key, v in clutter.items()},
        {c: np.mean([np.mean(a) for a in per.values()]) for c, per in categories.items()},
    )


@pytest.mark.parametrize("seed", range(6))
def test_identical_to_the_reference_report_on_random_runs(seed):
    rng = np.random.default_rng(seed)
    instances = [f"inst{i}" for i in range(8)]
    truth = {i: {f"{i}/pos/P{p}.jpg" for p in range(int(rng.integers(1, 7)))} for i in instances}
    info = {
        p: (float(rng.uniform(0.0, 0.6)), int(rng.integers(0, 80)))
        for ps in truth.values()
        for p in ps
    }
    database = [p for ps in truth.values() for p in ps] + [f"d/{j}" for j in range(200)]
    rankings = {}
    for instance in instances:
        for q in range(int(rng.integers(1, 4))):
            chosen = rng.choice(len(database), 120, replace=False)
            scores = np.round(rng.random(120), 2)  # ties
            rankings[f"{instance}/query/Q{q}.jpg"] = [
                (database[c], float(s)) for c, s in zip(chosen, scores, strict=True)
            ]
    taxonomy = {i: (["toy", "landmark", "food"][n % 3], "other") for n, i in enumerate(instances)}
    k = int(rng.choice([30, 100, 1000]))
    ours = compute_breakdowns(
        rankings,
        truth,
        {q: q.split("/")[0] for q in rankings},
        positive_info=info,
        taxonomy=taxonomy,
        k=k,
    )
    scale, clutter, categories = reference_report(rankings, truth, info, taxonomy, k)
    assert ours.scale.keys() == scale.keys()
    assert ours.clutter.keys() == clutter.keys()
    for key in scale:
        assert ours.scale[key] == pytest.approx(scale[key], abs=1e-9)
    for key in clutter:
        assert ours.clutter[key] == pytest.approx(clutter[key], abs=1e-9)
    for key in categories:
        assert ours.categories[key] == pytest.approx(categories[key], abs=1e-9)


def test_breakdowns_are_optional_parts():
    rankings = {"a/q": [("a/p", 1.0)]}
    plain = compute_breakdowns(rankings, {"a": {"a/p"}}, {"a/q": "a"})
    assert plain.categories == plain.scale == plain.clutter == {}
    round_trip = type(plain).from_dict(
        compute_breakdowns(
            rankings, {"a": {"a/p"}}, {"a/q": "a"}, positive_info={"a/p": (0.5, 1)}
        ).to_dict()
    )
    assert round_trip.scale == {LARGE: 100.0}
    assert round_trip.clutter == {"0-18": 100.0}
