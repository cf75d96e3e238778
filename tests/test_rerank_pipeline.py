"""Re-ranking on a real Qdrant Edge collection holding local descriptors of real photos."""

import numpy as np
import pytest

from ilias.errors import IliasError, StoreError
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.indexing.local_features import LocalConfig
from ilias.loader import read_ilias
from ilias.query import QueryImage, Retriever, run_queries
from ilias.rerank import (
    AlphaQueryExpansion,
    ChamferRerank,
    SpatialRerank,
    chamfer_rank,
    expand_query,
    parse_rerankers,
)

LOCAL = LocalConfig(top_k_database=30, top_k_query=80)


@pytest.fixture(scope="module")
def local_collection(tiny_ilias, tmp_path_factory):
    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    store = EdgeStore(tmp_path_factory.mktemp("local_store"))
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync", partition_size=6, local=LOCAL
    )
    report = load_collection(bench.database, store, "loc", options)
    assert report.loaded == 17
    yield bench, store, Retriever(store, "loc")
    store.close()


def _cat_query(tiny_ilias):
    return QueryImage(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg")


def test_local_descriptors_are_stored_with_their_patch_centres(local_collection):
    bench, store, _ = local_collection
    config = store.collection_config("loc")
    assert config.local_dim == 112 and config.metadata["local"]["top_k_database"] == 30
    stored = store.retrieve_local("loc", [r.id for r in bench.database])
    assert len(stored) == 17
    moon = stored["distractors/moon.jpg"]
    assert moon.descriptors.shape == (30, 112)
    np.testing.assert_allclose(np.linalg.norm(moon.descriptors, axis=1), 1.0, atol=1e-5)
    assert (moon.xy >= 0).all() and (moon.xy[:, 0] <= 512).all() and (moon.xy[:, 1] <= 512).all()
    hits = store.search("loc", np.ones((1, 1280), np.float32), k=3)[0]
    assert "local_xy" not in hits[0].payload  # hits carry the user's payload only


def test_chamfer_inside_qdrant_matches_the_numpy_reference(local_collection, tiny_ilias):
    _bench, store, retriever = local_collection
    vectors, local = retriever.encode_with_local([_cat_query(tiny_ilias)])
    assert local[0].descriptors.shape[0] == 80  # the query side keeps more patches
    k = 10
    shortlist = [h.id for h in retriever.search_vectors(vectors, k)[0]]
    engine = store.search_local("loc", vectors[0], local[0].descriptors, k)
    stored = store.retrieve_local("loc", shortlist)
    reference = chamfer_rank(local[0].descriptors, {i: stored[i].descriptors for i in shortlist})
    assert [h.id for h in engine] == [i for i, _ in reference]
    for hit, (_, cs) in zip(engine, reference, strict=True):
        assert hit.score == pytest.approx(cs * 80, rel=1e-4)  # MAX_SIM is the sum form
    rescored = store.rescore_local("loc", local[0].descriptors, shortlist[::-1])
    assert [h.id for h in rescored] == [i for i, _ in reference]


def test_aqe_searches_again_with_the_expanded_query(local_collection, tiny_ilias):
    _, store, retriever = local_collection
    query = _cat_query(tiny_ilias)
    vector = retriever.encode_images([query])[0]
    first = retriever.search_vectors(vector[None], 17)[0]
    top2 = store.retrieve_vectors("loc", [h.id for h in first[:2]])
    expected = retriever.search_vectors(
        expand_query(vector, np.stack([top2[h.id] for h in first[:2]]), alpha=3)[None], 17
    )[0]
    got = retriever.search_reranked(query, [AlphaQueryExpansion(n=2, alpha=3)], k=17)
    assert [h.id for h in got] == [h.id for h in expected]


def test_spatial_verification_puts_the_object_first(local_collection, tiny_ilias):
    _, _, retriever = local_collection
    timings: dict[str, float] = {}
    hits = retriever.search_reranked(
        _cat_query(tiny_ilias), [SpatialRerank(top=17, threshold=40)], k=17, timings=timings
    )
    assert hits[0].payload["instance"] == "cat"
    again = retriever.search_reranked(_cat_query(tiny_ilias), [SpatialRerank(top=17)], k=17)
    assert [h.id for h in again] == [
        h.id
        for h in retriever.search_reranked(_cat_query(tiny_ilias), [SpatialRerank(top=17)], k=17)
    ]  # deterministic
    assert set(timings) == {"global", "sp"}


def test_rerankers_compose_and_report_stage_times(local_collection):
    bench, _, retriever = local_collection
    steps = parse_rerankers(["cs", "aqe:n=1:alpha=1", "sp:top=5"])
    assert [s.name for s in steps] == ["cs", "aqe", "sp"]
    run = run_queries(bench, retriever, "image", rerank=steps)
    assert set(run.stage_seconds) == {"global+cs", "aqe", "sp"}
    assert run.scores.oracle == pytest.approx(100.0) and run.scores.map > 30.0
    plain = run_queries(bench, retriever, "image", rerank=[ChamferRerank()])
    assert set(plain.rankings) == {q.id for q in bench.image_queries}


def test_parse_and_missing_local_errors(tiny_ilias, tmp_path):
    with pytest.raises(IliasError, match="unknown re-ranker"):
        parse_rerankers(["magic"])
    with pytest.raises(IliasError, match="ames-weights"):
        parse_rerankers(["ames"])
    with pytest.raises(IliasError, match="key=value"):
        parse_rerankers(["aqe:n"])
    bench = read_ilias(tiny_ilias / "core")
    with EdgeStore(tmp_path) as store:
        options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync")
        load_collection(bench.database[:3], store, "plain", options)
        retriever = Retriever(store, "plain")
        with pytest.raises(StoreError, match="--local"):
            retriever.search_reranked(_cat_query(tiny_ilias), [ChamferRerank()], k=3)
        with_local = ExtractionOptions(
            encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync", local=LOCAL
        )
        with pytest.raises(StoreError, match="without local descriptors"):
            load_collection(bench.database, store, "plain", with_local)
