"""What only the server engine does: the calls it sends, specs, retries, snapshots.

No Qdrant server runs on these machines. ``QdrantClient(":memory:")`` speaks the same client
API as a server; the behaviour every engine shares (search, counts, filters, vectors,
idempotent upserts, aliases, local multivectors) is the contract suite in test_store.py,
run on it and on Edge. That engine accepts but ignores quantization, HNSW, sharding and
payload indexes, so those are checked on what ServerStore *sends*: a recorder forwards
each call to the real engine and keeps its arguments. The retry tests inject a client that
raises qdrant-client's real exception types on purpose (a stand-in for the network, not
for the database), and two tests use the real transports against a closed port and a
socket that never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ilias.errors import StoreError, VectorValidationError
from ilias.indexing.store import (
    CollectionConfig,
    RetryPolicy,
    SearchParams,
    ServerOptions,
    ServerStore,
    open_store,
    point_id,
)
from ilias.indexing.store.retry import transient_reason

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*local Qdrant.*:UserWarning",
    "ignore:Local mode performs exact.*:UserWarning",
    "ignore:Api key is used with an insecure connection:UserWarning",
)


class Recorder:
    """Forwards every call to a real in-process QdrantClient and keeps (method, kwargs)."""

    def __init__(self, client: QdrantClient):
        self._client = client
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append((name, kwargs))
            return attr(*args, **kwargs)

        return call

    def sent(self, name: str) -> list[dict]:
        return [kwargs for method, kwargs in self.calls if method == name]


def _vectors(n, dim, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _recorded(**options) -> tuple[ServerStore, Recorder]:
    recorder = Recorder(QdrantClient(":memory:"))
    return ServerStore.memory(options=ServerOptions(**options), client=recorder), recorder


def _fill(store, n=500, dim=32, name="c"):
    store.create_collection(name, CollectionConfig(dim=dim, metadata={"encoder": "e"}))
    ids = [f"inst{i % 5}/pos/P{i:04d}.jpg" for i in range(n)]
    payloads = [
        {
            "id": i,
            "instance": f"inst{j % 5}",
            "role": "positive" if j % 2 else "distractor",
            "scale": j / n,
        }
        for j, i in enumerate(ids)
    ]
    x = _vectors(n, dim)
    store.upsert(name, ids, x, payloads)
    store.finish_load(name)
    return ids, x


@pytest.fixture
def store():
    with ServerStore.memory() as s:
        yield s


# -- what ServerStore sends -------------------------------------------------------------


def test_create_sends_int8_deferred_indexing_sharding_and_payload_indexes():
    store, sent = _recorded(shards=6, replicas=2, write_consistency=2, on_disk=True)
    store.create_collection("c", CollectionConfig(dim=32, metadata={"encoder": "e"}))
    (create,) = sent.sent("create_collection")
    scalar = create["quantization_config"].scalar
    assert scalar.type == models.ScalarType.INT8
    assert scalar.quantile == 0.99 and scalar.always_ram is True  # int8 copies stay in RAM
    assert create["optimizers_config"].indexing_threshold == 0  # no HNSW during the load
    assert (create["hnsw_config"].m, create["hnsw_config"].ef_construct) == (16, 128)
    assert create["shard_number"] == 6 and create["replication_factor"] == 2
    assert create["write_consistency_factor"] == 2
    vector = create["vectors_config"]["global"]
    assert (vector.size, vector.distance, vector.on_disk) == (32, models.Distance.COSINE, True)
    created = {kw["field_name"]: kw["field_schema"] for kw in sent.sent("create_payload_index")}
    assert created == {
        "id": models.PayloadSchemaType.KEYWORD,
        "instance": models.PayloadSchemaType.KEYWORD,
        "role": models.PayloadSchemaType.KEYWORD,
        "scale": models.PayloadSchemaType.FLOAT,
        "clutter": models.PayloadSchemaType.INTEGER,
        "shard": models.PayloadSchemaType.KEYWORD,
        "selection": models.PayloadSchemaType.KEYWORD,
    }
    assert all(kw["wait"] is True for kw in sent.sent("create_payload_index"))

    # What the engine kept and returns: the vector params and the ilias recipe (metadata).
    details = sent._client.get_collection("c")
    assert details.config.params.vectors["global"].size == 32
    assert details.config.params.vectors["global"].distance == models.Distance.COSINE
    assert details.config.metadata["ilias"]["quantization"]["quantile"] == 0.99
    assert store.collection_config("c").metadata == {"encoder": "e"}

    store.finish_load("c")
    (update,) = sent.sent("update_collection")
    assert update["optimizers_config"].indexing_threshold == 20_000  # indexing back on


def test_upsert_is_batched_waited_and_validated_before_sending():
    store, sent = _recorded(batch=64)
    ids, _x = _fill(store)
    upserts = sent.sent("upsert")
    assert len(upserts) == 8  # ceil(500 / 64)
    assert all(u["wait"] is True for u in upserts)
    assert sum(len(u["points"].ids) for u in upserts) == 500
    assert upserts[0]["points"].ids[0] == point_id(ids[0])
    nan = _vectors(2, 32)
    nan[1, 3] = np.nan
    with pytest.raises(VectorValidationError, match=r"b\.jpg"):
        store.upsert("c", ["a.jpg", "b.jpg"], nan, [{}, {}])
    with pytest.raises(VectorValidationError, match="32-d"):
        store.upsert("c", ["a.jpg"], _vectors(1, 16), [{}])
    with pytest.raises(VectorValidationError, match="zero"):
        store.upsert("c", ["a.jpg"], np.zeros((1, 32), np.float32), [{}])
    assert len(sent.sent("upsert")) == 8 and store.count("c") == 500  # nothing reached it


def test_search_sends_exact_ef_and_quantization_params_in_chunks():
    store, sent = _recorded()
    _fill(store)
    params = SearchParams(exact=True, hnsw_ef=300, oversampling=2.0, rescore=False)
    hits = store.search("c", _vectors(130, 32, seed=1), k=7, params=params)
    assert len(hits) == 130 and all(len(row) == 7 for row in hits)
    batches = sent.sent("query_batch_points")
    assert [len(b["requests"]) for b in batches] == [64, 64, 2]
    request = batches[0]["requests"][0]
    assert (
        request.using == "global"
        and request.limit == 7
        and request.with_payload.exclude == ["local_xy"]
    )
    assert request.params.exact is True and request.params.hnsw_ef == 300
    assert request.params.quantization.oversampling == 2.0
    assert request.params.quantization.rescore is False
    assert request.params.quantization.ignore is False


def test_info_reports_what_the_engine_applies_not_what_was_asked(store):
    _fill(store, n=50)
    info = store.info("c")
    assert info.points == 50 and info.config.quantization  # asked for int8...
    assert info.quantization is None  # ...and the in-process engine says it applies none
    assert info.status == "green" and info.location.endswith("/collections/c")


# -- behaviour the contract suite (test_store.py) cannot show on Edge ---------------------


def test_another_tools_collection_opens_and_is_searched_by_vector(store):
    """No ilias metadata: searchable by vector under its own point ids; images and texts are
    refused with the fix (which encoder to pass); writes are refused."""
    from ilias.query import Retriever

    raw = store.engine.client
    raw.create_collection(
        "other",
        vectors_config={"global": models.VectorParams(size=4, distance=models.Distance.COSINE)},
    )
    x = _vectors(3, 4, seed=5)
    raw.upsert(
        "other",
        points=[
            # An "id" key of their own: hits are still named by point id, not by it.
            models.PointStruct(
                id=i + 1, vector={"global": x[i].tolist()}, payload={"k": i, "id": f"their-{i}"}
            )
            for i in range(3)
        ],
    )
    config = store.collection_config("other")
    assert (config.dim, config.managed, dict(config.metadata)) == (4, False, {})
    retriever = Retriever(store, "other")  # no KeyError: the encoder is only needed for images
    (hits,) = retriever.search_vectors(x[1:2], k=3)
    assert hits[0].id == "2" and hits[0].payload == {"k": 1, "id": "their-1"}
    stored = store.retrieve_vectors("other", [hits[0].id])
    np.testing.assert_allclose(stored["2"], x[1], atol=1e-6)
    with pytest.raises(StoreError, match=r"records no encoder.*--encoder SPEC"):
        retriever.search_image(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(StoreError, match="not created by ilias"):
        store.upsert("other", ["a.jpg"], _vectors(1, 4), [{}])
    raw.create_collection(
        "alien", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT)
    )
    with pytest.raises(StoreError, match="not created by ilias"):
        store.collection_config("alien")


def test_searches_do_not_re_read_the_collection():
    """One read of the collection per handle; aliases are resolved by the server itself."""
    store, sent = _recorded()
    _fill(store, n=20)
    before = len(sent.calls)
    for seed in range(5):
        store.search("c", _vectors(1, 32, seed=seed), k=3)
    calls = [name for name, _ in sent.calls[before:]]
    assert calls == ["query_batch_points"] * 5


def test_alias_swap_sends_one_atomic_request():
    store, sent = _recorded()
    _fill(store, n=5, name="v1")
    _fill(store, n=5, name="v2")
    store.set_alias("live", "v1")
    store.set_alias("live", "v2")
    swap = sent.sent("update_collection_aliases")[-1]["change_aliases_operations"]
    assert [type(op).__name__ for op in swap] == ["DeleteAliasOperation", "CreateAliasOperation"]


# -- specs --------------------------------------------------------------------------------


def test_specs_select_the_engine_and_options(monkeypatch):
    monkeypatch.setenv("QDRANT_API_KEY", "s3cret")
    store = open_store("http://qdrant:6333?grpc=true&shards=6&replicas=2&on_disk=true")
    assert isinstance(store, ServerStore) and store.location == "http://qdrant:6333"
    assert store.options == ServerOptions(grpc=True, shards=6, replicas=2, on_disk=True)
    assert store.engine.client.init_options["prefer_grpc"] is True
    assert store.engine.client.init_options["api_key"] == "s3cret"
    assert "s3cret" not in store.spec and "s3cret" not in store.worker_spec()
    assert open_store(store.spec).options == store.options  # the spec round-trips
    grpc = open_store("grpc://qdrant:7334")
    assert grpc.engine.client.init_options["prefer_grpc"] is True
    assert grpc.engine.client.init_options["grpc_port"] == 7334
    for bad, message in [
        ("http://q:6333?api_key=x", "QDRANT_API_KEY"),
        ("http://q:6333?shard=3", "unknown store option 'shard'"),
        ("http://q:6333?shards=zero", "whole number"),
        ("http://q:6333?grpc=maybe", "true or false"),
        ("qdrant:6333", "http://host:6333"),
    ]:
        with pytest.raises(StoreError, match=message):
            open_store(bad)


def test_memory_specs_share_within_a_process_only_by_name():
    first, second = open_store("memory:shared-test"), open_store("memory:shared-test")
    _fill(first, n=5)
    assert second.count("c") == 5
    assert open_store(":memory:").list_collections() == []
    assert open_store("memory:").list_collections() == []
    assert not first.shared_across_processes  # loads funnel through the driver by default
    assert first.worker_spec() == "memory:shared-test"


def test_open_store_default_comes_from_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ILIAS_STORE", raising=False)
    monkeypatch.delenv("ILIAS_CONFIG", raising=False)
    (tmp_path / "ilias.toml").write_text('store = "memory:from-config"\n')
    assert open_store().location == "memory:from-config"
    monkeypatch.setenv("ILIAS_STORE", "memory:from-env")
    assert open_store().location == "memory:from-env"  # environment beats the file


# -- retries: a client that fails on purpose with qdrant-client's real exception types -----


def _grpc_error(code_name: str) -> Exception:
    import grpc

    class Error(grpc.RpcError):
        def code(self):
            return getattr(grpc.StatusCode, code_name)

        def details(self):
            return f"{code_name} on purpose"

    return Error()


def _http(status: int, message: str = "on purpose") -> UnexpectedResponse:
    body = json.dumps({"status": {"error": message}}).encode()
    return UnexpectedResponse(status, "Reason", body, httpx.Headers())


class Flaky:
    """Raises the queued exceptions for a method, then forwards to the real engine."""

    def __init__(self, failures: dict[str, list[Exception]]):
        self._client = QdrantClient(":memory:")
        self.failures = failures
        self.attempts: dict[str, int] = {}

    def __getattr__(self, name):
        attr = getattr(self._client, name)

        def call(*args, **kwargs):
            self.attempts[name] = self.attempts.get(name, 0) + 1
            queue = self.failures.get(name)
            if queue:
                raise queue.pop(0)
            return attr(*args, **kwargs)

        return call


URL = "http://qdrant.example:6333"


def _flaky_store(failures, attempts=4, **options):
    sleeps: list[float] = []
    client = Flaky(failures)
    store = ServerStore(
        URL,
        ServerOptions(**options),
        client=client,
        retry=RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=1.5, jitter=0.0),
        sleep=sleeps.append,
    )
    return store, client, sleeps


def test_transient_errors_are_retried_with_backoff_then_succeed():
    failures = {
        "upsert": [
            ResponseHandlingException(httpx.ReadTimeout("timed out")),
            _http(503),
            _grpc_error("UNAVAILABLE"),
        ],
        "get_aliases": [ResponseHandlingException(httpx.ConnectError("refused"))],
    }
    store, client, sleeps = _flaky_store(failures, parallel=1)
    _fill(store, n=20)
    assert store.count("c") == 20
    assert client.attempts["upsert"] == 4  # three failures, then the batch went through
    assert sleeps == [0.5, 0.5, 1.0, 1.5]  # per call: 0.5, then 0.5 -> 1.0 -> 1.5 (capped)


def test_rate_limit_honours_retry_after():
    store, _client, sleeps = _flaky_store(
        {"get_collections": [ResourceExhaustedResponse("slow down", 7)]}
    )
    assert store.list_collections() == []
    assert sleeps == [7.0]


def test_persistent_failure_ends_in_a_clear_error_naming_the_url():
    store, client, sleeps = _flaky_store({"count": [_http(502) for _ in range(10)]}, attempts=3)
    _fill(store, n=5)
    with pytest.raises(StoreError) as error:
        store.count("c")
    message = str(error.value)
    assert URL in message and "3 attempts" in message and "QDRANT_API_KEY" in message
    assert client.attempts["count"] == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried():
    store, client, sleeps = _flaky_store(
        {
            "get_aliases": [_http(400, "Wrong input: bad alias")],
            "get_collections": [_http(401, "Unauthorized")],
            "count": [_grpc_error("PERMISSION_DENIED")],
        }
    )
    with pytest.raises(StoreError, match="Wrong input: bad alias"):
        store.list_aliases()
    with pytest.raises(StoreError, match="QDRANT_API_KEY"):
        store.list_collections()
    with pytest.raises(StoreError, match="QDRANT_API_KEY"):
        store.count("c")
    assert sleeps == [] and client.attempts == {"get_aliases": 1, "get_collections": 1, "count": 1}


def test_classification_of_real_exception_types():
    assert transient_reason(ResponseHandlingException(httpx.ReadTimeout("x"))) == "timed out"
    assert transient_reason(ResponseHandlingException(ValueError("bad json"))) is None
    assert transient_reason(_http(504)) == "HTTP 504"
    assert transient_reason(_http(404)) is None
    assert transient_reason(_grpc_error("DEADLINE_EXCEEDED")) == "gRPC DEADLINE_EXCEEDED"
    assert transient_reason(_grpc_error("INVALID_ARGUMENT")) is None
    assert transient_reason(ConnectionResetError()) is not None
    assert transient_reason(KeyError("x")) is None


def test_parallel_upload_keeps_several_requests_in_flight():
    lock, state = threading.Lock(), {"now": 0, "max": 0}
    engine = QdrantClient(":memory:")

    class Slow:
        def __getattr__(self, name):
            attr = getattr(engine, name)
            if name != "upsert":

                def serialized(*args, **kwargs):
                    with lock:
                        return attr(*args, **kwargs)

                return serialized

            def upsert(*args, **kwargs):
                with lock:
                    state["now"] += 1
                    state["max"] = max(state["max"], state["now"])
                time.sleep(0.05)  # a request on the wire
                with lock:  # the in-process engine itself takes one writer at a time
                    state["now"] -= 1
                    return attr(*args, **kwargs)

            return upsert

    store = ServerStore(URL, ServerOptions(batch=10, parallel=4), client=Slow())
    ids, _x = _fill(store, n=100)
    assert store.count("c") == 100
    assert 2 <= state["max"] <= 4
    asked = ids + [f"absent/{i}.jpg" for i in range(2500)]  # three lookup chunks in parallel
    assert store.existing_ids("c", asked) == set(ids)


# -- the real transports, failing for real ------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_real_transport_refused_connection(scheme):
    url = f"{scheme}://127.0.0.1:{_closed_port()}"
    store = ServerStore(url, ServerOptions(timeout=2), retry=RetryPolicy(attempts=2, base_delay=0))
    with pytest.raises(StoreError, match=f"Qdrant at {url} did not answer.*2 attempts"):
        store.list_collections()


@pytest.fixture
def silent_server():
    """A loopback socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize(
    "retry",
    [
        RetryPolicy(attempts=2, base_delay=0),
        None,  # the default policy: 5 attempts, but a timed-out request is tried twice
    ],
)
def test_a_silent_server_costs_two_timeouts_then_one_line(silent_server, retry):
    store = ServerStore(silent_server, ServerOptions(timeout=1), retry=retry)
    started = time.monotonic()
    with pytest.raises(StoreError, match="timed out on all 2 attempts"):
        store.list_collections()
    assert 2.0 <= time.monotonic() - started < 4.5  # two full timeouts, one short backoff


# -- snapshots: what the calls send ------------------------------------------------------


class SnapshotDouble:
    """The in-process engine for everything, plus canned answers to the snapshot calls it
    lacks (no engine here has snapshots): it records what ServerStore asks for."""

    def __init__(self):
        self._client = QdrantClient(":memory:")
        self.asked: list[tuple[str, dict]] = []
        self.http = self  # client.http.snapshots_api.recover_from_uploaded_snapshot(...)
        self.snapshots_api = self

    def __getattr__(self, name):
        return getattr(self._client, name)

    def create_snapshot(self, **kwargs):
        self.asked.append(("create_snapshot", kwargs))
        return models.SnapshotDescription(
            name="c-1.snapshot", creation_time="2026-01-01T00:00:00", size=2_000_000
        )

    def recover_snapshot(self, **kwargs):
        self.asked.append(("recover_snapshot", kwargs))
        return True

    def recover_from_uploaded_snapshot(self, **kwargs):
        kwargs["content"] = kwargs.pop("snapshot").read()
        self.asked.append(("upload", kwargs))


def test_snapshot_calls_resolve_aliases_and_pick_the_source(tmp_path):
    double = SnapshotDouble()
    store = ServerStore(URL, client=double, api_key="k")
    _fill(store, n=5, name="c")
    store.set_alias("live", "c")
    snapshot = store.create_snapshot("live")
    assert double.asked[-1] == ("create_snapshot", {"collection_name": "c", "wait": True})
    assert snapshot.location == f"{URL}/collections/c/snapshots/c-1.snapshot"

    store.restore_snapshot("c", "c-1.snapshot")
    sent = double.asked[-1][1]
    assert sent["location"] == "file:///qdrant/snapshots/c/c-1.snapshot" and sent["wait"]
    store.restore_snapshot("c", f"{URL}/collections/c/snapshots/c-1.snapshot")
    assert double.asked[-1][1]["api_key"] == "k"  # the server fetches from itself
    store.restore_snapshot("c", "https://elsewhere:6333/collections/c/snapshots/x.snapshot")
    assert double.asked[-1][1]["api_key"] is None  # never hand our key to another host
    local = tmp_path / "c.snapshot"
    local.write_bytes(b"snapshot bytes")
    store.restore_snapshot("c", str(local))
    assert double.asked[-1] == (
        "upload",
        {"collection_name": "c", "wait": True, "content": b"snapshot bytes"},
    )
    with pytest.raises(StoreError, match="is an alias"):
        store.restore_snapshot("live", "c-1.snapshot")


def test_create_sends_the_storage_layout_and_segment_sizing():
    """compact: float16 originals, HNSW and payload on disk, int8 pinned in RAM; a large
    collection gets two segments capped at half its originals. A preset named in the config
    wins over the spec's on_disk=true, which is only the default."""
    store, sent = _recorded(on_disk=True)
    store.create_collection(
        "big", CollectionConfig(dim=1024, storage="compact", expected_points=5_000_000)
    )
    store.create_collection("small", CollectionConfig(dim=32, storage="ram"))
    big, small = sent.sent("create_collection")
    vector = big["vectors_config"]["global"]
    assert (vector.on_disk, vector.datatype) == (True, models.Datatype.FLOAT16)
    assert big["hnsw_config"].on_disk is True and big["on_disk_payload"] is True
    assert big["quantization_config"].scalar.always_ram is True
    assert big["optimizers_config"].default_segment_number == 2
    assert big["optimizers_config"].max_segment_size == 5_500_000  # KB: 2.5M x 2 KB x 1.1
    assert big["optimizers_config"].indexing_threshold == 0
    vector = small["vectors_config"]["global"]
    assert (vector.on_disk, vector.datatype) == (False, None)
    assert small["hnsw_config"].on_disk is False and small["on_disk_payload"] is False
    assert small["optimizers_config"].default_segment_number is None
    assert store.collection_config("big").storage == "compact"
    assert store.info("big").layout.originals == "float16"


def test_create_sends_a_scanned_collection_without_a_graph_in_one_segment_per_core(monkeypatch):
    """index=scan: m=0 (Qdrant scans the int8 copies), segments sized for one per core."""
    from ilias.indexing.store import search_index

    monkeypatch.setattr(search_index.os, "cpu_count", lambda: 4)
    store, sent = _recorded()
    store.create_collection(
        "scan", CollectionConfig(dim=512, index="scan", expected_points=1_000_000)
    )
    store.create_collection("auto", CollectionConfig(dim=512, expected_points=1_000_000))
    store.create_collection("graph", CollectionConfig(dim=512, index="hnsw"))
    scan, auto, graph = sent.sent("create_collection")
    for created in (scan, auto):
        assert created["hnsw_config"].m == 0
        # one per core and one for the last, smaller segment; a cap of one full segment
        assert created["optimizers_config"].default_segment_number == 4 + 1
        assert created["optimizers_config"].max_segment_size == 500_000  # 250k x 2 KB
    assert graph["hnsw_config"].m == 16
    assert store.collection_config("auto").index == "scan"
    assert store.collection_config("graph").index == "hnsw"
