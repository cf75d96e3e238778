"""The load paths of the server backend: distributed Dask, worker uploads, versioned reload.

Real photos (``tiny_ilias``), the real offline model, a real ``dask.distributed`` cluster of
two worker *processes* reached through its ``tcp://`` address, exactly as
``--scheduler tcp://host:8786`` reaches a remote one.

What cannot run here is a Qdrant server that several processes share. So the worker-upload
path is tested in two honest halves: in real worker processes against each worker's own
in-process engine (showing that the workers, not the driver, write every point, and that
exactly the right points land once), and in one process against one shared in-process
engine (showing the whole load: collection created from the probed dimension, points
uploaded by the worker code, then searched). docs/deploy.md says the same.
"""

from __future__ import annotations

import uuid

import pytest

from ilias.errors import StoreError
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.indexing.encoders import cached_encoder
from ilias.indexing.extract import local_cluster
from ilias.indexing.load import list_versions, load_versioned
from ilias.indexing.store import CollectionConfig, ServerStore, open_store
from ilias.loader import read_ilias
from ilias.query import Retriever

pytestmark = [
    pytest.mark.slow,  # real photos through the real model, on real worker processes
    pytest.mark.filterwarnings(
        "ignore:.*local Qdrant.*:UserWarning",
        "ignore:Local mode performs exact.*:UserWarning",
        "ignore:Port 8787 is already in use:UserWarning",
    ),
]

SMALL = ExtractionOptions(
    encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=4, scheduler="sync"
)


@pytest.fixture(scope="module")
def bench(tiny_ilias):
    return read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes behind a scheduler address, as a remote cluster would be."""
    with local_cluster(2) as running:
        yield running


def _on_cluster(cluster, **overrides) -> ExtractionOptions:
    return ExtractionOptions(
        encoder=DEFAULT_ENCODER,
        resolution=224,
        batch_size=4,
        partition_size=3,
        scheduler=cluster.scheduler_address,
        **overrides,
    )


def test_tcp_scheduler_runs_the_bag_on_two_worker_processes(bench, cluster, tmp_path):
    from dask.distributed import Client

    assert cluster.scheduler_address.startswith("tcp://")
    with EdgeStore(tmp_path) as store:
        report = load_collection(bench.database, store, "c", _on_cluster(cluster))
        assert report.loaded == 17 and len(report.failures) == 2
        assert report.uploaded_by_workers == 0  # Edge: the driver owns the shard and writes
        assert store.count("c") == 17
    with Client(cluster.scheduler_address) as client:
        built = client.run(lambda: cached_encoder.cache_info().currsize)
    # both processes encoded, each building the model once (one spec, one resolution)
    assert sorted(built.values()) == [1, 1]


def test_workers_upload_their_partitions_directly(bench, cluster, encoder):
    """Each worker process writes its partitions itself; only ids come back to the driver.

    ``memory:NAME`` is one in-process engine per process, so each worker writes its own:
    the test creates the collection in every worker first (standing in for the shared
    server) and then reads the workers' engines back to see exactly who wrote what.
    """
    from dask.distributed import Client

    spec = f"memory:dist-{uuid.uuid4().hex[:8]}"
    config = CollectionConfig(
        dim=encoder.dim, metadata={"encoder": DEFAULT_ENCODER, "resolution": 224}
    )

    def create_collection():
        open_store(spec).create_collection("c", config)

    def stored_ids():
        store = open_store(spec)
        return sorted(h.id for h in store.search("c", _unit(config.dim), k=100)[0])

    with Client(cluster.scheduler_address) as client:
        client.run(create_collection)
        driver = open_store(spec)
        driver.create_collection("c", config)
        report = load_collection(
            bench.database, driver, "c", _on_cluster(cluster), upload="workers"
        )
        per_worker = client.run(stored_ids)

    assert report.loaded == report.uploaded_by_workers == 17 and len(report.failures) == 2
    assert driver.count("c") == 0  # not one vector went through the driver
    written = [i for ids in per_worker.values() for i in ids]
    expected = {r.id for r in bench.database} - {f.id for f in report.failures}
    assert sorted(written) == sorted(expected)  # every point once, no duplicates
    assert len(per_worker) == 2


def test_worker_upload_path_end_to_end_in_one_process(bench):
    """With one shared engine: probe the dimension, create, let the worker code upload."""
    store = ServerStore.memory(f"sync-{uuid.uuid4().hex[:8]}")
    report = load_collection(bench.database, store, "c", SMALL, upload="workers")
    assert report.uploaded_by_workers == report.loaded == 17 and len(report.failures) == 2
    assert store.count("c") == 17
    meta = store.collection_config("c").metadata
    assert (meta["encoder"], meta["resolution"]) == (DEFAULT_ENCODER, 224)
    hits = Retriever(store, "c").search_image(bench.image_queries[1].source, k=5)
    assert hits[0].payload["instance"] == "coffee"
    again = load_collection(bench.database, store, "c", SMALL, upload="workers")
    assert again.already_present == 17 and again.loaded == 0 and store.count("c") == 17


def test_upload_choice(bench, tmp_path):
    with EdgeStore(tmp_path) as edge, pytest.raises(StoreError, match="one owning process"):
        load_collection(bench.database, edge, "c", SMALL, upload="workers")
    with pytest.raises(StoreError, match="auto, driver or workers"):
        load_collection(bench.database, ServerStore.memory(), "c", SMALL, upload="both")
    # auto: a server URL is shared by every process, the in-process engine is not.
    assert open_store("http://qdrant:6333").shared_across_processes
    assert not ServerStore.memory().shared_across_processes
    assert EdgeStore(tmp_path).worker_spec() is None


def test_nothing_decodable_leaves_no_collection_behind(bench):
    store = ServerStore.memory()
    broken = [r for r in bench.database if r.id.endswith(("empty.jpg", "truncated.jpg"))]
    with pytest.raises(StoreError, match="could be decoded"):
        load_collection(broken, store, "c", SMALL, upload="workers")
    assert store.list_collections() == []


# -- zero-downtime reload ----------------------------------------------------------------


@pytest.fixture(params=["edge", "server"])
def any_store(request, tmp_path):
    store = EdgeStore(tmp_path / "q") if request.param == "edge" else ServerStore.memory()
    with store:
        yield store


def test_versioned_reload_swaps_the_alias(bench, any_store):
    store = any_store
    first = load_versioned(bench.database[:6], store, "ilias", SMALL)
    assert (first.collection, first.previous) == ("ilias-v1", None)
    assert store.resolve("ilias") == "ilias-v1" and store.count("ilias") == 6
    second = load_versioned(bench.database[:10], store, "ilias", SMALL, keep=2)
    assert (second.collection, second.previous) == ("ilias-v2", "ilias-v1")
    assert store.count("ilias") == 10 and store.count("ilias-v1") == 6  # v1 kept to roll back
    third = load_versioned(bench.database[:8], store, "ilias", SMALL, keep=1)
    assert third.collection == "ilias-v3" and third.dropped == ["ilias-v1", "ilias-v2"]
    assert [name for _, name in list_versions(store, "ilias")] == ["ilias-v3"]
    assert store.list_aliases() == {"ilias": "ilias-v3"} and store.count("ilias") == 8


def test_failed_reload_keeps_serving_the_old_version_then_resumes(bench, any_store):
    store = any_store
    load_versioned(bench.database[:4], store, "ilias", SMALL)
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=224, batch_size=2, partition_size=2, scheduler="sync"
    )
    upsert, calls = store.upsert, []

    def dies_on_second_partition(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the loader machine died")
        return upsert(*args, **kwargs)

    store.upsert = dies_on_second_partition
    with pytest.raises(RuntimeError):
        load_versioned(bench.database[:8], store, "ilias", options)
    assert store.resolve("ilias") == "ilias-v1" and store.count("ilias") == 4  # still serving
    assert store.count("ilias-v2") == 2  # the unfinished version holds the first partition
    store.upsert = upsert
    resumed = load_versioned(bench.database[:8], store, "ilias", options)
    assert resumed.resumed and resumed.collection == "ilias-v2"
    assert resumed.report.already_present == 2 and resumed.report.loaded == 6
    assert store.resolve("ilias") == "ilias-v2" and store.count("ilias") == 8


def test_an_existing_collection_cannot_become_an_alias(bench, any_store):
    store = any_store
    load_collection(bench.database[:2], store, "ilias", SMALL)
    with pytest.raises(StoreError, match="is a collection, not an alias"):
        load_versioned(bench.database[:2], store, "ilias", SMALL)


def _unit(dim: int):
    import numpy as np

    vector = np.ones((1, dim), dtype=np.float32)
    return vector / np.linalg.norm(vector)
