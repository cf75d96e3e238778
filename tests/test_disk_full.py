"""A full disk is a clear error and loses nothing, on a real full file system (a small
tmpfs, mounted as root; skipped with the reason where mounting is not permitted).

Qdrant Edge memory-maps sparse files, so a write into a hole on a full disk used to be
SIGBUS (exit 135, no message) for the load and every later command on the store. Every
process that touches the full disk here is a separate process, so a SIGBUS would show as
its exit code instead of killing the test run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from ilias.config import DEFAULT_ENCODER

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)``: a tmpfs of ``size`` MiB, unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size_mib: int) -> Path:
        folder = tmp_path / f"fs{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (a full disk is simulated by a small tmpfs)")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(folder)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ILIAS_HOME": str(cwd / "home"),
           "COLUMNS": "250"}  # fmt: skip
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ilias(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "ilias", *args], cwd)


def refused(result: subprocess.CompletedProcess) -> str:
    """Exit 1 with one error line (rich wraps it: unwrapped here), never a traceback or a
    signal (SIGBUS is exit 135)."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert text.startswith("error: ") and text.count("error: ") == 1, result.stderr
    return text


def test_a_load_that_cannot_fit_is_refused_with_both_numbers(tmpfs, tmp_path):
    disk = tmpfs(30)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (80 * i, 10, 10)).save(images / f"{i}.jpg")
    store = f"edge:{disk / 'store'}"
    text = refused(
        ilias("load", str(images), "--store", store, "--scheduler", "sync", cwd=tmp_path)
    )
    assert "creating 'ilias' needs 320 MiB of free disk" in text
    assert f"the disk holding {disk / 'store'} has 30 MiB" in text
    listed = ilias("collections", "--store", store, cwd=tmp_path)
    assert listed.returncode == 0 and "no collections" in listed.stdout


FILL = f"""
import sys, numpy as np
from ilias.errors import DiskFull
from ilias.indexing import CollectionConfig, EdgeStore
store = EdgeStore(sys.argv[1])
meta = {{"encoder": "{DEFAULT_ENCODER}", "resolution": 224}}
store.create_collection("c", CollectionConfig(dim=1280, metadata=meta))
rng = np.random.default_rng(0)
acknowledged = 0
try:
    for batch in range(10_000):
        rows = rng.normal(size=(256, 1280)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        ids = [f"{{batch}}-{{j}}" for j in range(256)]
        store.upsert("c", ids, rows, [{{"role": "distractor"}}] * 256)
        acknowledged += 256
except DiskFull as error:
    print("refused:", error)
print("acknowledged", acknowledged, flush=True)
try:
    store.finish_load("c")
    print("built")
except DiskFull as error:
    print("build refused:", error)
store.close()
"""

CHECK = """
import sys
from ilias.indexing import EdgeStore
with EdgeStore(sys.argv[1]) as store:
    n = int(sys.argv[2])
    ids = [f"{b}-{j}" for b in range(n // 256) for j in range(256)]
    vectors = store.retrieve_vectors("c", ids)
    print(store.count("c"), len(vectors))
"""


def test_a_full_disk_stops_a_load_cleanly_and_every_command_answers(tmpfs, tmp_path):
    disk = tmpfs(400)
    path = disk / "store"
    store = f"edge:{path}"
    filled = run([sys.executable, "-c", FILL, str(path)], tmp_path)
    assert filled.returncode == 0, (filled.returncode, filled.stderr[-3000:])
    lines = filled.stdout.splitlines()
    refusal = next(line for line in lines if line.startswith("refused:"))
    assert "writing 256 points needs" in refusal and "MiB of free disk" in refusal
    acknowledged = int(next(line for line in lines if line.startswith("acknowledged")).split()[1])
    assert acknowledged > 1000
    # Refused near the limit, the index build is refused too, in one line with both numbers
    # (Edge's optimizer writes the new segments next to the loaded ones).
    build = next(line for line in lines if line.startswith("build refused:"))
    assert "building its index of 'c' needs" in build and "MiB of free disk" in build

    # Every acknowledged point is there, vectors included, in a fresh process.
    check = run([sys.executable, "-c", CHECK, str(path), str(acknowledged)], tmp_path)
    assert check.returncode == 0, check.stderr[-3000:]
    assert check.stdout.split() == [str(acknowledged), str(acknowledged)]
    info = ilias("info", "--store", store, cwd=tmp_path)
    assert info.returncode == 0 and f"│ {acknowledged} " in info.stdout, info.stdout

    # Now fill the disk to the last block: reading commands answer or say why.
    with open(disk / "ballast", "wb") as ballast:
        try:
            while True:
                ballast.write(b"\0" * (1 << 20))
                ballast.flush()
        except OSError:
            pass
    for command in (["info"], ["collections"]):
        answer = ilias(*command, "--store", store, cwd=tmp_path)
        assert answer.returncode == 0, (command, answer.returncode, answer.stderr[-2000:])
        assert "disk full" in answer.stdout and "opening collection 'c' needs 64 MiB" in " ".join(
            answer.stdout.split()
        )
    query = tmp_path / "q.png"
    Image.new("RGB", (64, 48), (200, 30, 30)).save(query)
    text = refused(
        ilias("search", "--store", store, "-c", "c", "--image", str(query), cwd=tmp_path)
    )
    assert "opening collection 'c' needs 64 MiB of free disk" in text and "has 0 MiB" in text

    # Space freed: the same collection answers searches, nothing lost.
    (disk / "ballast").unlink()
    found = ilias("search", "--store", store, "-c", "c", "--image", str(query), "--json",
                  cwd=tmp_path)  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    check = run([sys.executable, "-c", CHECK, str(path), str(acknowledged)], tmp_path)
    assert check.stdout.split() == [str(acknowledged), str(acknowledged)]


def test_drop_frees_a_full_disk_without_opening_the_collection(tmpfs, tmp_path):
    disk = tmpfs(400)
    path = disk / "store"
    filled = run([sys.executable, "-c", FILL, str(path)], tmp_path)
    assert filled.returncode == 0, filled.stderr[-3000:]
    with open(disk / "ballast", "wb") as ballast:
        try:
            while True:
                ballast.write(b"\0" * (1 << 20))
                ballast.flush()
        except OSError:
            pass
    dropped = ilias("drop", "c", "--yes", "--store", f"edge:{path}", cwd=tmp_path)
    assert dropped.returncode == 0, dropped.stderr[-2000:]
    assert "dropped c (? (not opened: disk full) points)" in dropped.stdout
    assert not (path / "c").exists()


def fill_leaving(disk: Path, store: Path, room_mib: int) -> None:
    """A ballast file that leaves ``room_mib`` of room (free less the store's holes)."""
    from ilias.indexing.store.space import MIB, free_bytes, holes

    size = free_bytes(disk) - holes(store) - room_mib * MIB
    with open(disk / "ballast", "wb") as ballast:
        ballast.truncate(0)
        for _ in range(size // MIB):
            ballast.write(b"\0" * MIB)


def test_a_load_into_a_collection_on_a_filling_disk_is_refused_then_resumes(tmpfs, tmp_path):
    disk = tmpfs(800)  # an index build rewrites segments of 32 MiB preallocated pages
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), (80 * i, 10, 10)).save(images / f"{i}.jpg")
    store = f"edge:{disk / 'store'}"
    load = ["load", str(images), "--store", store, "--scheduler", "sync", "--resolution", "224"]
    first = ilias(*load, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for i in range(3, 5):
        Image.new("RGB", (64, 48), (10, 80 * i % 255, 10)).save(images / f"{i}.jpg")
    fill_leaving(disk, disk / "store" / "ilias", 100)  # opens (64), cannot write (160)

    text = refused(ilias(*load, cwd=tmp_path))
    assert "loading 2 points into 'ilias' needs 160 MiB of free disk" in text
    assert f"the disk holding {disk / 'store'} has 10" in text  # 100 MiB, give or take a page
    info = ilias("info", "--store", store, cwd=tmp_path)
    assert info.returncode == 0 and "│ 3 " in info.stdout, info.stdout  # nothing lost

    (disk / "ballast").unlink()
    again = ilias(*load, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "ilias: 2 loaded, 3 already present" in " ".join(again.stdout.split())
