"""End to end on real photos with the real offline model: load (Dask), search, evaluate."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ilias.errors import StoreError
from ilias.indexing import (
    DEFAULT_ENCODER,
    EdgeStore,
    ExtractionOptions,
    load_collection,
    load_image_for,
)
from ilias.loader import DecodeFailure, read_ilias
from ilias.query import Retriever, query_images_of, run_image_queries

pytestmark = pytest.mark.slow  # every test here extracts real photos with the real model

SMALL = ExtractionOptions(
    encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=4, scheduler="sync"
)


@pytest.fixture(scope="module")
def bench(tiny_ilias):
    return read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")


def _ap_by_hand(ranked_ids, positives, k):
    """ILIAS AP@k for a ranking without ties: sum of P@i at positive ranks / min(k, |G|)."""
    found = [i for i, db_id in enumerate(ranked_ids[:k], start=1) if db_id in positives]
    return sum(n / rank for n, rank in enumerate(found, start=1)) / min(k, len(positives))


def _brute_force(bench, encoder):
    """Rankings of every image query over the decodable database, by numpy, from vectors
    encoded here (not read back from the store): what the whole load + search must give."""
    images = {r.id: load_image_for(r, crop_to_bbox=False) for r in bench.database}
    ids = [i for i, image in images.items() if not isinstance(image, DecodeFailure)]
    database = encoder.encode_images([images[i] for i in ids])
    queries = encoder.encode_images(
        [load_image_for(q, crop_to_bbox=True) for q in bench.image_queries]
    )
    rankings = {}
    for query, vector in zip(bench.image_queries, queries, strict=True):
        scores = database @ vector
        order = np.argsort(-scores, kind="stable")
        rankings[query.id] = [(ids[j], float(scores[j])) for j in order]
    return rankings


def test_load_counts_failures_and_search_finds_the_object(bench, encoder, tmp_path):
    with EdgeStore(tmp_path) as store:
        report = load_collection(bench.database, store, "c", SMALL)
        assert report.loaded == 17 and len(report.failures) == 2
        assert {f.id for f in report.failures} == {
            "distractors/empty.jpg",
            "distractors/truncated.jpg",
        }
        assert store.count("c") == 17 and store.info("c").indexed_vectors == 17
        retriever = Retriever(store, "c")
        expected = _brute_force(bench, encoder)
        query = bench.image_queries[1]  # coffee
        hits = retriever.search_image(query.source, k=5)
        assert [h.id for h in hits] == [i for i, _ in expected[query.id][:5]]
        assert hits[0].payload["instance"] == "coffee"
        # k = 5 < 17 images, so oracle and AP both depend on the ranking
        run = run_image_queries(bench, retriever, k=5)
        for query_id, ranking in expected.items():
            assert [h.id for h in run.rankings[query_id]] == [i for i, _ in ranking[:5]]
            for hit, (_, score) in zip(run.rankings[query_id], ranking, strict=False):
                assert hit.score == pytest.approx(score, abs=1e-4)
        positives = {q.id: bench.positives_for(q.id) for q in bench.image_queries}
        aps = {q: _ap_by_hand([i for i, _ in r], positives[q], 5) for q, r in expected.items()}
        assert run.scores.per_query_ap == pytest.approx(aps, abs=1e-9)
        assert run.scores.map == pytest.approx(100 * np.mean(list(aps.values())), abs=1e-9)
        oracle = [
            len({i for i, _ in r[:5]} & positives[q]) / min(5, len(positives[q]))
            for q, r in expected.items()
        ]
        assert run.scores.oracle == pytest.approx(100 * np.mean(oracle), abs=1e-9)
        filtered = retriever.search_image(query.source, k=50, filter={"role": "distractor"})
        distractors = [i for i, _ in expected[query.id] if i.startswith("distractors/")]
        assert len(distractors) == 8 and [h.id for h in filtered] == distractors


def test_reload_adds_nothing_and_other_encoder_is_refused(bench, tmp_path):
    with EdgeStore(tmp_path) as store:
        load_collection(bench.database, store, "c", SMALL)
        again = load_collection(bench.database, store, "c", SMALL)
        assert again.already_present == 17 and again.loaded == 0
        assert store.count("c") == 17
        other = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=320, scheduler="sync")
        with pytest.raises(StoreError, match="new collection"):
            load_collection(bench.database, store, "c", other)


def test_local_cluster_with_two_worker_processes(bench, tmp_path):
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER,
        resolution=224,
        batch_size=4,
        partition_size=3,
        scheduler="local",
        n_workers=2,
    )
    with EdgeStore(tmp_path) as store:
        report = load_collection(bench.database, store, "c", options)
        assert report.loaded == 17 and len(report.failures) == 2
        assert store.count("c") == 17


KILLED_LOAD = textwrap.dedent("""
    import os, signal, sys
    from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
    from ilias.indexing.store import edge
    from ilias.loader import read_ilias

    upserts = 0
    original = edge.EdgeStore.upsert
    def upsert_then_die(self, *args, **kwargs):
        global upserts
        original(self, *args, **kwargs)
        upserts += 1
        if upserts == 2:  # two partitions acknowledged, then the process dies hard
            os.kill(os.getpid(), signal.SIGKILL)
    edge.EdgeStore.upsert = upsert_then_die

    bench = read_ilias(sys.argv[1] + "/core", sys.argv[1] + "/distractors")
    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, batch_size=4,
                                partition_size=4, scheduler="sync")
    load_collection(bench.database, EdgeStore(sys.argv[2]), "c", options)
""")


@pytest.mark.faults
def test_kill_9_mid_load_then_resume_gives_exact_count(bench, tiny_ilias, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_LOAD, str(tiny_ilias), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    with EdgeStore(tmp_path) as store:
        survived = store.count("c")
        # the sync scheduler runs partitions in order: two partitions of 4 acknowledged
        # = the first 8 positives; the WAL kept exactly those, nothing more
        assert survived == 8
        assert set(store.retrieve_vectors("c", [r.id for r in bench.database])) == {
            r.id for r in bench.database[:8]
        }
        report = load_collection(bench.database, store, "c", SMALL)
        assert report.already_present == survived
        assert report.loaded == 17 - survived
        assert store.count("c") == 17
    assert os.path.isdir(tmp_path / "c" / "shard")


def test_demo_end_to_end_small_then_reused(tmp_path):
    from ilias.demo import run_demo

    kwargs = dict(n_instances=3, positives_per_instance=2, n_distractors=10, scheduler="sync")
    first = run_demo(tmp_path, **kwargs)
    database = first.benchmark.n_positives + first.benchmark.n_distractors
    assert first.load.loaded == database and not first.load.failures
    assert first.run.n_queries == first.benchmark.n_instances == 3
    # the run's rankings and APs, recomputed by numpy from the stored vectors
    bench = read_ilias(first.benchmark.core_dir, first.benchmark.distractor_dir)
    with EdgeStore(tmp_path / "qdrant") as store:
        retriever = Retriever(store, first.collection)
        stored = store.retrieve_vectors(first.collection, [r.id for r in bench.database])
        queries = retriever.encode_images(query_images_of(bench.image_queries))
    ids = list(stored)
    assert len(ids) == database
    matrix = np.stack([stored[i] for i in ids])
    for query, vector in zip(bench.image_queries, queries, strict=True):
        ranked = [ids[j] for j in np.argsort(-(matrix @ vector), kind="stable")]
        assert [h.id for h in first.run.rankings[query.id]] == ranked
        expected_ap = _ap_by_hand(ranked, bench.positives_for(query.id), 1000)
        assert first.run.scores.per_query_ap[query.id] == pytest.approx(expected_ap, abs=1e-9)
    again = run_demo(tmp_path, **kwargs)
    assert again.load.already_present == database and again.load.loaded == 0
    assert again.run.scores.per_query_ap == first.run.scores.per_query_ap
