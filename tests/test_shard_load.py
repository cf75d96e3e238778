"""Loads from WebDataset tar shards: one partition per shard read by its worker, resume by
shard (ledger), kill -9 inside a shard, damaged shards, selections at load and at search."""

from __future__ import annotations

import functools
import gzip
import http.server
import io
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data
from tar_shards import write_shard
from typer.testing import CliRunner

from ilias.cli import app
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.loader import open_dataset, read_ilias, selection_tag
from ilias.query import evaluate_collection
from ilias.query.selection import apply_selection
from ilias.types import SearchParams

pytestmark = pytest.mark.slow  # real model on real photos

SYNC = ExtractionOptions(
    encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=3, scheduler="sync"
)
PHOTOS = [
    data.astronaut, data.coffee, data.chelsea, data.rocket, data.camera, data.coins,
    data.clock, data.brick, data.grass, data.moon, data.hubble_deep_field, data.retina,
]  # fmt: skip
EXACT = SearchParams(exact=True, ignore_quantization=True)


def jpeg(array: np.ndarray, crop: int) -> bytes:
    image = Image.fromarray(array).convert("RGB")
    w, h = image.size
    out = io.BytesIO()
    image.crop((crop, crop, w - crop, h - crop)).resize((160, 120)).save(out, format="JPEG")
    return out.getvalue()


def shard_samples(index: int) -> list[tuple[str, bytes]]:
    """Four image samples (and one caption member) of shard ``index``: distinct photos."""
    samples = []
    for slot in range(4):
        photo = PHOTOS[(index * 4 + slot) % len(PHOTOS)]()
        key = f"{index}{slot:03d}"
        samples += [(f"{key}.jpg", jpeg(photo, 4 * index)), (f"{key}.txt", b"a caption")]
    return samples


@pytest.fixture
def shards(tmp_path) -> Path:
    folder = tmp_path / "yfcc100m"
    folder.mkdir()
    for index in range(3):
        write_shard(folder / f"{index:05d}.tar", shard_samples(index))
    return folder


def pattern(folder: Path) -> str:
    return f"{folder}/{{00000..00002}}.tar"


def test_shards_load_resume_unread_and_damaged_shards(tiny_ilias, shards, tmp_path):
    core = tiny_ilias / "core"
    with EdgeStore(tmp_path / "store") as store:
        report = load_collection(open_dataset(core, pattern(shards)), store, "c", SYNC)
        assert (report.shards, report.loaded, report.shards_skipped) == (3, 9 + 12, 0)
        assert report.skipped_members == 12  # the captions: counted, never fatal
        assert store.count("c") == 21 and store.count("c", {"shard": "00001.tar"}) == 4
        ledger = store.shard_ledger("c")
        assert {s: e["points"] for s, e in ledger.items()} == {
            "00000.tar": 4, "00001.tar": 4, "00002.tar": 4,
        }  # fmt: skip
        assert store.stored_payloads("c", ["00001.tar/1002"], ["role", "shard"]) == {
            "00001.tar/1002": {"role": "distractor", "shard": "00001.tar"}
        }

        # Complete shards are not read again: garbage in their place changes nothing.
        for tar in shards.glob("*.tar"):
            tar.write_bytes(b"not a tar any more")
        again = load_collection(open_dataset(core, pattern(shards)), store, "c", SYNC)
        assert (again.shards_skipped, again.loaded, again.already_present) == (3, 0, 21)
        assert not again.shard_errors and store.count("c") == 21

        # A damaged shard: counted and named, what it held is kept, it is not recorded...
        whole = write_shard(shards / "00003.tar", shard_samples(3)).read_bytes()
        with tarfile.open(shards / "00003.tar") as tar:
            cut = tar.getmember("3002.jpg").offset_data + 50
        (shards / "00003.tar").write_bytes(whole[:cut])
        damaged = load_collection(open_dataset(core, shards / "00003.tar"), store, "c", SYNC)
        assert list(damaged.shard_errors) == ["00003.tar"]
        assert damaged.loaded == 2 and "00003.tar" not in store.shard_ledger("c")
        # ...so the downloaded-again shard completes it, without a duplicate.
        (shards / "00003.tar").write_bytes(whole)
        repaired = load_collection(open_dataset(core, shards / "00003.tar"), store, "c", SYNC)
        assert (repaired.loaded, repaired.already_present) == (2, 9 + 2)
        assert store.count("c") == 25 and store.shard_ledger("c")["00003.tar"]["points"] == 4


KILLED_IN_A_SHARD = textwrap.dedent("""
    import os, signal, sys
    from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
    from ilias.indexing.store import edge
    from ilias.loader import open_dataset

    batches = 0
    original = edge.EdgeEngine._write  # what every upsert of a batch comes down to
    def write_half_then_die(self, name, shard, points, local_rows, size):
        global batches
        batches += 1
        if batches == 2:  # the second shard: half of its points written, then a hard kill
            original(self, name, shard, points[: len(points) // 2], local_rows, size)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, name, shard, points, local_rows, size)
    edge.EdgeEngine._write = write_half_then_die

    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=224, batch_size=4,
                                partition_size=3, scheduler="sync")
    load_collection(open_dataset(sys.argv[1]), EdgeStore(sys.argv[2]), "c", options)
""")


@pytest.mark.faults
def test_kill_9_inside_a_shard_then_resume_is_exact(shards, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", KILLED_IN_A_SHARD, pattern(shards), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    with EdgeStore(tmp_path) as store:
        # shard 0 complete and recorded; shard 1 half written (WAL), not recorded
        assert store.count("c") == 4 + 2
        assert set(store.shard_ledger("c")) == {"00000.tar"}
        report = load_collection(open_dataset(pattern(shards)), store, "c", SYNC)
        assert (report.shards_skipped, report.already_present, report.loaded) == (1, 6, 6)
        assert store.count("c") == 12
        assert sorted(store.shard_ledger("c")) == ["00000.tar", "00001.tar", "00002.tar"]


def test_selection_at_load_equals_selection_as_a_filter(tiny_ilias, shards, tmp_path):
    core = tiny_ilias / "core"
    mini = tmp_path / "mini.txt"
    mini.write_text("0001\n00001.tar/1003\n2000\n9999\n")  # keys, a full id, an unknown key
    bench = read_ilias(core)
    with EdgeStore(tmp_path / "store") as store:
        selected = load_collection(open_dataset(core, pattern(shards), mini), store, "mini", SYNC)
        assert selected.loaded == 9 + 3 and selected.not_selected == 9
        assert (selected.selection_found, selected.selection_listed) == (3, 4)  # 9999: none
        assert store.shard_ledger("mini")["00000.tar"]["selection"].startswith("mini-")
        full = load_collection(open_dataset(core, pattern(shards)), store, "full", SYNC)
        assert full.loaded == 9 + 12

        applied = apply_selection(store, "full", mini)
        assert (applied.points, applied.distractors, applied.listed) == (12, 3, 4)
        assert apply_selection(store, "full", mini).reused  # counted, not scanned again
        probe = np.ones((1, store.collection_config("full").dim), dtype=np.float32)
        (hits,) = store.search("full", probe, k=50, filter=applied.filter, params=EXACT)
        (on_mini_hits,) = store.search("mini", probe, k=50, params=EXACT)
        assert [h.id for h in hits] == [h.id for h in on_mini_hits]

        on_mini = evaluate_collection(store, "mini", bench, k=10, params=EXACT).run("image")
        filtered = evaluate_collection(
            store, "full", bench, k=10, params=EXACT, filter=applied.filter
        ).run("image")
        unfiltered = evaluate_collection(store, "full", bench, k=10, params=EXACT).run("image")
        assert filtered.scores.per_query_ap == pytest.approx(on_mini.scores.per_query_ap, abs=1e-12)
        # the filter did something: 9 more distractors compete on the full collection
        assert all(len(filtered.rankings[q]) == 10 for q in filtered.rankings)
        assert filtered.rankings != unfiltered.rankings

        # a different selection (here: none) reads the shards again and completes them
        everything = load_collection(open_dataset(core, pattern(shards)), store, "mini", SYNC)
        assert (everything.shards_skipped, everything.loaded) == (0, 9)
        assert store.count("mini") == 21


def test_workers_read_their_shards_on_a_local_cluster(shards, tmp_path):
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=3, n_workers=1
    )
    with EdgeStore(tmp_path) as store:
        report = load_collection(open_dataset(str(shards)), store, "c", options)
        assert (report.loaded, report.shards) == (12, 3) and store.count("c") == 12
        assert len(store.shard_ledger("c")) == 3


def test_cli_loads_shards_with_a_selection_then_evaluates_a_selection(tiny_ilias, shards, tmp_path):
    mini = tmp_path / "mini.txt.gz"
    with gzip.open(mini, "wt") as out:
        out.write("0001\n1003\n")
    runner = CliRunner()
    base = ["--store", f"edge:{tmp_path / 'store'}", "-c", "c"]
    load = [
        "load", str(tiny_ilias / "core"), "--distractors", pattern(shards),
        "--encoder", DEFAULT_ENCODER, "--resolution", "224", "--scheduler", "sync",
    ]  # fmt: skip
    first = runner.invoke(app, [*load, *base])
    assert first.exit_code == 0, first.output
    assert "21 loaded" in first.output and "3 tar shards: 0 already complete" in first.output
    second = runner.invoke(app, [*load, *base])
    assert "0 loaded, 21 already present" in second.output
    assert "3 tar shards: 3 already complete (not read)" in second.output
    scored = runner.invoke(app, ["eval", "--select", str(mini), "-k", "10", *base])
    assert scored.exit_code == 0, scored.output
    assert "2 of its 2 distractors in c, 11 points searched" in scored.output
    described = runner.invoke(app, ["info", *base])
    assert "c: 3 tar shards loaded completely; selections tagged: mini-" in described.output
    missing = runner.invoke(app, [*load, "--select", str(tmp_path / "none.txt"), *base])
    assert missing.exit_code == 1 and "none.txt: no such selection file" in str(missing.exception)


def test_a_scripted_run_loads_shards_with_a_selection(tiny_ilias, shards, tmp_path):
    from ilias.eval.report import read_metrics
    from ilias.runs import run_config

    (tmp_path / "mini.txt").write_text("0002\n2003\n")
    config = tmp_path / "mini.toml"
    config.write_text(
        f"""
[dataset]
path = "{tiny_ilias / "core"}"
distractors = "yfcc100m/{{00000..00002}}.tar"
select = "mini.txt"
[encoder]
spec = "{DEFAULT_ENCODER}"
resolution = 224
[extraction]
scheduler = "sync"
[store]
spec = "edge:qdrant"
[output]
plots = false
"""
    )
    metrics = read_metrics(run_config(config))
    assert metrics["dataset"]["select"] == str(tmp_path / "mini.txt")
    assert metrics["store"]["points"] == metrics["dataset"]["database"] == 9 + 2
    assert metrics["store"]["collection"].endswith(selection_tag(tmp_path / "mini.txt"))


def test_a_load_from_shard_urls_on_a_loopback_server(shards, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shards))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{00000..00002}}.tar"
        with EdgeStore(tmp_path / "store") as store:
            report = load_collection(open_dataset(url), store, "c", SYNC)
            assert (report.loaded, report.shards, report.shards_skipped) == (12, 3, 0)
            assert store.retrieve_vectors("c", ["00002.tar/2003"])  # the reference's ids
            again = load_collection(open_dataset(url), store, "c", SYNC)
            assert (again.shards_skipped, again.loaded) == (3, 0)
    finally:
        server.shutdown()
        server.server_close()
