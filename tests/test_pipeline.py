"""End to end on real photos with the real offline model: load (Dask), search, evaluate."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from ilias.errors import StoreError
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.loader import read_ilias
from ilias.query import Retriever, run_image_queries

SMALL = ExtractionOptions(
    encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=4, scheduler="sync"
)


@pytest.fixture(scope="module")
def bench(tiny_ilias):
    return read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")


def test_load_counts_failures_and_search_finds_the_object(bench, tmp_path):
    with EdgeStore(tmp_path) as store:
        report = load_collection(bench.database, store, "c", SMALL)
        assert report.loaded == 17 and len(report.failures) == 2
        assert {f.id for f in report.failures} == {
            "distractors/empty.jpg",
            "distractors/truncated.jpg",
        }
        assert store.count("c") == 17 and store.info("c").indexed_vectors == 17
        retriever = Retriever(store, "c")
        query = bench.image_queries[1]  # coffee
        hits = retriever.search_image(query.source, k=5)
        assert hits[0].payload["instance"] == "coffee"
        assert hits[0].id.startswith("coffee/pos/")
        run = run_image_queries(bench, retriever, k=1000)
        assert run.scores.oracle == pytest.approx(100.0)  # every positive is in the top 1000
        assert run.scores.map > 60.0
        filtered = retriever.search_image(query.source, k=50, filter={"role": "distractor"})
        assert filtered and all(h.payload["role"] == "distractor" for h in filtered)


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
        assert 0 < survived < 17  # the WAL kept the acknowledged upserts, nothing more
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
    assert first.run.scores.oracle == pytest.approx(100.0)  # database < k
    assert 0.0 < first.run.scores.map <= 100.0
    again = run_demo(tmp_path, **kwargs)
    assert again.load.already_present == database and again.load.loaded == 0
    assert again.run.scores.per_query_ap == first.run.scores.per_query_ap
