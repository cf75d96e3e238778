"""The evaluation runner on a real tiny collection: one scoring, kinds, skips, wrappers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ilias.errors import IliasError
from ilias.eval import evaluate_rankings
from ilias.loader import read_ilias
from ilias.query import EXACT, Retriever, evaluate_collection, run_image_queries, run_queries

pytestmark = pytest.mark.slow

NO_TEXT = (
    "the encoder has no text tower; load the collection with a vision-language encoder "
    "(open_clip:..., or a timm CLIP, SigLIP, EVA-CLIP or PE name)"
)


@pytest.fixture(scope="module")
def store(tiny_store):
    return tiny_store


def test_every_kind_runs_or_says_why(store) -> None:
    stages: list[tuple[str, int, int]] = []
    evaluation = evaluate_collection(
        store, "tiny", kinds=("image", "text", "hybrid"), progress=lambda *s: stages.append(s)
    )
    assert list(evaluation.runs) == ["image"]
    assert evaluation.skipped == {"text": NO_TEXT, "hybrid": NO_TEXT}
    # encoding, then the one exact pass over the 17 stored points (ilias.query.exact)
    assert stages == [("image queries", 3, 3), ("exact search", 17, 17)]
    assert evaluation.benchmark.name == "core"  # read from the collection's metadata
    assert (evaluation.collection, evaluation.k, evaluation.resolution) == ("tiny", 1000, 224)
    run = evaluation.run("image")
    truth = {
        q.id: evaluation.benchmark.positives_for(q.id) for q in evaluation.benchmark.image_queries
    }
    assert run.scores == evaluate_rankings(run.pairs(), truth, 1000)
    assert run.scores.map == 100.0  # every query's three positives come first
    assert sorted(evaluation.timings) == ["image_encode_s", "image_search_s", "score_s"]


def test_the_readme_wrappers_give_the_same_run(store, tiny_ilias: Path) -> None:
    bench = read_ilias(tiny_ilias / "core")
    retriever = Retriever(store, "tiny")
    wrapped = run_image_queries(bench, retriever, params=EXACT)
    direct = evaluate_collection(store, "tiny", bench).run("image")
    # The engine's per-query scan and the batched pass (ilias.query.exact) sum the same
    # products in another order: the same lists, scores equal to float32 rounding.
    for query, pairs in wrapped.pairs().items():
        assert [i for i, _ in pairs] == [i for i, _ in direct.pairs()[query]]
        assert [s for _, s in pairs] == pytest.approx([s for _, s in direct.pairs()[query]])
    assert wrapped.scores == direct.scores
    assert run_queries(bench, retriever, "image", k=2).scores.per_query_ap == {
        "cat/query/Q000.jpg": 1.0,  # AP@2 over min(2, 3) positives, both in the top 2
        "coffee/query/Q000.jpg": 1.0,
        "rocket/query/Q000.jpg": 1.0,
    }
    with pytest.raises(IliasError, match="open_clip"):
        run_queries(bench, retriever, "text")


def test_a_filter_and_k_reach_every_query(store) -> None:
    evaluation = evaluate_collection(store, "tiny", k=5, filter={"role": "distractor"})
    run = evaluation.run("image")
    assert all(len(hits) == 5 for hits in run.rankings.values())
    ranked = {h.id for hits in run.rankings.values() for h in hits}
    roles = store.stored_payloads("tiny", sorted(ranked), ["role"])
    assert {payload["role"] for payload in roles.values()} == {"distractor"}
    assert run.scores.map == 0.0 and run.scores.oracle == 0.0


def test_breakdowns_by_scale_and_clutter(store) -> None:
    run = evaluate_collection(store, "tiny", breakdowns=True).run("image")
    assert run.breakdowns is not None
    assert run.breakdowns.clutter == {"0-18": 100.0}


def test_mistakes_are_user_errors(store, tiny_ilias: Path) -> None:
    with pytest.raises(IliasError) as raised:
        evaluate_collection(store, "tiny", kinds=("video",))
    assert str(raised.value) == "query kind 'video': use image, text or hybrid"
    with pytest.raises(IliasError) as raised:
        evaluate_collection(store, "tiny", k=0)
    assert str(raised.value) == "k = 0: ask for at least one result per query"
    with pytest.raises(IliasError, match="unknown re-ranker 'magic'"):
        evaluate_collection(store, "tiny", rerank=["magic"])
