"""What the CLI prints and scripted runs write, as library functions, checked exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ilias.errors import IliasError
from ilias.eval import evaluate_rankings, read_similarities
from ilias.eval.report import PerQueryRow
from ilias.loader import read_ilias
from ilias.query import (
    BenchmarkRun,
    Evaluation,
    evaluation_summary,
    hits_json,
    hits_table_rows,
    per_query_rows,
    run_summary_json,
    write_similarity_files,
)
from ilias.types import Hit

HITS = [
    Hit("cat/pos/P000.jpg", 0.9, {"id": "cat/pos/P000.jpg", "path": "/d/cat/pos/P000.jpg",
                                  "instance": "cat", "role": "positive", "scale": 0.56}),
    Hit("distractors/moon.jpg", 0.25, {"id": "distractors/moon.jpg", "role": "distractor"}),
]  # fmt: skip


def test_hit_rows_as_the_search_table_prints_them() -> None:
    rows = hits_table_rows(HITS)
    assert [row.cells() for row in rows] == [
        ("1", "0.9000", "cat/pos/P000.jpg", "cat", "positive", '{"scale": 0.56}'),
        ("2", "0.2500", "distractors/moon.jpg", "", "distractor", ""),
    ]
    assert rows[0].extra == {"scale": 0.56}
    assert hits_table_rows([]) == []


def test_hits_json_keeps_the_whole_payload() -> None:
    assert hits_json(HITS) == [
        {"rank": 1, "id": "cat/pos/P000.jpg", "score": 0.9, "payload": HITS[0].payload},
        {"rank": 2, "id": "distractors/moon.jpg", "score": 0.25, "payload": HITS[1].payload},
    ]
    assert json.loads(json.dumps(hits_json(HITS))) == hits_json(HITS)


def _run(kind: str, rankings: dict[str, list[Hit]], truth: dict[str, set[str]]) -> BenchmarkRun:
    pairs = {q: [(h.id, h.score) for h in hits] for q, hits in rankings.items()}
    return BenchmarkRun(evaluate_rankings(pairs, truth, 1000), rankings, 0.5, 0.25, kind=kind)


@pytest.fixture()
def evaluation(tiny_ilias: Path) -> Evaluation:
    """Hand rankings of the tiny dataset's image queries: cat perfect, coffee half, rocket
    nothing; AP by hand: cat 1, coffee (1/2 + 2/4) / 3 = 1/3, rocket 0."""
    bench = read_ilias(tiny_ilias / "core")

    def hits(*ids: str) -> list[Hit]:
        return [Hit(i, 1.0 - n / 10, {}) for n, i in enumerate(ids)]

    rankings = {
        "cat/query/Q000.jpg": hits("cat/pos/P000.jpg", "cat/pos/P001.jpg", "cat/pos/P002.jpg"),
        "coffee/query/Q000.jpg": hits(
            "distractors/moon.jpg",
            "coffee/pos/P000.jpg",
            "rocket/pos/P000.jpg",
            "coffee/pos/P001.jpg",
        ),
        "rocket/query/Q000.jpg": hits("distractors/moon.jpg"),
    }
    truth = {q.id: set(bench.positives_for(q.id)) for q in bench.image_queries}
    run = _run("image", rankings, truth)
    return Evaluation(bench, "tiny", 1000, {"image": run}, {"text": "no text tower"}, 0.0)


def test_run_summary_json(evaluation: Evaluation) -> None:
    summary = run_summary_json(evaluation.run("image"))
    assert summary == {
        "kind": "image",
        "k": 1000,
        "n_queries": 3,
        "map": pytest.approx(100 * (1 + 1 / 3 + 0) / 3),
        "oracle": pytest.approx(100 * (1 + 2 / 3 + 0) / 3),
        "search": "exact",
        "recall": None,
        "recall_queries": 0,
        "per_query_ap": {
            "cat/query/Q000.jpg": 1.0,
            "coffee/query/Q000.jpg": pytest.approx(1 / 3),
            "rocket/query/Q000.jpg": 0.0,
        },
        "per_query_oracle": {
            "cat/query/Q000.jpg": 1.0,
            "coffee/query/Q000.jpg": pytest.approx(2 / 3),
            "rocket/query/Q000.jpg": 0.0,
        },
    }


def test_evaluation_summary_and_per_query_rows(evaluation: Evaluation) -> None:
    assert evaluation_summary(evaluation) == {
        "image": {
            "map": pytest.approx(100 * (4 / 3) / 3),
            "oracle": pytest.approx(100 * (5 / 3) / 3),
            "n_queries": 3,
            "search": "exact",
            "recall": None,
            "recall_queries": 0,
            "breakdowns": None,
        },
        "text": {"skipped": "no text tower"},
    }
    assert per_query_rows(evaluation) == [
        PerQueryRow("cat/query/Q000.jpg", "cat", "image", 1.0, 1.0, 3),
        PerQueryRow("coffee/query/Q000.jpg", "coffee", "image", pytest.approx(1 / 3),
                    pytest.approx(2 / 3), 3),
        PerQueryRow("rocket/query/Q000.jpg", "rocket", "image", 0.0, 0.0, 3),
    ]  # fmt: skip


def test_similarity_files_hold_the_rankings(evaluation: Evaluation, tmp_path: Path) -> None:
    names = write_similarity_files(evaluation, tmp_path, ("json", "pickle"))
    assert names == ["similarities.json", "similarities.pkl"]
    expected = evaluation.run("image").pairs()
    for name in names:
        assert {q: list(r) for q, r in read_similarities(tmp_path / name).items()} == expected


def test_a_kind_that_did_not_run_says_why(evaluation: Evaluation) -> None:
    for kind, reason in (("text", "no text tower"), ("hybrid", "it was not asked for")):
        with pytest.raises(IliasError) as raised:
            evaluation.run(kind)
        assert str(raised.value) == f"no {kind} queries were run: {reason}"


def test_printing_an_evaluation_is_one_short_line(evaluation: Evaluation) -> None:
    """``print(evaluation)`` in a notebook or script: the scores, not the rankings."""
    shown = repr(evaluation)
    assert "\n" not in shown and len(shown) < 400, shown
    run = evaluation.run("image")
    assert f"map@1000={run.scores.map:.2f}" in shown and "collection='tiny'" in shown
    assert "skipped={'text': 'no text tower'}" in shown
