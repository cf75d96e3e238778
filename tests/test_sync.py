"""``ilias load --sync``: a collection that follows its folder, list file or tar shards.

Real files, the offline default encoder at a small resolution, real Qdrant Edge folders
and qdrant-client's in-process engine (``memory:NAME``, shared by every handle in this
process, so the CLI sees it). The last test kills a sync with SIGKILL part-way through a
few hundred images and checks that a rerun ends at exactly the expected set of points.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from PIL import Image
from small_pictures import picture, replace_picture, write
from tar_shards import write_shard
from typer.testing import CliRunner

from ilias import cli
from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.errors import IliasError
from ilias.indexing import ExtractionOptions, cached_encoder, open_store, sync_collection
from ilias.loader import FILE_STAMP, open_dataset

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore:.*local Qdrant.*:UserWarning",
        "ignore:Payload indexes have no effect.*:UserWarning",
        "ignore:Local mode performs exact.*:UserWarning",
    ),
]
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = 64
OPTIONS = ExtractionOptions(DEFAULT_ENCODER, resolution=RESOLUTION, scheduler="sync")


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """One message a line, so that it can be read back whole."""
    monkeypatch.setattr(cli.console, "width", 250)


@pytest.fixture(params=["edge", "memory"])
def spec(request, tmp_path) -> str:
    if request.param == "edge":
        return f"edge:{tmp_path / 'q'}"
    return f"memory:sync-{uuid.uuid4().hex}"


def load(spec: str, source: str, *extra: str):
    args = ["load", source, "--store", spec, "-c", "c", "--resolution", str(RESOLUTION),
            "--scheduler", "sync", *extra]  # fmt: skip
    return runner.invoke(app, args)


def stored_ids(spec: str) -> set[str]:
    with open_store(spec) as store:
        return {p["id"] for page in store.scan_payloads("c", ["id"]) for p in page}


def test_sync_removes_changes_and_adds_then_search_agrees(spec, tmp_path):
    folder = tmp_path / "photos"
    for i in range(10):
        write(folder, f"p{i}.jpg", seed=i)
    first = load(spec, str(folder))
    assert first.exit_code == 0, first.output
    for i in (0, 1, 2):
        (folder / f"p{i}.jpg").unlink()
    for i in (3, 4):
        replace_picture(folder / f"p{i}.jpg", seed=100 + i)
    for i in range(10, 14):
        write(folder, f"p{i}.jpg", seed=i)

    synced = load(spec, str(folder), "--sync")
    assert synced.exit_code == 0, synced.output
    assert "sync: 4 added, 2 changed (extracted again), 3 removed" in synced.output
    expected = {f"photos/p{i}.jpg" for i in range(3, 14)}
    assert stored_ids(spec) == expected

    encoder = cached_encoder(DEFAULT_ENCODER, RESOLUTION)
    with open_store(spec) as store:
        for i in (3, 4, 10, 13):  # changed and added images find themselves first
            query = encoder.encode_images([Image.open(folder / f"p{i}.jpg").convert("RGB")])
            hits = store.search("c", query, k=20)[0]
            assert hits[0].id == f"photos/p{i}.jpg" and hits[0].score > 0.99
            assert {h.id for h in hits} == expected  # the removed ones are gone from results
        stamp = store.stored_payloads("c", ["photos/p3.jpg"], [FILE_STAMP])["photos/p3.jpg"]
        stat = os.stat(folder / "p3.jpg")
        assert stamp[FILE_STAMP] == f"{stat.st_size}:{stat.st_mtime_ns}"

    again = load(spec, str(folder), "--sync")  # nothing left to do
    assert "sync: 0 added, 0 changed (extracted again), 0 removed" in again.output


def test_sync_of_a_list_file_and_the_refusals(tmp_path):
    spec = f"edge:{tmp_path / 'q'}"
    folder = tmp_path / "shop"
    paths = [write(folder, f"item{i}.jpg", seed=20 + i) for i in range(6)]
    listing = tmp_path / "items.txt"
    listing.write_text("\n".join(str(p) for p in paths) + "\n")
    assert load(spec, str(listing)).exit_code == 0
    listing.write_text("\n".join(str(p) for p in paths[2:]) + "\n")  # two products expired
    synced = load(spec, str(listing), "--sync")
    assert "sync: 0 added, 0 changed (extracted again), 2 removed" in synced.output
    assert stored_ids(spec) == {f"shop/item{i}.jpg" for i in range(2, 6)}

    other = tmp_path / "other"
    write(other, "x.jpg", seed=99)
    wrong = load(spec, str(other), "--sync")  # shares nothing: a wrong folder
    assert isinstance(wrong.exception, IliasError)
    assert "shares no image with 'c' (4 points)" in str(wrong.exception)
    assert "Pass --sync-all" in str(wrong.exception)
    assert stored_ids(spec) == {f"shop/item{i}.jpg" for i in range(2, 6)}  # nothing done
    gone = load(spec, str(tmp_path / "unmounted"), "--sync")  # a folder that vanished
    assert isinstance(gone.exception, IliasError) and "does not exist" in str(gone.exception)
    assert len(stored_ids(spec)) == 4
    replaced = load(spec, str(other), "--sync", "--sync-all")
    assert "sync: 1 added, 0 changed (extracted again), 4 removed" in replaced.output
    assert stored_ids(spec) == {"other/x.jpg"}
    for bad, message in ((["--sync", "--versioned"], "one or the other"),
                         (["--sync-all"], "only applies with --sync")):  # fmt: skip
        refused = load(spec, str(other), *bad)
        assert isinstance(refused.exception, IliasError) and message in str(refused.exception)


def test_sync_of_shards_never_removes_on_a_partial_listing(spec, tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()

    def shard(s: int) -> Path:
        members = []
        for k in range(3):
            buffer = tmp_path / "member.jpg"
            picture(40 + 3 * s + k).save(buffer, quality=92)
            members.append((f"s{s}k{k}.jpg", buffer.read_bytes()))
        return write_shard(shards / f"{s:05d}.tar", members)

    for s in range(3):
        shard(s)
    assert load(spec, str(shards)).exit_code == 0
    assert len(stored_ids(spec)) == 9

    (shards / "00002.tar").unlink()  # its images are gone ...
    whole = shard(3).read_bytes()  # ... and a new shard is still being copied: cut short
    (shards / "00003.tar").write_bytes(whole[: len(whole) // 2])
    partial = load(spec, str(shards), "--sync")
    assert partial.exit_code == 0, partial.output
    assert "sync: 2 added, 0 changed (extracted again), 0 removed" in partial.output  # 2 of 3
    assert "3 points whose source is not in the listing were kept" in partial.output
    assert "shard 00003.tar failed to read" in partial.output
    assert {i.split("/")[0] for i in stored_ids(spec)} == {f"{s:05d}.tar" for s in range(4)}

    shard(3)  # the copy finished: the listing reads whole
    synced = load(spec, str(shards), "--sync")
    assert "sync: 1 added, 0 changed (extracted again), 3 removed" in synced.output
    assert {i.split("/")[0] for i in stored_ids(spec)} == {"00000.tar", "00001.tar", "00003.tar"}
    assert len(stored_ids(spec)) == 9


SYNC_SCRIPT = """
import sys
from ilias.indexing import ExtractionOptions, open_store, sync_collection
from ilias.loader import open_dataset

options = ExtractionOptions({encoder!r}, resolution={resolution}, scheduler="sync",
                            partition_size=32, batch_size=16)

def progress(done, total):
    print("done", done, flush=True)

with open_store({spec!r}) as store:
    report = sync_collection(open_dataset({folder!r}), store, "c", options, progress=progress)
    print("finished", report.added, report.changed, report.removed, flush=True)
"""


def test_a_sync_killed_part_way_is_finished_by_a_rerun(tmp_path):
    """kill -9 during a sync of ~300 images, then a rerun: exactly the expected points,
    the changed ones with their new files' stamps, none lost, none left over."""
    folder = tmp_path / "photos"
    spec = f"edge:{tmp_path / 'q'}"
    for i in range(200):
        write(folder, f"p{i:03d}.jpg", seed=i)
    with open_store(spec) as store:
        sync_collection(open_dataset(folder), store, "c", OPTIONS)
    for i in range(0, 60):
        (folder / f"p{i:03d}.jpg").unlink()
    for i in range(60, 80):
        replace_picture(folder / f"p{i:03d}.jpg", seed=1000 + i)
    for i in range(200, 300):
        write(folder, f"p{i:03d}.jpg", seed=i)
    expected = {f"photos/p{i:03d}.jpg" for i in range(60, 300)}

    script = textwrap.dedent(SYNC_SCRIPT).format(
        encoder=DEFAULT_ENCODER, resolution=RESOLUTION, spec=spec, folder=str(folder)
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, env=env)  # fmt: skip
    assert process.stdout is not None
    first_done = None
    for line in process.stdout:
        words = line.split()
        if words[0] == "done":
            first_done = first_done if first_done is not None else int(words[1])
            if int(words[1]) >= first_done + 64:  # two partitions of this run stored
                break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL

    with open_store(spec) as store:
        cut = {p["id"] for page in store.scan_payloads("c", ["id"]) for p in page}
        assert cut != expected and cut > {f"photos/p{i:03d}.jpg" for i in range(80, 200)}
        report = sync_collection(open_dataset(folder), store, "c", OPTIONS)
        assert report.removed == 60 and report.kept_stale == 0
        assert report.added == len(expected - cut)
        final = {p["id"] for page in store.scan_payloads("c", ["id"]) for p in page}
        assert final == expected and store.count("c") == 240
        stamps = store.stored_payloads("c", sorted(expected), [FILE_STAMP])
    for dataset_id in expected:
        stat = os.stat(folder / Path(dataset_id).name)
        assert stamps[dataset_id][FILE_STAMP] == f"{stat.st_size}:{stat.st_mtime_ns}"


def test_sync_keeps_points_when_a_given_folder_is_gone_by_the_end(tmp_path, monkeypatch):
    """The listing is read, then the folder disappears (unmounted) before the removal:
    nothing is removed, and the report says why."""
    import ilias.indexing.sync as sync_module

    spec = f"edge:{tmp_path / 'q'}"
    folder = tmp_path / "photos"
    for i in range(4):
        write(folder, f"p{i}.jpg", seed=60 + i)
    with open_store(spec) as store:
        sync_collection(open_dataset(folder), store, "c", OPTIONS)
        (folder / "p0.jpg").unlink()
        source = open_dataset(folder)
        real_load = sync_module.load_collection

        def load_then_unmount(*args, **kwargs):
            report = real_load(*args, **kwargs)
            shutil.rmtree(folder)
            return report

        monkeypatch.setattr(sync_module, "load_collection", load_then_unmount)
        report = sync_collection(source, store, "c", OPTIONS)
        assert report.removed == 0 and report.kept_stale == 1
        assert report.partial == [f"images folder {folder} is gone"]
        assert store.count("c") == 4
