"""How a collection is searched: the ``index`` switch (``hnsw``, ``scan``, ``auto``).

The rule for ``auto``, the segments a scanned collection gets, what is stored and read back,
the switch through the load paths and the CLI, and the point of it all: on data where the
default HNSW search misses part of the true top 1000, the default search of a scanned
collection returns exactly numpy's top 1000 without ``exact``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import StoreError
from ilias.indexing import EdgeStore, write_features
from ilias.indexing.store import CollectionConfig, search_index as search_index_module
from ilias.indexing.store.layout import SegmentPlan, segment_plan
from ilias.indexing.store.search_index import (
    SCAN_LIMIT,
    check_index,
    int8_bytes,
    resolve_index,
    scan_segments,
)
from ilias.types import SearchParams

runner = CliRunner()
N, DIM, K = 60_000, 64, 1000  # 15,000 KB of float32: above Qdrant's full-scan threshold


def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Points around n / 200 centres: a top 1000 whose tail HNSW finds only in part."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 200, dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the rule ---------------------------------------------------------------------------------


def test_auto_scans_up_to_a_gib_of_int8_copies_and_walks_a_graph_beyond():
    assert SCAN_LIMIT == 1 << 30
    assert resolve_index(None, dim=512, expected_points=1_000_000) == "scan"  # bench/search.py
    assert resolve_index("auto", dim=512, expected_points=2_000_000) == "scan"  # 1,032 MB
    assert resolve_index("auto", dim=512, expected_points=2_100_000) == "hnsw"
    assert resolve_index("auto", dim=1024, expected_points=1_000_000) == "scan"
    assert resolve_index("auto", dim=1024, expected_points=5_000_000) == "hnsw"  # mini-ILIAS
    # unknown size (a collection grown by later loads): the graph, which scales
    assert resolve_index(None, dim=512, expected_points=None) == "hnsw"
    assert resolve_index("scan", dim=1024, expected_points=100_000_000) == "scan"  # as asked
    assert resolve_index("hnsw", dim=512, expected_points=10) == "hnsw"
    assert int8_bytes(2_000_000, 512) == 2_000_000 * 516


def test_a_bad_index_is_one_line_naming_the_option():
    with pytest.raises(StoreError, match=r"^--index 'ivf': use auto, hnsw, scan$"):
        check_index("ivf", "--index")
    with pytest.raises(StoreError, match="index 'flat'"):
        CollectionConfig(dim=8, index="flat")


def test_a_scanned_collection_gets_one_segment_per_core():
    assert scan_segments(1_000_000, 512, cores=2) == 2
    assert scan_segments(1_000_000, 512, cores=8) == 8
    assert scan_segments(1_000_000, 512, cores=64) == 16  # more stop paying
    assert scan_segments(1_000_000, 512, cores=1) == 2  # still two: a merge is cheap
    assert scan_segments(50_000, 512, cores=8) == 1  # 26 MB: one segment is fast anyway
    plan = segment_plan("ram", 512, 1_000_000, index="scan")
    number = scan_segments(1_000_000, 512)
    # one more than the seals make: the last, smaller segment is never merged (rewritten)
    assert plan.number == number + 1 and plan.seal_points == -(-1_000_000 // number)
    # mini-ILIAS: sealed every 1M (each reference file), 5 + 1 segments, none merged
    mini = segment_plan("compact", 1024, 5_000_000, index="scan")
    assert mini.seal_points == 1_000_000 and mini.number == 6
    # each segment's cap: its share of the originals, so a full one is never merged again
    assert plan.max_size_kb == math.ceil(plan.seal_points * 512 * 4 / 1024)
    assert segment_plan("ram", 512, 50_000, index="scan") == SegmentPlan()
    # the graph's plan is unchanged: two segments above 1 GiB of originals, never sealed
    assert segment_plan("ram", 512, 1_000_000).seal_points is None


def test_the_index_is_stored_and_read_back_and_old_configs_read_as_hnsw(tmp_path):
    with EdgeStore(tmp_path) as store:
        store.create_collection("s", CollectionConfig(dim=8, expected_points=100))
        store.create_collection("h", CollectionConfig(dim=8, index="hnsw", expected_points=100))
        store.create_collection("u", CollectionConfig(dim=8))  # size unknown
    with EdgeStore(tmp_path) as store:
        assert store.collection_config("s").index == "scan"
        assert store.collection_config("s").graph_m == 0
        assert store.collection_config("h").index == "hnsw"
        assert store.collection_config("u").index == "hnsw"
        assert store.collection_config("h").graph_m == 16
    stored = CollectionConfig(dim=8).to_dict()
    del stored["index"]  # a collection created before the switch
    assert CollectionConfig.from_dict(stored).index == "hnsw"


# -- what it is for ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same 60,000 hard vectors in a scanned and a graph collection (default search)."""
    data = clustered(N + 20, DIM)
    base, queries = data[:N], data[N:]
    patch = pytest.MonkeyPatch()
    # Split this small collection the way a 1M one is split (one segment per core).
    patch.setattr(search_index_module, "SCAN_SPLIT", 1 << 20)
    with EdgeStore(tmp_path_factory.mktemp("index")) as store:
        for name, index in (("scan", "scan"), ("hnsw", "hnsw")):
            config = CollectionConfig(dim=DIM, payload_indexes={}, index=index, expected_points=N)
            store.create_collection(name, config)
            for start in range(0, N, 5_000):
                ids = [f"v{i}" for i in range(start, start + 5_000)]
                store.upsert(name, ids, base[start : start + 5_000], [{} for _ in ids])
            store.finish_load(name)
        patch.undo()
        yield store, base, queries


@pytest.mark.slow
def test_the_default_search_of_a_scanned_collection_is_numpy_top_k(both):
    store, base, queries = both
    truth = np.argsort(-(queries @ base.T), axis=1, kind="stable")[:, :K]
    info = store.info("scan")
    # sealed during the load: one segment per core (at least two), plus the appendable one
    assert info.segments >= 3
    assert info.points == N

    def recall(name: str) -> float:
        found = store.search(name, queries, K, params=SearchParams())
        return float(
            np.mean([
                len({h.id for h in row} & {f"v{j}" for j in top}) / K
                for row, top in zip(found, truth, strict=True)
            ])
        )  # fmt: skip

    # int8 scores, each segment's best re-scored with the originals: the whole top 1000
    # (up to exact float32 ties at the 1000th score) without asking for exact search...
    assert recall("scan") >= 0.999
    # ...where the graph, searched the same default way, misses part of it
    assert recall("hnsw") < 0.99


def test_a_scanned_collection_keeps_filters_and_small_top_k(both):
    store, base, queries = both
    top = store.search("scan", queries[:3], 10)
    truth = np.argsort(-(queries[:3] @ base.T), axis=1)[:, :10]
    assert [[h.id for h in row] for row in top] == [[f"v{j}" for j in t] for t in truth]


# -- through the load paths and the CLI -------------------------------------------------------


def test_the_cli_loads_with_the_index_asked_and_shows_it(tmp_path, monkeypatch):
    from ilias import cli

    monkeypatch.setattr(cli.console, "width", 250)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 8)).astype(np.float32)
    path = write_features(tmp_path / "dis.hdf5", [f"00000.tar/{i}" for i in range(3)], vectors)
    spec = f"edge:{tmp_path / 'q'}"
    args = ["load", "--features", str(path), "--encoder", "timm:x", "--store", spec]
    assert runner.invoke(app, [*args, "-c", "g", "--index", "hnsw"]).exit_code == 0
    assert runner.invoke(app, [*args, "-c", "a"]).exit_code == 0  # default: auto
    with EdgeStore(tmp_path / "q") as store:
        assert store.collection_config("g").index == "hnsw"
        assert store.collection_config("a").index == "scan"  # 3 points: auto scans
    result = runner.invoke(app, ["collections", "--store", spec])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")]
            for line in result.output.splitlines() if line.count("│") > 3}  # fmt: skip
    assert "scan" in rows["a"] and "hnsw" in rows["g"] and "scan" not in rows["g"]
    assert "a: float32 originals in RAM, no HNSW graph, payload in RAM" in result.output
    assert "g: float32 originals in RAM, HNSW " in result.output  # 3 points: none built
    bad = runner.invoke(app, ["load", str(tmp_path), "--index", "ivf", "--store", spec])
    assert bad.exit_code == 1
    assert str(bad.exception) == "--index 'ivf': use auto, hnsw, scan"


def _folder_bytes(folder) -> int:
    """Bytes on disk (allocated blocks: WAL segment files are preallocated, mostly unwritten)."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file())


def test_an_edge_load_flushes_as_it_goes_so_the_wal_never_holds_the_whole_load(
    tmp_path, monkeypatch
):
    """Edge's WAL keeps every upsert until a flush: without the flushes a load needs its own
    size again on disk (21 GB at 5M x 1024, enough to make the build refuse to start)."""
    from ilias.indexing.store import edge

    n, dim = 80_000, 512  # 164 MB of float32
    vectors = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    sizes = {}
    for flush_bytes in (1 << 40, 8 << 20):  # never, then every 8 MB
        monkeypatch.setattr(edge, "FLUSH_BYTES", flush_bytes)
        root = tmp_path / str(flush_bytes)
        with EdgeStore(root) as store:
            store.create_collection("c", CollectionConfig(dim=dim, payload_indexes={}))
            for start in range(0, n, 2_000):
                ids = [f"p{i}" for i in range(start, start + 2_000)]
                store.upsert("c", ids, vectors[start : start + 2_000], [{}] * len(ids))
            sizes[flush_bytes] = _folder_bytes(root / "c" / "shard" / "wal")
            assert store.count("c") == n
    assert sizes[1 << 40] > n * dim * 4  # the whole load, in the WAL
    # bounded by what Edge keeps between flushes (its current 32 MB WAL segments), not by n
    assert sizes[8 << 20] < 64 << 20 < n * dim * 4 / 2
