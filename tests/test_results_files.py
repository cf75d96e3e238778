"""Similarity files in the reference's formats: round trips, id checks, and equal numbers.

``reference_evaluate`` below re-states the reference ``evaluate.py`` / ``ILIAS.evaluate``
semantics with sklearn (its signature too, so a pickle that it cannot take as ``**kwargs``
fails here exactly as it would fail there).
"""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from ilias.errors import DatasetError
from ilias.eval import (
    IliasIds,
    UnknownIdsError,
    read_ilias_ids,
    read_similarities,
    score_rankings,
    score_similarity_file,
    write_similarities,
)


def _reference_ap(truth, ids, scores, ranks, k):
    order = np.argsort(-scores, kind="stable")
    top_ids = ids[ranks[order][:k]]
    y_true = np.isin(top_ids, list(truth))
    if not y_true.any():
        return 0.0
    ap = average_precision_score(y_true, scores[order][:k])
    return ap * y_true.sum() / min(k, len(truth))


def reference_evaluate(
    ground_truth,
    all_similarities=None,
    query_ids=None,
    db_ids=None,
    sims=None,
    ranks=None,
    k=1000,
):
    """mAP x100 as the reference computes it, from the JSON dict or the pickle's arrays.

    The keyword names are those of the current reference's ``ILIAS.evaluate`` (``sims``
    since 2025-09-01): ``evaluate(**pickle)`` raises TypeError on any other key."""
    aps = []
    if all_similarities is not None:
        for query, results in all_similarities.items():
            ids = np.array(list(results.keys()))
            scores = np.array(list(results.values()))
            truth = ground_truth[query.split("/")[0]]
            aps.append(_reference_ap(truth, ids, scores, np.arange(len(scores)), k))
    else:
        db_ids = np.asarray(db_ids)
        for query, scores, rank in zip(query_ids, sims, ranks, strict=True):
            truth = ground_truth[query.split("/")[0]]
            aps.append(_reference_ap(truth, db_ids, np.asarray(scores), np.asarray(rank), k))
    return 100 * float(np.mean(aps))


def _random_run(seed: int, n_instances=6, queries_per_instance=2, n_db=300, n_results=50):
    rng = np.random.default_rng(seed)
    positives = {f"i{i}": {f"i{i}/pos/P{p:03d}.jpg" for p in range(4)} for i in range(n_instances)}
    database = sorted(set().union(*positives.values())) + [f"yfcc/{j:05d}" for j in range(n_db)]
    rankings = {}
    for i in range(n_instances):
        for q in range(queries_per_instance):
            chosen = rng.choice(len(database), n_results, replace=False)
            # float32 as search engines give them; two decimals: many ties
            scores = np.round(rng.random(n_results), 2).astype(np.float32)
            rankings[f"i{i}/query/Q{q:03d}.jpg"] = [
                (database[c], float(s)) for c, s in zip(chosen, scores, strict=True)
            ]
    return rankings, positives, database


def _ids(rankings, positives, database, text=()):
    positive_ids = {p for ps in positives.values() for p in ps}
    info = {p: (0.1, 5) for p in sorted(positive_ids)}
    distractors = frozenset(d for d in database if d not in positive_ids)
    return IliasIds(tuple(sorted(rankings)), tuple(text), info, distractors)


def test_json_round_trip_sorts_by_score_and_keeps_tie_order(tmp_path):
    rankings = {"a/query/Q000.jpg": [("x", 0.2), ("a/pos/P000.jpg", 0.9), ("y", 0.5), ("z", 0.5)]}
    path = write_similarities(tmp_path / "s.json", rankings)
    document = json.loads(path.read_text())
    assert list(document["a/query/Q000.jpg"]) == ["a/pos/P000.jpg", "y", "z", "x"]
    assert read_similarities(path) == {
        "a/query/Q000.jpg": [("a/pos/P000.jpg", 0.9), ("y", 0.5), ("z", 0.5), ("x", 0.2)]
    }


def test_pickle_has_the_keys_evaluate_py_accepts_and_round_trips(tmp_path):
    rankings, positives, _ = _random_run(0)
    path = write_similarities(tmp_path / "s.pkl", rankings)
    with path.open("rb") as handle:
        document = pickle.load(handle)
    assert set(document) == {"query_ids", "db_ids", "sims", "ranks"}
    assert document["sims"].shape == document["ranks"].shape == (12, 50)
    assert document["sims"].dtype == np.float32  # lossless for float32 scores
    # evaluate.py calls ILIAS.evaluate(**document): this must not raise TypeError
    expected = reference_evaluate(positives, **document)
    ours = score_rankings(read_similarities(path), _ids(rankings, positives, []))
    assert ours.all.map == pytest.approx(expected, abs=1e-9)
    back = read_similarities(path)
    for query, ranking in rankings.items():
        assert sorted(back[query], key=lambda r: r[0]) == sorted(ranking, key=lambda r: r[0])


def test_pre_september_2025_spelling_similarities_is_read_and_can_be_written(tmp_path):
    rankings = {"a/query/Q000.jpg": [("a/pos/P000.jpg", 0.75), ("d", 0.5)]}
    path = write_similarities(tmp_path / "old.pkl", rankings, scores_key="similarities")
    with path.open("rb") as handle:
        document = pickle.load(handle)
    assert set(document) == {"query_ids", "db_ids", "similarities", "ranks"}
    assert read_similarities(path) == rankings
    with pytest.raises(ValueError, match="'sims' or 'similarities'"):
        write_similarities(tmp_path / "x.pkl", rankings, scores_key="scores")


def test_ragged_rankings_are_stored_as_rows(tmp_path):
    rankings = {"a/query/Q000.jpg": [("p", 0.5)], "b/query/Q000.jpg": [("q", 0.25), ("p", 0.125)]}
    path = write_similarities(tmp_path / "r.pkl", rankings)
    with path.open("rb") as handle:
        document = pickle.load(handle)
    assert [len(row) for row in document["ranks"]] == [1, 2]
    assert read_similarities(path) == rankings


@pytest.mark.parametrize("seed", range(5))
def test_json_file_scores_like_the_reference(tmp_path, seed):
    rankings, positives, database = _random_run(seed)
    path = write_similarities(tmp_path / "s.json", rankings)
    expected = reference_evaluate(positives, all_similarities=json.loads(path.read_text()))
    scored = score_rankings(read_similarities(path), _ids(rankings, positives, database))
    assert scored.all.map == pytest.approx(expected, abs=1e-9)
    assert scored.image.map == pytest.approx(expected, abs=1e-9)


def test_duplicate_database_id_in_a_ranking_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="twice"):
        write_similarities(tmp_path / "d.json", {"q": [("x", 0.5), ("x", 0.25)]})


def test_unknown_query_is_refused_with_the_fix():
    rankings, positives, database = _random_run(1)
    ids = _ids(rankings, positives, database)
    with pytest.raises(UnknownIdsError, match=r"not queries of this dataset.*'zz/query/Q0\.jpg'"):
        score_rankings({**rankings, "zz/query/Q0.jpg": [("x", 1.0)]}, ids)


def test_unknown_database_id_is_refused_only_when_checked():
    rankings, positives, database = _random_run(2)
    ids = _ids(rankings, positives, database)
    query = next(iter(rankings))
    bad = {**rankings, query: [*rankings[query], ("elsewhere/img.jpg", -1.0)]}
    score_rankings(bad, ids)  # the reference without --check_ids scores it
    with pytest.raises(UnknownIdsError, match=r"'elsewhere/img\.jpg'"):
        score_rankings(bad, ids, check_database=True)
    no_list = IliasIds(ids.image_query_ids, (), ids.positive_info, None)
    with pytest.raises(DatasetError, match="distractor id list"):
        score_rankings(rankings, no_list, check_database=True)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"query_ids": [Evil()]}))
    with pytest.raises(DatasetError, match="not allowed"):
        read_similarities(path)


def test_missing_keys_and_out_of_range_ranks_are_refused(tmp_path):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps({"query_ids": ["q"], "db_ids": np.array(["x"])}))
    with pytest.raises(DatasetError, match="lacks ranks, sims"):
        read_similarities(path)
    document = {
        "query_ids": ["q"],
        "db_ids": np.array(["x"]),
        "sims": np.array([[0.5]]),
        "ranks": np.array([[3]]),
    }
    path.write_bytes(pickle.dumps(document))
    with pytest.raises(DatasetError, match="outside db_ids"):
        read_similarities(path)


def _write_id_lists(root, distractors):
    ids = root / "image_ids"
    ids.mkdir(parents=True)
    (ids / "image_query_ids.txt").write_text(
        "a/query/Q000.jpg,10,10,50,50\nb/query/Q000.jpg,0,0,5,5\n"
    )
    (ids / "text_query_ids.txt").write_text("a/query/T000.txt\nb/query/T000.txt\n")
    (ids / "positive_ids.txt").write_text(
        "a/pos/P000.jpg,0.05,3\na/pos/P001.jpg,0.3,40\nb/pos/P000.jpg,0.1,20\n"
    )
    with gzip.open(ids / "distractor_ids.txt.gz", "wt") as handle:
        handle.write("".join(f"{d}\n" for d in distractors))


def test_score_a_reference_file_against_the_id_lists(tmp_path):
    _write_id_lists(tmp_path / "ilias", ["yfcc/1", "yfcc/2"])
    ids = read_ilias_ids(tmp_path / "ilias")
    assert ids.positive_info["a/pos/P001.jpg"] == (0.3, 40)
    assert ids.ground_truth["a"] == {"a/pos/P000.jpg", "a/pos/P001.jpg"}
    similarities = {
        # image query of a: positives at ranks 1 and 3 -> (1 + 2/3) / 2
        "a/query/Q000.jpg": {"a/pos/P000.jpg": 0.9, "yfcc/1": 0.8, "a/pos/P001.jpg": 0.7},
        # text query of b: positive at rank 2 -> 1/2
        "b/query/T000.txt": {"yfcc/2": 0.4, "b/pos/P000.jpg": 0.3},
    }
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(similarities))
    scored = score_similarity_file(path, tmp_path / "ilias", check_ids=True, breakdowns=True)
    assert scored.image.map == pytest.approx(100 * (1 + 2 / 3) / 2)
    assert scored.text.map == pytest.approx(50.0)
    assert scored.all.map == pytest.approx(100 * ((1 + 2 / 3) / 2 + 0.5) / 2)
    # the reference skips queries that the file lacks; they are reported, not scored 0
    assert scored.missing == ("b/query/Q000.jpg", "a/query/T000.txt")
    assert scored.missing_text == ("a/query/T000.txt",)
    assert scored.image.n_queries == 1
    # scale breakdown of the image query: P000 alone in [0, 0.069) at rank 1 -> 100
    assert scored.image_breakdowns.scale["0-0.06880213760855043"] == pytest.approx(100.0)
    # P001 alone in [0.273, inf): P000 removed, so it is at rank 2 -> 50
    assert scored.image_breakdowns.scale["0.2729876723163842-inf"] == pytest.approx(50.0)


def test_check_ids_on_a_file_needs_the_distractor_list(tmp_path):
    _write_id_lists(tmp_path / "ilias", ["yfcc/1"])
    (tmp_path / "ilias" / "image_ids" / "distractor_ids.txt.gz").unlink()
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"a/query/Q000.jpg": {"a/pos/P000.jpg": 1.0}}))
    with pytest.raises(DatasetError, match=r"distractor_ids\.txt\.gz"):
        score_similarity_file(path, tmp_path / "ilias", check_ids=True)
    assert score_similarity_file(path, tmp_path / "ilias").image.map == pytest.approx(50.0)


# ------------------------------------------------------ batch mAP: identity and speed


def _sklearn_ap(scores, relevant, n_relevant, k):
    order = np.argsort(-scores, kind="stable")[:k]
    y_true = relevant[order]
    if not y_true.any() or n_relevant <= 0:
        return 0.0
    return average_precision_score(y_true, scores[order]) * y_true.sum() / min(k, n_relevant)


@pytest.mark.parametrize("presorted", [True, False])
def test_batch_map_at_ilias_scale_is_identical_to_sklearn_and_fast(presorted):
    import time

    from ilias.eval import average_precision_at_k, average_precision_batch

    rng = np.random.default_rng(7)
    n_queries, n_results = 1232, 1000
    scores = np.round(rng.random((n_queries, n_results)), 3)  # ties in every row
    if presorted:
        scores = -np.sort(-scores, axis=1)
    rate = rng.uniform(0, 0.5, (n_queries, 1)) * np.exp(-np.arange(n_results) / 100)
    relevant = rng.random((n_queries, n_results)) < rate
    n_relevant = relevant.sum(axis=1) + rng.integers(0, 5, n_queries)
    began = time.perf_counter()
    ours = average_precision_batch(scores, relevant, n_relevant, k=1000)
    seconds = time.perf_counter() - began
    expected = np.array(
        [_sklearn_ap(scores[i], relevant[i], n_relevant[i], 1000) for i in range(n_queries)]
    )
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    assert 100 * ours.mean() == pytest.approx(100 * expected.mean(), abs=1e-12)
    assert seconds < 1.0  # about 0.03 s here; the sklearn loop takes about 0.9 s
    for i in range(0, n_queries, 97):  # the single-query function agrees (to rounding)
        single = average_precision_at_k(scores[i], relevant[i], n_relevant[i], 1000)
        assert ours[i] == pytest.approx(single, abs=1e-15)


def test_batch_map_with_short_rows_padded_and_small_k():
    from ilias.eval import average_precision_at_k, average_precision_batch

    rng = np.random.default_rng(3)
    scores = np.full((50, 40), -np.inf)
    relevant = np.zeros((50, 40), dtype=bool)
    rows = []
    for i in range(50):
        n = int(rng.integers(0, 40))
        s = rng.integers(0, 6, n) / 5
        r = rng.random(n) < 0.3
        scores[i, :n], relevant[i, :n] = s, r
        rows.append((s, r))
    n_relevant = relevant.sum(axis=1) + rng.integers(0, 3, 50)
    for k in (1, 5, 1000):
        batch = average_precision_batch(scores, relevant, n_relevant, k)
        single = [
            average_precision_at_k(s, r, int(g), k)
            for (s, r), g in zip(rows, n_relevant, strict=True)
        ]
        np.testing.assert_allclose(batch, single, rtol=0, atol=1e-15)


def test_eval_imports_numpy_only():
    """eval sits below every stage: importing it must not pull in torch, the store or plots."""
    import subprocess
    import sys

    code = (
        "import sys, ilias.eval, ilias.eval.gpr1200, ilias.eval.uned, ilias.eval.report\n"
        "heavy = ('torch', 'matplotlib', 'pyarrow', 'sklearn', 'ilias.indexing', 'ilias.query',"
        " 'ilias.loader')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_cli_says_a_file_of_image_queries_has_no_text_queries(tmp_path):
    from typer.testing import CliRunner

    from ilias.cli import app

    _write_id_lists(tmp_path / "ilias", ["yfcc/1"])
    path = tmp_path / "images.json"
    path.write_text(json.dumps({"a/query/Q000.jpg": {"a/pos/P000.jpg": 1.0}}))
    done = CliRunner().invoke(
        app, ["eval", "score", str(path), "--dataset", str(tmp_path / "ilias")],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "1 dataset image queries are not in the file (skipped)" in done.output
    assert "no text queries in the file (the dataset has 2)" in done.output
    assert "dataset queries are not in the file" not in done.output
