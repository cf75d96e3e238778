"""EdgeStore on a real Qdrant Edge shard: int8, payload indexes, filters, idempotent ids."""

import numpy as np
import pytest

from ilias.errors import StoreError, VectorValidationError
from ilias.indexing import CollectionConfig, EdgeStore, Range, SearchParams, open_store, point_id


@pytest.fixture
def store(tmp_path):
    with EdgeStore(tmp_path / "qdrant") as s:
        yield s


def _vectors(n, dim, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _fill(store, n=500, dim=32):
    store.create_collection("c", CollectionConfig(dim=dim, metadata={"encoder": "e"}))
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
    store.upsert("c", ids, x, payloads)
    store.finish_load("c")
    return ids, x


def test_point_ids_are_stable_uuid5():
    assert point_id("a/pos/P0.jpg") == point_id("a/pos/P0.jpg") != point_id("a/pos/P1.jpg")


def test_create_upsert_search_with_int8_and_indexes(store):
    ids, x = _fill(store)
    info = store.info("c")
    assert info.points == 500 and info.indexed_vectors == 500
    assert info.config.quantization and info.config.quantile == 0.99
    hits = store.search("c", x[:3], k=10)
    assert [h[0].id for h in hits] == ids[:3]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0][0].payload["instance"] == "inst0"
    exact = store.search(
        "c", x[:3], k=10, params=SearchParams(exact=True, ignore_quantization=True)
    )
    truth = np.argsort(-(x[:3] @ x.T), axis=1)[:, :10]
    assert [[h.id for h in row] for row in exact] == [[ids[j] for j in row] for row in truth]


def test_reupsert_adds_nothing(store):
    ids, x = _fill(store)
    store.upsert("c", ids[:100], x[:100], [{"id": i} for i in ids[:100]])
    assert store.count("c") == 500
    assert store.existing_ids("c", [ids[0], "never/loaded.jpg"]) == {ids[0]}


def test_filters_run_in_the_engine(store):
    _ids, x = _fill(store)
    hits = store.search("c", x[:1], k=1000, filter={"role": "positive", "scale": Range(gte=0.5)})[0]
    assert hits and all(h.payload["role"] == "positive" and h.payload["scale"] >= 0.5 for h in hits)
    assert len(hits) == store.count("c", {"role": "positive", "scale": Range(gte=0.5)}) == 125
    any_of = store.search("c", x[:1], k=1000, filter={"instance": ["inst1", "inst2"]})[0]
    assert {h.payload["instance"] for h in any_of} == {"inst1", "inst2"}


def test_retrieve_vectors_returns_stored_originals(store):
    ids, x = _fill(store)
    got = store.retrieve_vectors("c", [ids[7], "missing"])
    assert list(got) == [ids[7]]
    np.testing.assert_allclose(got[ids[7]], x[7], atol=1e-6)


def test_bad_vectors_are_refused_before_the_engine(store):
    _fill(store)
    nan = _vectors(2, 32)
    nan[1, 3] = np.nan
    with pytest.raises(VectorValidationError, match=r"b\.jpg"):
        store.upsert("c", ["a.jpg", "b.jpg"], nan, [{}, {}])
    with pytest.raises(VectorValidationError, match="32-d"):
        store.upsert("c", ["a.jpg"], _vectors(1, 16), [{}])
    with pytest.raises(VectorValidationError, match="zero"):
        store.upsert("c", ["a.jpg"], np.zeros((1, 32), np.float32), [{}])
    assert store.count("c") == 500


def test_reopen_and_single_owner(tmp_path):
    with EdgeStore(tmp_path) as first:
        _fill(first)
    with EdgeStore(tmp_path) as reopened:
        assert reopened.count("c") == 500
        with EdgeStore(tmp_path) as other, pytest.raises(StoreError, match="another process"):
            other.count("c")


def test_unknown_collection_and_spec_errors(store):
    with pytest.raises(StoreError, match="ilias load"):
        store.count("nope")
    with pytest.raises(StoreError, match="edge:PATH"):
        open_store("s3://bucket")
    assert isinstance(open_store(f"edge:{store.root}"), EdgeStore)
