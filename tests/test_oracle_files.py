"""Similarity files of a collection smaller than k: the reference's evaluator gives ilias's
oracle on ilias's pickles, and ilias reads the reference's padded rows as no results.

The reference's side is re-stated here, not imported: its faiss search fills a row of
fewer than k neighbours with score ``-3.4028235e38`` (the lowest float32) and label -1,
its pickle writer re-indexes the labels with ``np.unique`` (so -1 names the database's
last id), and its evaluator computes AP with sklearn and the oracle as
``y_true.mean() * k / len(gt)`` over the top k of each row.
"""

from __future__ import annotations

import json
import logging
import pickle

import numpy as np
from sklearn.metrics import average_precision_score

from ilias.eval import IliasIds, read_similarities, score_rankings, write_similarities

K = 1000
FAISS_EMPTY = np.float32(-3.4028235e38)


def _reference_query(truth, ids, scores, ranks, k):
    """(AP, oracle) of one query as the reference's ``_compute_AP``."""
    order = np.argsort(-scores, kind="stable")
    top_ids = ids[ranks[order][:k]]
    y_true = np.isin(top_ids, list(truth))
    if not y_true.any():
        return 0.0, 0.0
    ap = average_precision_score(y_true, scores[order][:k]) * y_true.sum() / min(k, len(truth))
    return ap, y_true.mean() * (k / len(truth))


def _reference_evaluate(truth, document, k=K):
    """(mAP, oracle) x100 from a loaded pickle dict or JSON dict, as ``evaluate.py``."""
    results = []
    if "query_ids" in document:
        db_ids = np.asarray(document["db_ids"])
        for q, s, r in zip(document["query_ids"], document["sims"], document["ranks"], strict=True):
            results.append(_reference_query(truth[q.split("/")[0]], db_ids, s, r, k))
    else:
        for q, row in document.items():
            ids, scores = np.array(list(row)), np.array(list(row.values()))
            results.append(
                _reference_query(truth[q.split("/")[0]], ids, scores, np.arange(len(ids)), k)
            )
    aps, oracles = zip(*results, strict=True)
    return 100 * float(np.mean(aps)), 100 * float(np.mean(oracles))


def _small_collection(seed=0):
    """3 instances x 2 queries over 40 images (3 positives each, 31 distractors)."""
    rng = np.random.default_rng(seed)
    positives = {f"inst{i}": [f"inst{i}/pos/P{j}.jpg" for j in range(3)] for i in range(3)}
    database = [p for ps in positives.values() for p in ps]
    database += [f"00000.tar/{n:05d}" for n in range(31)]
    rankings = {}
    for instance in positives:
        for q in range(2):
            scores = rng.random(len(database)).astype(np.float32)
            ranking = sorted(zip(database, scores.tolist(), strict=True), key=lambda p: -p[1])
            rankings[f"{instance}/query/Q{q}.jpg"] = ranking
    ids = IliasIds(
        image_query_ids=tuple(sorted(rankings)),
        text_query_ids=(),
        positive_info={p: (0.1, 10) for ps in positives.values() for p in ps},
    )
    truth = {i: set(ps) for i, ps in positives.items()}
    return rankings, ids, truth


def test_the_reference_s_evaluator_gives_ilias_s_oracle_on_ilias_s_pickle(tmp_path):
    rankings, ids, truth = _small_collection()
    ilias = score_rankings(rankings, ids, k=K).all
    assert ilias.oracle == 100.0  # every positive is among the 40 results

    path = write_similarities(tmp_path / "similarities.pkl", rankings, k=K)
    with path.open("rb") as f:
        document = pickle.load(f)
    # The rows are what the reference's search writes: k entries, faiss's empty score last,
    # pointing at an id that is no positive of the query.
    assert document["sims"].shape == (6, K) and document["ranks"].shape == (6, K)
    assert document["sims"].dtype == np.float32
    assert (document["sims"][:, 40:] == FAISS_EMPTY).all()
    for q, ranks in zip(document["query_ids"], document["ranks"], strict=True):
        fillers = set(document["db_ids"][ranks[40:]].tolist())
        assert len(fillers) == 1 and not fillers & truth[q.split("/")[0]]

    reference_map, reference_oracle = _reference_evaluate(truth, document)
    assert reference_oracle == ilias.oracle
    assert abs(reference_map - ilias.map) < 1e-9
    # Read back by ilias, the padding is no result: the same rankings, the same numbers.
    assert read_similarities(path) == {q: list(r) for q, r in rankings.items()}


def test_a_json_file_states_the_reference_s_other_oracle(tmp_path, caplog):
    rankings, ids, truth = _small_collection(1)
    ilias = score_rankings(rankings, ids, k=K).all
    with caplog.at_level(logging.WARNING, logger="ilias.eval.results"):
        path = write_similarities(tmp_path / "similarities.json", rankings, k=K)
    assert "6 of 6 queries have fewer than k=1000 results" in caplog.text
    assert "hits / results x k / positives" in caplog.text
    reference_map, reference_oracle = _reference_evaluate(truth, json.loads(path.read_text()))
    assert abs(reference_map - ilias.map) < 1e-9
    # The difference the warning names: 3 of 3 positives in 40 results -> 3/40 * 1000/3.
    assert abs(reference_oracle - 100 * K / 40) < 1e-9 and ilias.oracle == 100.0
    caplog.clear()
    write_similarities(tmp_path / "full.json", rankings, k=40)  # rows of k: nothing to say
    assert not caplog.text


def test_a_reference_pickle_of_a_small_database_reads_as_its_results(tmp_path):
    """The reference's search over 5 vectors with k=8: labels -1 re-indexed to the last id."""
    db_ids = np.array(["a/pos/1.jpg", "a/pos/2.jpg", "00000.tar/x", "00000.tar/y", "00000.tar/z"])
    faiss_ranks = np.array([[1, 3, 0, 2, 4, -1, -1, -1]])
    faiss_sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5, *[FAISS_EMPTY] * 3]], dtype=np.float32)
    unique, inverse = np.unique(faiss_ranks, return_inverse=True)
    document = {
        "query_ids": ["a/query/Q.jpg"],
        "db_ids": np.array([db_ids[u] for u in unique]),  # -1 -> the last id, as in Python
        "sims": faiss_sims,
        "ranks": inverse.reshape(faiss_ranks.shape),
    }
    path = tmp_path / "reference.pkl"
    path.write_bytes(pickle.dumps(document))
    expected = [
        (str(db_ids[r]), float(s))
        for r, s in zip(faiss_ranks[0][:5], faiss_sims[0][:5], strict=True)
    ]
    assert read_similarities(path) == {"a/query/Q.jpg": expected}
