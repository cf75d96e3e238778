"""Collections that fit: the storage switch's rule for ``auto``, segment sizing, and the
switch through the load paths and the CLI. What each engine applies and reports, and the
rankings on every layout, are in the contract suite (test_store.py); what the server
engine sends is in test_server_store.py."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ilias.cli import app
from ilias.errors import IliasError
from ilias.indexing import EdgeStore, ExtractionOptions, import_features, write_features
from ilias.indexing.store import CollectionConfig
from ilias.indexing.store.layout import (
    CACHE_SHARE,
    RAM_SHARE,
    SegmentPlan,
    machine_ram_bytes,
    resolve_storage,
    segment_plan,
    sizing,
)

runner = CliRunner()
RAM_24G = 24_684_092 * 1024  # MemTotal of the project's 24 GiB machines


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- the rule ---------------------------------------------------------------------------------


def test_bytes_per_point_are_the_arithmetic_of_each_part():
    ram, disk, compact = (sizing(p, 1024, m=16) for p in ("ram", "disk", "compact"))
    assert (ram.originals, ram.int8, ram.hnsw) == (4096, 1028, 128)
    assert compact.originals == 2048  # float16
    assert ram.resident == 4096 + 1028 + 128 + ram.overhead
    assert disk.resident == 1028 + 128 + disk.overhead  # originals left on disk
    assert compact.resident == 1028 + compact.overhead  # HNSW left on disk too
    assert ram.disk == disk.disk == compact.disk + 2048  # everything is persisted


def test_auto_picks_the_first_layout_whose_resident_part_fits_half_the_ram(caplog):
    def auto(points: int, dim: int, **kw) -> str:
        return resolve_storage("auto", dim=dim, expected_points=points, ram_bytes=RAM_24G, **kw)

    assert auto(1_000_000, 512) == "ram"
    assert auto(3_000_000, 1024) == "disk"  # 12 GB of float32 originals: the cache holds them
    # mini-ILIAS: disk's 20 GB of float32 originals would be read from disk by every exact
    # query (measured 18.7 s a query); compact's 10 GB of float16 stay in the page cache
    assert auto(5_000_000, 1024) == "compact"
    with caplog.at_level(logging.WARNING):
        assert auto(8_000_000, 1024) == "compact"  # fits, but exact search reads the disk
    assert "exact evaluations will read the originals from disk" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert auto(100_000_000, 1024) == "compact"  # full ILIAS: too big even so
    assert "Qdrant cluster" in caplog.text and "even as 'compact'" in caplog.text
    # The boundaries are the rule itself: resident bytes <= RAM_SHARE x RAM, then the
    # exact scan's working set <= CACHE_SHARE x RAM.
    fits = math.floor(RAM_SHARE * RAM_24G / sizing("ram", 768).resident)
    assert (auto(fits, 768), auto(fits + 1, 768)) == ("ram", "disk")
    cached = math.floor(CACHE_SHARE * RAM_24G / sizing("disk", 1024).exact)
    assert (auto(cached, 1024), auto(cached + 1, 1024)) == ("disk", "compact")
    # A store's default is a floor (a server spec with on_disk=true), and the size-less default.
    assert auto(1000, 512, default="disk") == "disk"
    assert resolve_storage("auto", dim=512, expected_points=None) == "ram"
    assert resolve_storage(None, dim=512, expected_points=10**9, default="disk") == "disk"
    assert resolve_storage("ram", dim=512, expected_points=10**9) == "ram"  # asked: kept


def test_machine_ram_is_read():
    total = machine_ram_bytes()
    meminfo = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
    assert 0 < total <= int(meminfo) * 1024


def test_large_collections_get_two_segments_capped_at_half_their_originals():
    assert segment_plan("ram", 512, 50_000) == SegmentPlan()  # small: engine defaults
    assert segment_plan("ram", 512, None) == SegmentPlan()
    assert segment_plan("ram", 1024, 5_000_000) == SegmentPlan(2, 11_000_000)
    assert segment_plan("compact", 1024, 5_000_000) == SegmentPlan(2, 5_500_000)  # float16
    assert segment_plan("disk", 1024, 15_000_000, shards=3).max_size_kb == 11_000_000


def test_edge_keeps_the_segment_plan_in_its_shard_config(tmp_path):
    with EdgeStore(tmp_path) as store:
        config = CollectionConfig(dim=1024, storage="auto", expected_points=5_000_000)
        store.create_collection("big", config)
        store.create_collection("small", CollectionConfig(dim=1024, expected_points=1000))
    applied = json.loads((tmp_path / "big" / "shard" / "edge_config.json").read_text())
    assert applied["optimizers"]["default_segment_number"] == 2
    storage = store.collection_config("big").storage  # what auto chose on this machine
    assert storage is not None
    assert (
        applied["optimizers"]["max_segment_size"]
        == segment_plan(storage, 1024, 5_000_000).max_size_kb
    )
    small = json.loads((tmp_path / "small" / "shard" / "edge_config.json").read_text())
    assert small["optimizers"]["default_segment_number"] is None


# -- through the load paths -----------------------------------------------------------------


def test_import_features_creates_the_layout_asked_sized_by_all_files(tmp_path):
    first = write_features(tmp_path / "a.hdf5", [f"00000.tar/{i}" for i in range(3)], unit(3, 8))
    second = write_features(tmp_path / "b.hdf5", [f"00001.tar/{i}" for i in range(4)], unit(4, 8))
    with EdgeStore(tmp_path / "q") as store:
        import_features([first, second], store, "c", encoder="timm:x", storage="compact")
        config = store.collection_config("c")
        assert (config.storage, config.expected_points) == ("compact", 7)
        assert store.info("c").layout.originals == "float16"
        with pytest.raises(IliasError, match="storage 'fast'"):
            import_features([first], store, "d", encoder="timm:x", storage="fast")
        assert not store.collection_exists("d")


@pytest.mark.slow
def test_load_creates_the_layout_asked_sized_by_the_records(tiny_ilias, tmp_path):
    from ilias.config import DEFAULT_ENCODER
    from ilias.indexing import load_collection, load_versioned
    from ilias.loader import read_ilias

    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, scheduler="sync")
    with EdgeStore(tmp_path) as store:
        load_collection(bench.database, store, "c", options, storage="disk")
        config = store.collection_config("c")
        assert (config.storage, config.expected_points) == ("disk", len(bench.database))
        assert store.info("c").layout.originals_on_disk is True
        swap = load_versioned(bench.database, store, "live", options, storage="compact")
        assert store.collection_config(swap.collection).storage == "compact"


# -- the CLI ----------------------------------------------------------------------------------


@pytest.mark.parametrize("features", [False, True])
def test_a_bad_storage_is_one_line_naming_the_option(tmp_path, features):
    args = ["load", str(tmp_path), "--storage", "ssd", "--store", f"edge:{tmp_path / 'q'}"]
    if features:
        args += ["--features", str(tmp_path / "f.hdf5"), "--encoder", "timm:x"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert str(result.exception) == "--storage 'ssd': use auto, ram, disk, compact"
    assert not (tmp_path / "q").exists()  # refused before anything was opened


def test_collections_and_info_show_the_storage_and_where_parts_live(tmp_path, monkeypatch):
    from ilias import cli

    monkeypatch.setattr(cli.console, "width", 250)
    with EdgeStore(tmp_path) as store:
        for preset in ("ram", "compact"):
            store.create_collection(preset, CollectionConfig(dim=16, storage=preset))
            ids = [f"{i}.jpg" for i in range(100)]  # enough for Edge to build a graph
            store.upsert(preset, ids, unit(100, 16), [{}] * 100)
            store.finish_load(preset)
    for command in ("collections", "info"):
        result = runner.invoke(app, [command, "--store", f"edge:{tmp_path}"])
        assert result.exit_code == 0, result.output
        rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")]
                for line in result.output.splitlines() if line.count("│") > 3}  # fmt: skip
        assert "compact" in rows["compact"] and "ram" in rows["ram"]
        assert "compact: float16 originals on disk, HNSW on disk, payload on disk" in result.output
        assert "ram: float32 originals in RAM, HNSW in RAM, payload in RAM" in result.output


def test_the_cli_imports_with_the_storage_asked(tmp_path):
    path = write_features(tmp_path / "dis.hdf5", [f"00000.tar/{i}" for i in range(3)], unit(3, 8))
    spec = f"edge:{tmp_path / 'q'}"
    args = ["load", "--features", str(path), "--encoder", "timm:x", "--store", spec, "-c", "c"]
    assert runner.invoke(app, [*args, "--storage", "disk"]).exit_code == 0
    assert runner.invoke(app, [*args[:-2], "-c", "d"]).exit_code == 0  # default: auto
    with EdgeStore(tmp_path / "q") as store:
        assert store.collection_config("c").storage == "disk"
        assert store.collection_config("d").storage == "ram"  # 3 points: auto picks ram
