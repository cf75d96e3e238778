"""Scale: N x d through the real load path, per storage layout: memory, disk, build, search.

For each ``--storage`` preset (ram, disk, compact; see ilias/indexing/store/layout.py) the
bench creates a real Qdrant Edge collection with ``expected_points=N``, upserts N hard
clustered unit vectors in partition-sized calls as ``ilias load`` does (``store.upsert``),
builds the index once (``store.finish_load``: HNSW + int8) and measures:

- upsert rate (points/s) and build time;
- peak RSS and peak anonymous memory (``VmRSS`` and ``RssAnon`` of /proc/self/status,
  sampled every 20 ms in a thread; memory-mapped segment files count in RSS but not in
  RssAnon, which is what the process really holds) and the kernel's ``VmHWM``;
- the collection folder's size on disk (allocated blocks);
- top-1000 latency (median, p95) and recall@1000 against exact float32 numpy for the
  default search and for the evaluation's exact path (``exact``, ``ignore_quantization``),
  twice: with the page cache warm, and cold. Cold: the store is closed, every file under
  the collection folder is fsynced and evicted with ``posix_fadvise(POSIX_FADV_DONTNEED)``
  (no root needed: it drops the file's clean cached pages, so the next reads come from
  disk; the page-cache residency before and after is printed, read with ``mincore``),
  then the store is reopened (timed) and the queries run. Parts a layout keeps in RAM
  (int8 copies; originals and graph with ``ram``) are loaded again at open; parts it
  leaves on disk are read by the queries. ``open: RSS, anon``: what opening the evicted
  collection makes resident in a fresh process (the layout's RAM part, measured). Edge
  itself drops most of its files from the page cache when a collection is closed
  (measured: 526 MB cached while open, 88 MB after close).

The vectors are made chunk by chunk (``ClusteredStream``) so 5M x 1024 never needs 20 GB
of float32 in this process; the numpy baseline scans the same chunks again, and only the
scoring is timed. The baseline runs first, alone, in the same run: ratios are against it.
``--keep DIR`` keeps each collection in DIR and reuses it on the next run (no load).

Run:  python bench/scale.py --n 200000 --dim 512 --storage ram --storage compact
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import mmap
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from vectors import ClusteredStream  # bench/vectors.py: the hard synthetic data

from ilias.indexing import CollectionConfig, EdgeStore, SearchParams
from ilias.indexing.store.layout import PRESETS, machine_ram_bytes, sizing

K = 1000
BATCH = 10_000  # points per store.upsert call: about one extraction partition
SEARCHES = [
    ("default (HNSW int8 + rescore)", SearchParams()),
    ("exact float originals", SearchParams(exact=True, ignore_quantization=True)),
]
GB = 1e9


class MemorySampler:
    """Peaks of VmRSS and RssAnon (sampled) and VmHWM (the kernel's) since ``reset``."""

    def __init__(self, every: float = 0.02):
        self.every = every
        self.peak_rss = self.peak_anon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def reset(self) -> None:
        now = status()
        self.peak_rss, self.peak_anon = now["VmRSS"], now["RssAnon"]
        with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            now = status()
            self.peak_rss = max(self.peak_rss, now["VmRSS"])
            self.peak_anon = max(self.peak_anon, now["RssAnon"])


def status() -> dict[str, int]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in bytes."""
    found = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0, "VmHWM": 0}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in found:
            found[key] = int(value.split()[0]) * 1024
    return found


PROBE = """
import json, sys
from pathlib import Path
from ilias.indexing import EdgeStore

def status():
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) * 1024 for k, _, v in (l.partition(":") for l in lines)
            if k in ("VmRSS", "RssAnon", "RssFile")}

before = status()
store = EdgeStore(sys.argv[1])
store.count(sys.argv[2])
after = status()
print(json.dumps({k: after[k] - before[k] for k in after}))
"""


def resident_at_open(root: Path, name: str) -> dict[str, int]:
    """What opening the collection makes resident, in a fresh process (cold page cache):
    the layout's RAM part, measured without this process's allocator history."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), name],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def files(folder: Path) -> Iterator[Path]:
    return (p for p in folder.rglob("*") if p.is_file())


def disk_bytes(folder: Path) -> int:
    """Allocated bytes (segment files are sparse; their apparent size overstates them)."""
    return sum(p.stat().st_blocks * 512 for p in files(folder))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def cached_bytes(folder: Path) -> int:
    """Bytes of the folder's files now in the page cache (``mincore``, as fincore does)."""
    page = mmap.PAGESIZE
    total = 0
    for path in files(folder):
        size = path.stat().st_size
        if not size:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            address = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                continue
            pages = (size + page - 1) // page
            vector = ctypes.create_string_buffer(pages)
            if _libc.mincore(address, size, vector) == 0:
                total += sum(b & 1 for b in vector.raw) * page
            _libc.munmap(address, size)
        finally:
            os.close(fd)
    return total


def evict(folder: Path) -> None:
    """Drop the folder's files from the page cache (clean pages; fsync first)."""
    for path in files(folder):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def exact_baseline(stream: ClusteredStream, queries: np.ndarray) -> tuple[list[set[int]], float]:
    """True top-1000 ids per query by a chunked float32 scan, one query at a time (as the
    store is asked); ms per query, scoring and merging only (not making the chunks)."""
    best = [(np.full(0, -np.inf, np.float32), np.zeros(0, np.int64)) for _ in queries]
    scoring = 0.0
    for index in range(stream.n_chunks):
        chunk = stream.chunk(index)
        offsets = np.arange(len(chunk)) + index * stream.chunk_size
        began = time.perf_counter()
        for number, q in enumerate(queries):
            scores = np.concatenate([best[number][0], chunk @ q])
            ids = np.concatenate([best[number][1], offsets])
            keep = min(K, len(scores))
            top = np.argpartition(-scores, keep - 1)[:keep]
            best[number] = (scores[top], ids[top])
        scoring += time.perf_counter() - began
    return [set(ids.tolist()) for _, ids in best], 1000 * scoring / len(queries)


def load(store: EdgeStore, name: str, stream: ClusteredStream, config: CollectionConfig,
         sampler: MemorySampler) -> dict[str, float]:  # fmt: skip
    """The real load path: create, upsert partition-sized batches, one index build."""
    store.create_collection(name, config)
    began = time.perf_counter()
    for index in range(stream.n_chunks):
        chunk = stream.chunk(index)
        first = index * stream.chunk_size
        for start in range(0, len(chunk), BATCH):
            rows = chunk[start : start + BATCH]
            ids = [f"v{first + start + i}" for i in range(len(rows))]
            store.upsert(name, ids, rows, [{"role": "distractor"}] * len(rows))
    upsert = time.perf_counter() - began
    began = time.perf_counter()
    store.finish_load(name)
    build = time.perf_counter() - began
    return {"upsert_rate": stream.n / upsert, "build_s": build}


def search(store: EdgeStore, name: str, queries: np.ndarray, truth: list[set[int]],
           params: SearchParams) -> dict[str, float]:  # fmt: skip
    times, recalls = [], []
    for q, expected in zip(queries, truth, strict=True):
        began = time.perf_counter()
        hits = store.search(name, q[None], K, params=params)[0]
        times.append(1000 * (time.perf_counter() - began))
        recalls.append(len(expected & {int(h.id[1:]) for h in hits}) / K)
    return {
        "first": times[0],
        "median": float(np.median(times)),
        "p95": float(np.percentile(times, 95)),
        "recall": float(np.mean(recalls)),
    }


def run_layout(preset: str, args: argparse.Namespace, stream: ClusteredStream,
               queries: np.ndarray, truth: list[set[int]], sampler: MemorySampler,
               root: Path) -> tuple[dict, list[tuple]]:  # fmt: skip
    name = f"scale-{preset}-{args.n}x{args.dim}"
    folder = root / name
    config = CollectionConfig(
        dim=args.dim,
        storage=preset,
        expected_points=args.n,
        hnsw_m=args.m,
        hnsw_ef_construct=args.ef_construct,
        metadata={"bench": "scale"},
    )
    sampler.reset()
    row: dict = {"storage": preset}
    store = EdgeStore(root)
    try:
        if store.collection_exists(name) and store.count(name) == args.n:
            row.update(upsert_rate=float("nan"), build_s=float("nan"), reused=True)
            if store.info(name).indexed_vectors < args.n:  # loaded, its build cut short
                began = time.perf_counter()
                store.finish_load(name)
                row["build_s"] = time.perf_counter() - began
        else:
            if store.collection_exists(name):
                store.drop(name)
            row.update(load(store, name, stream, config, sampler))
        row["layout"] = store.info(name).layout
        results = []
        store.search(name, queries[:1], K)  # warm-up
        for label, params in SEARCHES:
            store.search(name, queries[:1], K, params=params)
            results.append((preset, "warm", label, search(store, name, queries, truth, params)))
        row["peak_rss"], row["peak_anon"] = sampler.peak_rss, sampler.peak_anon
        row["hwm"] = status()["VmHWM"]
    finally:
        store.close()
    del store
    row["disk"] = disk_bytes(folder)
    evict(folder)
    row["resident"] = resident_at_open(root, name)
    for label, params in SEARCHES:
        before = cached_bytes(folder)
        evict(folder)
        after = cached_bytes(folder)
        began = time.perf_counter()
        store = EdgeStore(root)
        try:
            store.count(name)  # opens the shard: loads what the layout keeps in RAM
            opened = time.perf_counter() - began
            measured = search(store, name, queries, truth, params)
        finally:
            store.close()
        del store
        measured.update(open_s=opened, cached_before=before, cached_after=after)
        results.append((preset, "cold", label, measured))
    return row, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--storage", action="append", choices=PRESETS,
                        help="layout to measure (repeatable; default: all three)")  # fmt: skip
    parser.add_argument("--m", type=int, default=16, help="HNSW m")
    parser.add_argument("--ef-construct", type=int, default=128, help="HNSW ef_construct")
    parser.add_argument("--keep", type=Path, help="store folder to keep (and reuse) collections")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    presets = args.storage or list(PRESETS)

    print(
        f"machine: {os.cpu_count()} cores, {machine_ram_bytes() / 2**30:.1f} GiB RAM, "
        f"{platform.machine()}, Linux {platform.release()}, numpy {np.__version__}"
    )
    print(
        f"data: {args.n:,} x {args.dim} clustered unit vectors (hard), {args.queries} queries, "
        f"top {K}; HNSW m={args.m} ef_construct={args.ef_construct}"
    )
    for preset in presets:
        b = sizing(preset, args.dim, args.m)
        print(
            f"  {preset:8s} derived per point: resident {b.resident} B, disk {b.disk} B -> "
            f"{args.n * b.resident / GB:.2f} GB RAM, {args.n * b.disk / GB:.2f} GB disk"
        )
    stream = ClusteredStream(args.n, args.dim, seed=args.seed)
    queries = stream.queries(args.queries)
    truth, numpy_ms = exact_baseline(stream, queries)
    print(f"numpy exact float32 (chunked scan, one query at a time): {numpy_ms:.2f} ms/query")

    rows, results = [], []
    with MemorySampler() as sampler, contextlib.ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root.mkdir(parents=True, exist_ok=True)
        for preset in presets:
            row, measured = run_layout(preset, args, stream, queries, truth, sampler, root)
            rows.append(row)
            results.extend(measured)
            print(f"  done: {preset}", flush=True)

    print(
        f"\n{'storage':8s} {'upsert/s':>9s} {'build s':>8s} {'peak RSS':>9s} {'peak anon':>9s} "
        f"{'VmHWM':>7s} {'disk GB':>7s} {'open: RSS':>9s} {'anon':>6s}  layout applied (as Edge "
        "reports it)"
    )
    for r in rows:
        print(
            f"{r['storage']:8s} {r['upsert_rate']:9.0f} {r['build_s']:8.1f} "
            f"{r['peak_rss'] / GB:8.2f}G {r['peak_anon'] / GB:8.2f}G {r['hwm'] / GB:6.2f}G "
            f"{r['disk'] / GB:7.2f} {r['resident']['VmRSS'] / GB:8.2f}G "
            f"{r['resident']['RssAnon'] / GB:5.2f}G  "
            f"{r['layout'].describe() if r['layout'] else '?'}"
            + ("  (reused)" if r.get("reused") else "")
        )
    print(
        f"\n{'storage':8s} {'cache':5s} {'search':30s} {'first ms':>8s} {'median':>7s} "
        f"{'p95':>7s} {'recall':>6s} {'vs numpy':>8s}  cold: open s, cached MB before->after "
        "evict"
    )
    for preset, cache, label, m in results:
        extra = (
            f"  {m['open_s']:.2f} s, {m['cached_before'] / 1e6:.0f}->"
            f"{m['cached_after'] / 1e6:.0f} MB"
            if cache == "cold"
            else ""
        )
        print(
            f"{preset:8s} {cache:5s} {label:30s} {m['first']:8.1f} {m['median']:7.2f} "
            f"{m['p95']:7.2f} {m['recall']:6.3f} {numpy_ms / m['median']:7.2f}x{extra}"
        )
    default = {p: m for p, c, label, m in results if c == "warm" and label == SEARCHES[0][0]}
    cold = {p: m for p, c, label, m in results if c == "cold" and label == SEARCHES[0][0]}
    print(
        "\nsummary: default search vs numpy exact, warm / cold: "
        + ", ".join(
            f"{p} {numpy_ms / default[p]['median']:.2f}x / {numpy_ms / cold[p]['median']:.2f}x"
            for p in presets
        )
        + "; peak anon "
        + ", ".join(f"{r['storage']} {r['peak_anon'] / GB:.2f} GB" for r in rows)
        + f" (N={args.n:,}, d={args.dim})"
    )


if __name__ == "__main__":
    main()
