"""The Store contract, run on every engine: real Qdrant Edge shards and qdrant-client's own
in-process engine (the same client API as a server).

Each test states behaviour a user relies on, whichever engine holds the collection:
idempotent ids, the dataset id coming back in hits, filters served by the engine, stored
vectors, refused vectors, aliases, local multivectors, and the errors for what an engine
cannot do. Engine-specific tests (what the server client sends, retries, Edge's
single-owner lock) live in test_server_store.py and at the end of this file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ilias.errors import StoreError, VectorValidationError
from ilias.indexing.store import (
    CollectionConfig,
    EdgeStore,
    Range,
    SearchParams,
    ServerStore,
    Store,
    open_store,
    point_id,
)
from ilias.indexing.store.layout import LAYOUTS, PRESETS, StorageLayout, check_storage
from ilias.indexing.store.server import ServerOptions
from ilias.types import LocalFeatures

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*local Qdrant.*:UserWarning", "ignore:Payload indexes have no effect.*:UserWarning"
)


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(store: Store, n: int = 500, dim: int = 32, name: str = "c"):
    """``n`` points in 5 instances; odd rows are positives; ``scale`` runs 0 .. (n-1)/n.

    The payloads carry no ``id`` key: the store itself writes the dataset id.
    """
    store.create_collection(name, CollectionConfig(dim=dim, metadata={"encoder": "e"}))
    ids = [f"inst{i % 5}/pos/P{i:04d}.jpg" for i in range(n)]
    payloads = [
        {"instance": f"inst{j % 5}", "role": "positive" if j % 2 else "distractor", "scale": j / n}
        for j in range(n)
    ]
    x = unit_vectors(n, dim)
    store.upsert(name, ids, x, payloads)
    store.finish_load(name)
    return ids, x


@pytest.fixture(params=["edge", "memory"])
def store(request, tmp_path):
    opened = EdgeStore(tmp_path / "q") if request.param == "edge" else ServerStore.memory()
    with opened:
        yield opened


def test_point_ids_are_stable_uuid5():
    assert point_id("a/pos/P0.jpg") == point_id("a/pos/P0.jpg") != point_id("a/pos/P1.jpg")
    # Pinned: a changed namespace would orphan every collection loaded so far.
    assert point_id("a/pos/P0.jpg") == "35a7871e-6ac6-52e5-bdab-d3dabfd27cf4"


def test_search_returns_exact_neighbours_with_dataset_ids_and_payload(store):
    ids, x = fill(store)
    assert store.count("c") == 500
    assert store.info("c").points == 500
    hits = store.search("c", x[:3], k=10)
    assert [row[0].id for row in hits] == ids[:3]  # the id written by the store itself
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-3)
    assert hits[0][0].payload == {"instance": "inst0", "role": "distractor", "scale": 0.0,
                                  "id": ids[0]}  # fmt: skip
    exact = store.search("c", x[:3], k=10, params=SearchParams(exact=True))
    truth = np.argsort(-(x[:3] @ x.T), axis=1)[:, :10]
    assert [[h.id for h in row] for row in exact] == [[ids[j] for j in row] for row in truth]
    scores = np.sort(x[:3] @ x.T, axis=1)[:, ::-1][:, :10]
    np.testing.assert_allclose([[h.score for h in row] for row in exact], scores, atol=1e-5)


def test_hit_ids_find_their_stored_vectors(store):
    """aQE and hybrid search read stored vectors by hit id: the round trip must close."""
    ids, x = fill(store, n=50)
    hit = store.search("c", x[7], k=1)[0][0]
    stored = store.retrieve_vectors("c", [hit.id, "missing"])
    assert list(stored) == [ids[7]]
    np.testing.assert_allclose(stored[ids[7]], x[7], atol=1e-6)


def test_scroll_reads_every_stored_point_once_page_by_page(store):
    """Exports read the whole collection through scroll: each point exactly once, its
    stored float32 original and the payload keys asked for, in pages of the given size."""
    ids, x = fill(store, n=130)
    pages = list(store.scroll("c", ["role"], batch=32))
    assert [len(p.ids) for p in pages] == [32, 32, 32, 32, 2]
    seen = [i for page in pages for i in page.ids]
    assert sorted(seen) == sorted(ids)
    rows = {i: row for page in pages for i, row in zip(page.ids, page.vectors, strict=True)}
    for n in (0, 64, 129):
        assert rows[ids[n]].dtype == np.float32
        np.testing.assert_allclose(rows[ids[n]], x[n], atol=1e-6)
    roles = {i: p["role"] for page in pages for i, p in zip(page.ids, page.payloads, strict=True)}
    assert roles[ids[1]] == "positive" and roles[ids[2]] == "distractor"
    assert set(pages[0].payloads[0]) <= {"id", "role"}  # only the keys asked for
    store.create_collection("empty", CollectionConfig(dim=32, metadata={}))
    assert list(store.scroll("empty")) == []
    with pytest.raises(StoreError, match="no collection 'gone'"):
        list(store.scroll("gone"))


def test_reupsert_is_idempotent_and_existing_ids_are_exact(store):
    ids, x = fill(store)
    store.upsert("c", ids[:100], x[:100], [{} for _ in range(100)])
    assert store.count("c") == 500
    assert store.existing_ids("c", [ids[0], ids[499], "never/loaded.jpg"]) == {ids[0], ids[499]}


def test_filters_are_served_by_the_engine(store):
    _ids, x = fill(store)
    where = {"role": "positive", "scale": Range(gte=0.5)}
    hits = store.search("c", x[:1], k=1000, filter=where)[0]
    expected = {f"inst{j % 5}/pos/P{j:04d}.jpg" for j in range(250, 500) if j % 2}
    assert {h.id for h in hits} == expected and store.count("c", where) == 125
    any_of = store.search("c", x[:1], k=1000, filter={"instance": ["inst1", "inst2"]})[0]
    assert len(any_of) == 200 and {h.payload["instance"] for h in any_of} == {"inst1", "inst2"}
    # A float equality is a point range: compared as a keyword it would never match.
    assert [h.id for h in store.search("c", x[:1], k=10, filter={"scale": 0.25})[0]] == [
        "inst0/pos/P0125.jpg"
    ]
    assert store.count("c", {"scale": Range(gt=0.25, lt=0.26)}) == 4


def test_filters_mean_what_they_say_or_are_refused(store):
    """Every clause either selects what it names or is refused in one line naming the key."""
    _ids, x = fill(store)
    assert store.count("c", {"clutter": 3}) == 0 and store.count("c", {"instance": "inst3"}) == 100
    # a number given for a keyword field is the text it spells (instance names can be digits)
    assert store.count("c", {"instance": 3}) == store.count("c", {"instance": "3"}) == 0
    assert store.count("c", {"scale": 0.25}) == 1  # a float equality is the range [v, v]
    assert store.count("c", {"scale": 1}) == 0  # an int on a float field too (no point at 1.0)
    refused = {
        "colour": "cannot filter c on 'colour': not an indexed field (fields: clutter, id, "
        "instance, role, scale, selection, shard)",
        "role_range": "filter on 'role': a range needs a number field, role is keyword",
        "clutter_text": "filter on 'clutter': 'many' is not a number (clutter is integer)",
        "clutter_half": "filter on 'clutter': clutter holds whole numbers, not 2.5",
        "scale_list": "filter on 'scale': match one number or a range, not a list",
        "empty": "filter on 'role': an empty list of values matches nothing",
    }
    filters = {
        "colour": {"colour": "red"},
        "role_range": {"role": Range(gte=1)},
        "clutter_text": {"clutter": "many"},
        "clutter_half": {"clutter": 2.5},
        "scale_list": {"scale": [0.1, 0.2]},
        "empty": {"role": []},
    }
    for case, where in filters.items():
        with pytest.raises(StoreError) as raised:
            store.search("c", x[:1], k=5, filter=where)
        assert str(raised.value) == refused[case], case


def test_bad_vectors_are_refused_before_the_engine(store):
    fill(store)
    nan = unit_vectors(2, 32)
    nan[1, 3] = np.nan
    with pytest.raises(VectorValidationError, match=r"b\.jpg"):
        store.upsert("c", ["a.jpg", "b.jpg"], nan, [{}, {}])
    with pytest.raises(VectorValidationError, match="32-d"):
        store.upsert("c", ["a.jpg"], unit_vectors(1, 16), [{}])
    with pytest.raises(VectorValidationError, match="zero"):
        store.upsert("c", ["a.jpg"], np.zeros((1, 32), np.float32), [{}])
    # Finite in float64, infinite as the float32 the engine would receive.
    huge = unit_vectors(1, 32).astype(np.float64)
    huge[0, 0] = 1e39
    with pytest.raises(VectorValidationError, match=r"a\.jpg"):
        store.upsert("c", ["a.jpg"], huge, [{}])
    with pytest.raises(VectorValidationError, match="query 0"):
        store.search("c", np.full((1, 32), np.nan, np.float32), k=1)
    assert store.count("c") == 500


def test_missing_collections_get_one_error(store):
    for call in (
        lambda: store.count("nope"),
        lambda: store.search("nope", unit_vectors(1, 4), k=1),
        lambda: store.info("nope"),
    ):
        with pytest.raises(StoreError, match=r"no collection 'nope'.*ilias load"):
            call()


def test_snapshots_are_a_declared_capability(store):
    fill(store, n=10)
    for call in (
        lambda: store.create_snapshot("c"),
        lambda: store.list_snapshots("c"),
        lambda: store.restore_snapshot("c", "c-1.snapshot"),
    ):
        with pytest.raises(StoreError, match="Qdrant server"):
            call()


def test_collection_config_is_read_once_per_handle(store, monkeypatch):
    fill(store, n=20)
    store.refresh()
    reads: list[str] = []
    original = store.engine.read_config
    monkeypatch.setattr(store.engine, "read_config", lambda n: reads.append(n) or original(n))
    for _ in range(5):
        store.search("c", unit_vectors(1, 32), k=3)
    store.upsert("c", ["x.jpg"], unit_vectors(1, 32), [{}])
    assert reads == ["c"]
    store.drop("c")
    fill(store, n=5, dim=8)  # same name, another dimension: the cache must not answer
    assert store.collection_config("c").dim == 8 and store.count("c") == 5


# -- aliases -----------------------------------------------------------------------------


def test_alias_swap_is_one_step_and_lookups_resolve(store):
    fill(store, n=20, name="ilias-v1")
    fill(store, n=30, name="ilias-v2")
    assert store.list_aliases() == {}
    store.set_alias("ilias", "ilias-v1")
    assert store.list_aliases() == {"ilias": "ilias-v1"} and store.resolve("ilias") == "ilias-v1"
    assert store.collection_exists("ilias") and store.count("ilias") == 20
    assert len(store.search("ilias", unit_vectors(1, 32), k=100)[0]) == 20
    store.set_alias("ilias", "ilias-v2")
    assert store.resolve("ilias") == "ilias-v2" and store.count("ilias") == 30
    assert store.info("ilias").points == 30 and store.collection_config("ilias").dim == 32
    assert store.list_collections() == ["ilias-v1", "ilias-v2"]  # aliases are not listed
    store.delete_alias("ilias")
    store.delete_alias("ilias")  # absent: nothing happens
    assert store.list_aliases() == {} and not store.collection_exists("ilias")


def test_alias_rules(store):
    fill(store, n=5, name="a")
    fill(store, n=5, name="b")
    store.set_alias("live", "a")
    with pytest.raises(StoreError, match="is an alias"):
        store.set_alias("other", "live")  # no alias of an alias
    with pytest.raises(StoreError, match="name of its own"):
        store.set_alias("b", "a")  # an alias cannot shadow a collection
    with pytest.raises(StoreError, match="is an alias"):
        store.create_collection("live", CollectionConfig(dim=32))
    with pytest.raises(StoreError, match="alias of 'a'"):
        store.drop("live")
    with pytest.raises(StoreError, match="no collection 'missing'"):
        store.set_alias("x", "missing")
    with pytest.raises(StoreError, match="already exists"):
        store.create_collection("a", CollectionConfig(dim=32))
    with pytest.raises(StoreError, match="invalid collection name"):
        store.create_collection("../escape", CollectionConfig(dim=32))
    store.drop("a")
    assert store.list_aliases() == {}  # aliases of a dropped collection go with it


# -- local multivectors (re-ranking) ---------------------------------------------------------


def test_local_multivectors_rescore_like_the_numpy_chamfer(store):
    from ilias.rerank import chamfer_rank

    rng = np.random.default_rng(3)
    ids = [f"img{i}" for i in range(30)]
    local = []
    for _ in ids:
        d = rng.standard_normal((int(rng.integers(3, 9)), 8)).astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        local.append(LocalFeatures(d, rng.uniform(0, 100, (len(d), 2)), np.ones(len(d))))
    store.create_collection("loc", CollectionConfig(dim=16, local_dim=8))
    store.upsert("loc", ids, unit_vectors(30, 16), [{} for _ in ids], local=local)
    store.finish_load("loc")
    got = store.retrieve_local("loc", ids[:2])
    np.testing.assert_allclose(got["img1"].descriptors, local[1].descriptors, atol=1e-6)
    np.testing.assert_allclose(got["img1"].xy, local[1].xy, atol=0.06)  # stored to 0.1 px
    query = local[4].descriptors[:3]
    reference = chamfer_rank(query, {i: f.descriptors for i, f in zip(ids, local, strict=True)})
    rescored = store.rescore_local("loc", query, ids)
    assert [h.id for h in rescored] == [i for i, _ in reference]
    assert rescored[0].score == pytest.approx(reference[0][1] * 3, rel=1e-4)
    assert "local_xy" not in rescored[0].payload
    shortlist = [h.id for h in store.search("loc", unit_vectors(1, 16, seed=9), k=10)[0]]
    one_query = store.search_local("loc", unit_vectors(1, 16, seed=9)[0], query, k=10)
    assert [h.id for h in one_query] == [i for i, _ in reference if i in shortlist]
    with pytest.raises(StoreError, match="--local"):
        store.upsert("loc", ids[:1], unit_vectors(1, 16), [{}])


def test_local_queries_on_a_collection_without_local_descriptors_are_refused(store):
    fill(store, n=5)
    with pytest.raises(StoreError, match="load it with --local"):
        store.retrieve_local("c", ["x"])
    with pytest.raises(StoreError, match="load it with --local"):
        store.search_local("c", unit_vectors(1, 32)[0], unit_vectors(3, 8), k=5)


# -- Edge only: one owning process, aliases in a file -----------------------------------------


def test_edge_reopens_and_has_a_single_owner(tmp_path):
    with EdgeStore(tmp_path) as first:
        fill(first)
    with EdgeStore(tmp_path) as reopened:
        assert reopened.count("c") == 500
        with EdgeStore(tmp_path) as other, pytest.raises(StoreError, match="another process"):
            other.count("c")


def test_edge_aliases_are_seen_by_another_handle(tmp_path):
    with EdgeStore(tmp_path) as writer:
        fill(writer, n=5, name="v1")
        writer.set_alias("live", "v1")
    with EdgeStore(tmp_path) as reader:
        assert reader.resolve("live") == "v1" and reader.count("live") == 5
    assert (tmp_path / "aliases.json").is_file()


def test_specs_pick_the_engine(tmp_path):
    assert isinstance(open_store(f"edge:{tmp_path}"), EdgeStore)
    assert isinstance(open_store("memory:"), ServerStore)
    with pytest.raises(StoreError, match="edge:PATH"):
        open_store("s3://bucket")


BUILD_THEN_WAIT = """
import sys
import numpy as np
from ilias.indexing.store import CollectionConfig, EdgeStore

n, dim = 40_000, 96
x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
with EdgeStore(sys.argv[1]) as store:
    store.create_collection("c", CollectionConfig(dim=dim, payload_indexes={}))
    for start in range(0, n, 10_000):
        ids = [f"v{i}" for i in range(start, start + 10_000)]
        store.upsert("c", ids, x[start : start + 10_000], [{} for _ in ids])
    print("loaded", flush=True)
    store.finish_load("c")
"""


@pytest.mark.slow
@pytest.mark.faults
def test_edge_kill_9_during_the_index_build_loses_nothing_and_leaves_no_temp_files(tmp_path):
    """A real SIGKILL while optimize() writes its new segment: every point survives (WAL),
    the half-built segment is removed at the next open, and the build can run again."""
    import subprocess
    import sys
    import time

    builds = tmp_path / "c" / "shard" / "temp_segments"
    child = subprocess.Popen(
        [sys.executable, "-c", BUILD_THEN_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "loaded"
        deadline = time.monotonic() + 60
        while not any(builds.glob("segment_builder_*")) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert any(builds.glob("segment_builder_*")), "the build never started"
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -9
    with EdgeStore(tmp_path) as store:
        assert store.count("c") == 40_000
        assert list(builds.iterdir()) == []
        store.finish_load("c")
        assert store.info("c").indexed_vectors == 40_000


def test_scans_tags_and_the_shard_ledger(store):
    ids, x = fill(store, n=2500)  # several scroll pages on both engines
    pages = list(store.scan_payloads("c", ["id", "role"], where={"role": "positive"}))
    seen = [p["id"] for page in pages for p in page]
    assert sorted(seen) == sorted(ids[1::2]) and len(seen) == len(set(seen))
    tagged = store.tag("c", "mini", lambda payload: payload["id"] in set(ids[:10]))
    assert tagged == 10 and store.count("c", {"selection": "mini"}) == 10
    # a second tag keeps the first: a point can belong to several selections
    assert store.tag("c", "other", lambda payload: payload["id"] == ids[0]) == 1
    assert store.stored_payloads("c", [ids[0]], ["selection"]) == {
        ids[0]: {"selection": ["mini", "other"]}
    }
    (hits,) = store.search("c", x[:1], k=50, filter={"selection": "mini"})
    assert sorted(h.id for h in hits) == sorted(ids[:10])
    assert store.shard_ledger("c") == {}
    store.record_shards("c", {"00000.tar": {"points": 4, "selection": None}})
    store.record_shards("c", {"00001.tar": {"points": 3, "selection": "mini-1a2b3c4d"}})
    store.record_shards("c", {"00000.tar": {"points": 5, "selection": None}})  # replaced
    assert store.shard_ledger("c") == {
        "00000.tar": {"points": 5, "selection": None},
        "00001.tar": {"points": 3, "selection": "mini-1a2b3c4d"},
    }


def test_an_edge_ledger_line_cut_by_a_kill_is_ignored_and_ended(tmp_path):
    with EdgeStore(tmp_path) as store:
        fill(store, n=10)
        store.record_shards("c", {"00000.tar": {"points": 4}})
        with open(tmp_path / "c" / "shards.jsonl", "a") as ledger:
            ledger.write('{"points": 4, "shard": "000')  # the write a kill -9 cut
        assert store.shard_ledger("c") == {"00000.tar": {"points": 4}}
        store.record_shards("c", {"00001.tar": {"points": 2}})
        assert store.shard_ledger("c") == {"00000.tar": {"points": 4}, "00001.tar": {"points": 2}}


# -- storage layouts: one switch, both engines ------------------------------------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_storage_preset_is_kept_and_reported_as_applied(store, preset):
    """The preset is stored with the collection, read back by a fresh handle, and the engine
    reports it where it tells: Edge from its segment files (every part), qdrant-client's
    in-process engine from the vector params it keeps (originals only)."""
    store.create_collection("c", CollectionConfig(dim=16, storage=preset))
    store.upsert("c", [f"p{i}" for i in range(50)], unit_vectors(50, 16), [{}] * 50)
    store.finish_load("c")
    store.refresh()
    assert store.collection_config("c").storage == preset
    info = store.info("c")
    want = LAYOUTS[preset]
    assert info.config.storage == preset and info.layout is not None
    assert (info.layout.originals, info.layout.originals_on_disk) == (
        want.originals,
        want.originals_on_disk,
    )
    assert info.layout.matches(preset)
    assert not any(info.layout.matches(other) for other in PRESETS if other != preset)
    if isinstance(store, EdgeStore):  # Edge says where every part lives
        assert info.layout.hnsw_on_disk is want.hnsw_on_disk
        # Edge memory-maps payload unless a preset preloads it (ram: 1000 payloads a query)
        assert info.layout.payload_on_disk is (want.payload_on_disk is not False)
    else:  # the in-process engine keeps no graph and does not echo the payload flag
        assert info.layout.hnsw_on_disk is None


def test_auto_storage_is_resolved_at_creation_and_never_stored(store):
    store.create_collection("small", CollectionConfig(dim=16, storage="auto", expected_points=50))
    assert store.collection_config("small").storage == "ram"
    # 10^9 x 1024 needs ~1.3 TB resident even as compact: more than any machine here.
    huge = CollectionConfig(dim=1024, storage="auto", expected_points=10**9, payload_indexes={})
    store.create_collection("huge", huge)
    store.refresh()
    assert store.collection_config("huge").storage == "compact"
    assert store.collection_config("huge").expected_points == 10**9
    # Without a size hint, auto is the store's default.
    store.create_collection("unsized", CollectionConfig(dim=16, storage="auto"))
    assert store.collection_config("unsized").storage == "ram"


def test_bad_storage_names_are_one_line():
    with pytest.raises(StoreError) as raised:
        CollectionConfig(dim=4, storage="ssd")
    assert str(raised.value) == "storage 'ssd': use auto, ram, disk, compact"
    with pytest.raises(StoreError, match="--storage 'fast'"):
        check_storage("fast", "--storage")


def test_a_config_stored_before_the_switch_reads_as_ram(tmp_path):
    """Collections created before storage existed were created with today's ram layout."""
    with EdgeStore(tmp_path) as store:
        fill(store, n=20)
    path = tmp_path / "c" / "collection.json"
    stored = json.loads(path.read_text())
    del stored["storage"], stored["expected_points"]
    path.write_text(json.dumps(stored))
    with EdgeStore(tmp_path) as store:
        assert store.collection_config("c").storage == "ram"
        assert store.info("c").layout == StorageLayout("float32", False, False, False)


def test_server_on_disk_spec_is_the_default_and_the_floor_of_auto():
    store = ServerStore.memory(options=ServerOptions(on_disk=True))
    store.create_collection("plain", CollectionConfig(dim=8))
    store.create_collection("auto", CollectionConfig(dim=8, storage="auto", expected_points=10))
    store.create_collection("asked", CollectionConfig(dim=8, storage="ram"))
    assert [store.collection_config(n).storage for n in ("plain", "auto", "asked")] == [
        "disk",
        "disk",
        "ram",
    ]
    assert store.info("plain").layout.originals_on_disk is True
    assert store.info("asked").layout.originals_on_disk is False


def test_exact_rankings_are_the_same_on_every_layout(tmp_path):
    """The evaluation's exact path (``exact``, ``ignore_quantization``) scores the originals:
    on "disk" exactly the float32 of "ram"; on "compact" float16 copies, so scores move by
    at most float16 rounding and ids differ only where two true scores are that close."""
    n, dim, k = 3000, 64, 100
    rng = np.random.default_rng(5)  # clustered: many near neighbours, as in bench/vectors.py
    centres = rng.standard_normal((15, dim)).astype(np.float32)
    data = centres[rng.integers(0, 15, n + 20)] + 0.9 * rng.standard_normal((n + 20, dim))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    base, queries = data[:n], data[n:]
    ids = [f"v{i}" for i in range(n)]
    exact = SearchParams(exact=True, ignore_quantization=True)
    found = {}
    with EdgeStore(tmp_path) as store:
        for preset in PRESETS:
            store.create_collection(preset, CollectionConfig(dim=dim, storage=preset))
            store.upsert(preset, ids, base, [{}] * n)
            store.finish_load(preset)
            found[preset] = store.search(preset, queries, k, params=exact)
        stored = store.retrieve_vectors("compact", ids[:5])
    truth = queries @ base.T
    for q, row in zip(truth, found["ram"], strict=True):  # the true float32 top k
        np.testing.assert_allclose([h.score for h in row], np.sort(q)[::-1][:k], atol=1e-5)
    for a, b in zip(found["ram"], found["disk"], strict=True):
        assert [(h.id, h.score) for h in a] == [(h.id, h.score) for h in b]
    # float16 really is stored (a float32 store would give these bits back unchanged) ...
    for i, vector in stored.items():
        assert np.array_equal(vector, vector.astype(np.float16).astype(np.float32))
        assert not np.array_equal(vector, base[int(i[1:])])
    # ... and costs at most float16 rounding: |q.(x - x16)| <= 2^-11 for unit vectors.
    tolerance = 2.0**-10
    swapped = 0
    for q, row_ram, row_compact in zip(truth, found["ram"], found["compact"], strict=True):
        for hit_ram, hit_compact in zip(row_ram, row_compact, strict=True):
            assert abs(hit_compact.score - q[int(hit_compact.id[1:])]) <= tolerance
            if hit_ram.id != hit_compact.id:
                swapped += 1
                assert abs(q[int(hit_ram.id[1:])] - q[int(hit_compact.id[1:])]) <= 2 * tolerance
    assert swapped < 0.05 * k * len(queries)


# -- deleting points (issue 23): the same contract on every engine ----------------------


def test_delete_by_id_removes_exactly_those_points_and_counts_them(store):
    ids, x = fill(store, n=200)
    gone = ids[:10]
    assert store.delete("c", ids=[*gone, gone[0], "never/loaded.jpg"]) == 10
    assert store.count("c") == 190
    assert store.existing_ids("c", ids[:12]) == set(ids[10:12])
    assert store.retrieve_vectors("c", gone) == {}
    exact = SearchParams(exact=True)
    rows = store.search("c", x[:12], k=200, params=exact)
    assert all(len(row) == 190 and not set(gone) & {h.id for h in row} for row in rows)
    assert [row[0].id for row in rows[10:]] == ids[10:12]  # the survivors still find themselves
    assert store.delete("c", ids=gone) == 0  # again: nothing left to delete
    store.set_alias("live", "c")
    assert store.delete("live", ids=[ids[10]]) == 1 and store.count("c") == 189


def test_delete_by_filter_is_served_by_the_engine_and_checked_like_a_search(store):
    ids, x = fill(store, n=200)
    where = {"instance": "inst1", "role": "positive"}
    assert store.delete("c", filter=where) == 20
    assert store.count("c") == 180 and store.count("c", where) == 0
    left = store.search("c", x[:1], k=200, filter={"instance": "inst1"})[0]
    assert len(left) == 20 and {h.payload["role"] for h in left} == {"distractor"}
    assert store.delete("c", filter={"scale": Range(gte=0.99)}) == 2
    assert store.delete("c", filter={"instance": "nobody"}) == 0
    with pytest.raises(StoreError, match="not an indexed field"):
        store.delete("c", filter={"colour": "red"})
    with pytest.raises(StoreError, match="ilias drop c"):
        store.delete("c", filter={})
    with pytest.raises(StoreError, match="one of the two"):
        store.delete("c", ids=ids[:1], filter=where)
    with pytest.raises(StoreError, match="one of the two"):
        store.delete("c")
    with pytest.raises(StoreError, match="no collection 'gone'"):
        store.delete("gone", ids=ids[:1])
    assert store.count("c") == 178


def test_delete_takes_the_local_multivector_with_the_point(store):
    rng = np.random.default_rng(5)
    ids = [f"img{i}" for i in range(12)]
    local = []
    for _ in ids:
        d = rng.standard_normal((4, 8)).astype(np.float32)
        local.append(LocalFeatures(d / np.linalg.norm(d, axis=1, keepdims=True),
                                   rng.uniform(0, 50, (4, 2)), np.ones(4)))  # fmt: skip
    store.create_collection("loc", CollectionConfig(dim=16, local_dim=8))
    store.upsert("loc", ids, unit_vectors(12, 16), [{} for _ in ids], local=local)
    store.finish_load("loc")
    assert store.delete("loc", ids=["img3"]) == 1
    assert set(store.retrieve_local("loc", ids)) == set(ids) - {"img3"}
    rescored = store.rescore_local("loc", local[3].descriptors, ids)
    assert [h.id for h in rescored] and "img3" not in {h.id for h in rescored}
    assert store.info("loc").points == 11
