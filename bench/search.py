"""Search: Qdrant Edge top-1000 latency and recall vs exact numpy, and int8 vs float32 mAP.

Part 1 (speed/recall): N clustered unit vectors (hard: many near neighbours), loaded into
real Edge collections, one per index kind (``--index``: the default ``auto``, which scans
the int8 copies up to 1 GiB of them, and ``hnsw``); each search setting is timed per query
and its top-1000 compared with exact float32 numpy brute force on the same vectors
(recall@1000), measured once in the same run.
Part 2 (quality): the demo benchmark's collection searched with int8 (with and without
rescoring) and with the float32 originals: mAP@1k of each.

Run:  python bench/search.py [--n 50000] [--dim 1280] [--queries 100] [--index scan ...]
(part 2 expects `ilias demo` to have run; it is skipped with a message otherwise)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from vectors import clustered_vectors  # bench/vectors.py: the hard synthetic data

from ilias.config import data_home
from ilias.indexing import CollectionConfig, EdgeStore, SearchParams
from ilias.loader import read_ilias
from ilias.query import evaluate_collection

K = 1000
# Qdrant searches with ef = max(hnsw_ef, limit), so for top-1000 only ef >= 1000 matters;
# int8 candidates are re-scored with the float32 originals unless rescore is off. Qdrant's
# exact search scores the originals whatever the quantization settings (measured: the same
# time with and without ignore_quantization, whatever the oversampling), so a scan of the
# int8 copies is only reachable through a collection without a graph (index="scan").
HNSW_SETTINGS = [
    ("int8, no rescore", SearchParams(rescore=False)),
    ("int8 + rescore (default)", SearchParams()),
    ("ef=2000 + rescore", SearchParams(hnsw_ef=2000)),
    ("oversampling 2", SearchParams(oversampling=2.0)),
    ("oversampling 4", SearchParams(oversampling=4.0)),
    ("ef=4000 + oversampling 4", SearchParams(hnsw_ef=4000, oversampling=4.0)),
    ("full scan float32 (evaluation's EXACT)", SearchParams(exact=True, ignore_quantization=True)),
]
SCAN_SETTINGS = [
    ("int8, no rescore", SearchParams(rescore=False)),
    ("int8 + rescore (default)", SearchParams()),
    ("oversampling 2", SearchParams(oversampling=2.0)),
    ("full scan float32 (evaluation's EXACT)", SearchParams(exact=True, ignore_quantization=True)),
]


def speed_and_recall(
    n: int, dim: int, n_queries: int, m: int, ef_construct: int, indexes: list[str]
) -> None:
    data = clustered_vectors(n + n_queries, dim)
    base, queries = data[:n], data[n:]
    ids = [f"v{i}" for i in range(n)]
    print(f"{os.cpu_count()} cores; {n} x {dim} hard clustered vectors, {n_queries} queries")

    began = time.perf_counter()
    truth = []
    for q in queries:
        scores = base @ q
        top = np.argpartition(-scores, K)[:K]
        truth.append(set(top[np.argsort(-scores[top])].tolist()))
    numpy_ms = 1000 * (time.perf_counter() - began) / n_queries
    print(f"numpy exact float32 (baseline): {numpy_ms:.2f} ms per query")

    summary = []
    for asked in indexes:
        with tempfile.TemporaryDirectory() as folder, EdgeStore(folder) as store:
            config = CollectionConfig(
                dim=dim, payload_indexes={}, hnsw_m=m, hnsw_ef_construct=ef_construct,
                expected_points=n, index=None if asked == "auto" else asked,
            )  # fmt: skip
            store.create_collection("bench", config)
            index = store.collection_config("bench").index
            began = time.perf_counter()
            for start in range(0, n, 1000):
                chunk = ids[start : start + 1000]
                vectors = base[start : start + 1000]
                store.upsert("bench", chunk, vectors, [{"id": i} for i in chunk])
            upsert = time.perf_counter() - began
            began = time.perf_counter()
            store.finish_load("bench")
            build = time.perf_counter() - began
            segments = store.info("bench").segments
            graph = f"HNSW m={m} ef_construct={ef_construct}" if index == "hnsw" else "no graph"
            print(
                f"\nindex {asked} -> {index} ({graph}, {segments} segments): upsert "
                f"{n / upsert:.0f} points/s (sealing included), build {build:.1f} s"
            )
            head = f"{'median ms':>9s} {'p95 ms':>7s} {'recall@1k':>9s} {'vs numpy':>8s}"
            print(f"{'setting':40s} {head}")
            for name, params in HNSW_SETTINGS if index == "hnsw" else SCAN_SETTINGS:
                times, recalls = [], []
                store.search("bench", queries[:1], K, params=params)  # warm-up
                for q, expected in zip(queries, truth, strict=True):
                    began = time.perf_counter()
                    hits = store.search("bench", q[None], K, params=params)[0]
                    times.append(1000 * (time.perf_counter() - began))
                    recalls.append(len(expected & {int(h.id[1:]) for h in hits}) / K)
                median = float(np.median(times))
                print(
                    f"{name:40s} {median:9.2f} {np.percentile(times, 95):7.2f} "
                    f"{np.mean(recalls):9.3f} {numpy_ms / median:7.2f}x"
                )
                if params == SearchParams():
                    summary.append((asked, index, median, float(np.mean(recalls))))
    print()
    for asked, index, median, recall in summary:
        print(
            f"summary: index {asked} ({index}), default search: {numpy_ms / median:.2f}x numpy "
            f"brute force per query at recall@1k {recall:.3f} (N={n}, d={dim})"
        )


def int8_vs_float32(workdir: Path) -> None:
    store_path = workdir / "qdrant"
    store = EdgeStore(store_path)
    names = [c for c in store.list_collections() if c.startswith("ilias-demo")]
    if not names:
        print(f"\n(no demo collection in {store_path}: run `ilias demo` for the mAP comparison)")
        return
    with store:
        name = names[0]
        meta = store.collection_config(name).metadata
        bench = read_ilias(meta["dataset"])
        print(f"\nmAP@1k on the demo benchmark ({name}; generated from real photos, not ILIAS)")
        for label, params in [
            ("int8 scores only (no rescore)", SearchParams(rescore=False)),
            ("int8 + float32 rescore (default)", SearchParams()),
            ("float32 exact", SearchParams(exact=True, ignore_quantization=True)),
        ]:
            run = evaluate_collection(store, name, bench, k=K, params=params).run("image")
            print(f"  {label:32s} mAP@1k {run.scores.map:6.2f}  oracle {run.scores.oracle:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    parser.add_argument("--m", type=int, default=16, help="HNSW m of the collection")
    parser.add_argument("--ef-construct", type=int, default=128, help="HNSW ef_construct")
    parser.add_argument(
        "--index", action="append", choices=["auto", "hnsw", "scan"],
        help="index kinds to build and time, one collection each (default: auto and hnsw)",
    )  # fmt: skip
    parser.add_argument("--skip-demo", action="store_true", help="only the synthetic part")
    args = parser.parse_args()
    indexes = args.index or ["auto", "hnsw"]
    speed_and_recall(args.n, args.dim, args.queries, args.m, args.ef_construct, indexes)
    if not args.skip_demo:
        int8_vs_float32(args.workdir)


if __name__ == "__main__":
    main()
