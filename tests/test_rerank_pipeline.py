"""Re-ranking on a real Qdrant Edge collection holding local descriptors of real photos."""

import numpy as np
import pytest

from ilias.errors import IliasError, StoreError
from ilias.indexing import (
    DEFAULT_ENCODER,
    EdgeStore,
    ExtractionOptions,
    LocalConfig,
    load_collection,
    load_image_for,
)
from ilias.loader import read_ilias
from ilias.query import QueryImage, Retriever, query_images_of, run_queries
from ilias.rerank import (
    AlphaQueryExpansion,
    ChamferRerank,
    SpatialRerank,
    chamfer_rank,
    expand_query,
    parse_rerankers,
    verify,
)
from ilias.types import Hit

pytestmark = pytest.mark.slow  # real photos, the real model, a real Qdrant Edge collection

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


def test_local_descriptors_are_stored_with_their_patch_centres(local_collection, encoder):
    bench, store, _ = local_collection
    config = store.collection_config("loc")
    assert config.local_dim == 112 and config.metadata["local"]["top_k_database"] == 30
    stored = store.retrieve_local("loc", [r.id for r in bench.database])
    assert set(stored) == {r.id for r in bench.database} - {
        "distractors/empty.jpg",
        "distractors/truncated.jpg",
    }
    moon = stored["distractors/moon.jpg"]
    assert moon.descriptors.shape == (30, 112)
    np.testing.assert_allclose(np.linalg.norm(moon.descriptors, axis=1), 1.0, atol=1e-5)
    # what the encoder gives for the same image, computed here without the load path
    record = next(r for r in bench.database if r.id == "distractors/moon.jpg")
    _, direct = encoder.encode_with_local([load_image_for(record, False)], 30, LOCAL)
    np.testing.assert_allclose(moon.descriptors, direct[0].descriptors, atol=1e-4)
    np.testing.assert_allclose(moon.xy, direct[0].xy, atol=0.05)  # stored to 0.1 pixel
    # geometry by hand: the 512 x 512 moon is resized to 224 (factor 0.4375); the stride-16
    # map is 14 x 14, so cell (r, c) has its centre at ((c + 0.5), (r + 0.5)) * 16 / 0.4375
    cells = moon.xy / (16 / 0.4375) - 0.5
    np.testing.assert_allclose(cells, np.round(cells), atol=0.05 / (16 / 0.4375))
    assert cells.min() >= 0 and cells.max() <= 13
    assert len({tuple(c) for c in np.round(cells).astype(int)}) == 30  # 30 distinct cells
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


def _sp_reference(store, query_local, hits, top, threshold=24.0):
    """SpatialRerank by hand: score + min(inliers, 20) / 20 for the top N, then sorted."""
    stored = store.retrieve_local("loc", [h.id for h in hits[:top]])
    rescored = [
        (
            h.id,
            h.score
            + min(
                verify(
                    query_local.descriptors,
                    query_local.xy,
                    stored[h.id].descriptors,
                    stored[h.id].xy,
                    threshold=threshold,
                ).inliers,
                20,
            )
            / 20,
        )
        for h in hits[:top]
    ]
    rescored.sort(key=lambda pair: -pair[1])
    return rescored + [(h.id, h.score) for h in hits[top:]]


def test_spatial_verification_gives_the_reference_order(local_collection, tiny_ilias):
    _, store, retriever = local_collection
    timings: dict[str, float] = {}
    hits = retriever.search_reranked(
        _cat_query(tiny_ilias), [SpatialRerank(top=17, threshold=40)], k=17, timings=timings
    )
    vectors, local = retriever.encode_with_local([_cat_query(tiny_ilias)])
    global_hits = retriever.search_vectors(vectors, 17)[0]
    expected = _sp_reference(store, local[0], global_hits, top=17, threshold=40)
    assert [h.id for h in hits] == [i for i, _ in expected]
    for hit, (_, score) in zip(hits, expected, strict=True):
        assert hit.score == pytest.approx(score, abs=1e-5)
    assert hits[0].payload["instance"] == "cat"
    assert set(timings) == {"global", "sp"}


def _ap_by_hand(ranked_ids, positives):
    found = [i for i, db_id in enumerate(ranked_ids, start=1) if db_id in positives]
    return sum(n / rank for n, rank in enumerate(found, start=1)) / len(positives)


def test_rerankers_compose_and_report_stage_times(local_collection):
    bench, store, retriever = local_collection
    steps = parse_rerankers(["cs", "aqe:n=1:alpha=1", "sp:top=5"])
    assert [s.name for s in steps] == ["cs", "aqe", "sp"]
    run = run_queries(bench, retriever, "image", rerank=steps)
    assert set(run.stage_seconds) == {"global+cs", "aqe", "sp"}
    # the same three steps by hand, for every query: Chamfer over the global shortlist
    # (numpy), alpha-QE with the new first hit (numpy brute force over the stored float32
    # vectors), then spatial verification of the top 5
    ids = [r.id for r in bench.database if r.id in store.retrieve_vectors("loc", [r.id])]
    assert len(ids) == 17
    vectors = store.retrieve_vectors("loc", ids)
    matrix = np.stack([vectors[i] for i in ids])
    local = store.retrieve_local("loc", ids)
    queries, query_local = retriever.encode_with_local(query_images_of(bench.image_queries))
    for query, vector, patches in zip(bench.image_queries, queries, query_local, strict=True):
        cs_order = chamfer_rank(patches.descriptors, {i: local[i].descriptors for i in ids})
        expanded = expand_query(vector, vectors[cs_order[0][0]][None], alpha=1)
        scores = matrix @ expanded
        aqe_hits = [Hit(ids[j], float(scores[j]), {}) for j in np.argsort(-scores, kind="stable")]
        expected = _sp_reference(store, patches, aqe_hits, top=5)
        assert [h.id for h in run.rankings[query.id]] == [i for i, _ in expected]
        for hit, (_, score) in zip(run.rankings[query.id], expected, strict=True):
            assert hit.score == pytest.approx(score, abs=1e-4)
        ap = _ap_by_hand([i for i, _ in expected], bench.positives_for(query.id))
        assert run.scores.per_query_ap[query.id] == pytest.approx(ap, abs=1e-9)
    plain = run_queries(bench, retriever, "image", rerank=[ChamferRerank()])
    for query, patches in zip(bench.image_queries, query_local, strict=True):
        reference = chamfer_rank(patches.descriptors, {i: local[i].descriptors for i in ids})
        assert [h.id for h in plain.rankings[query.id]] == [i for i, _ in reference]


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
