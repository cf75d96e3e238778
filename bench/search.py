"""Search: Qdrant Edge top-1000 latency and recall vs exact numpy, and int8 vs float32 mAP.

Part 1 (speed/recall): N clustered unit vectors (hard: many near neighbours), loaded into a
real Edge collection with int8 + HNSW; each setting is timed per query and its top-1000
compared with exact float32 numpy brute force on the same vectors (recall@1000).
Part 2 (quality): the demo benchmark's collection searched with int8 (with and without
rescoring) and with the float32 originals: mAP@1k of each.

Run:  python bench/search.py [--n 50000] [--dim 1280] [--queries 100]
(part 2 expects `ilias demo` to have run; it is skipped with a message otherwise)
"""

from __future__ import annotations

import argparse
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
# int8 candidates are re-scored with the float32 originals unless rescore is off. A full
# scan (exact=True) still scores the int8 copies first unless quantization is ignored, so
# "full scan int8" is brute force over a quarter of the bytes, then a float32 re-score.
SETTINGS = [
    ("hnsw int8, no rescore", SearchParams(rescore=False)),
    ("hnsw int8 + rescore (default)", SearchParams()),
    ("hnsw ef=2000 + rescore", SearchParams(hnsw_ef=2000)),
    ("hnsw + oversampling 2", SearchParams(oversampling=2.0)),
    ("hnsw + oversampling 4", SearchParams(oversampling=4.0)),
    ("hnsw ef=2000 + oversampling 4", SearchParams(hnsw_ef=2000, oversampling=4.0)),
    ("hnsw ef=4000 + oversampling 2", SearchParams(hnsw_ef=4000, oversampling=2.0)),
    ("hnsw ef=4000 + oversampling 4", SearchParams(hnsw_ef=4000, oversampling=4.0)),
    ("full scan int8 + rescore", SearchParams(exact=True)),
    ("full scan int8 + oversampling 2", SearchParams(exact=True, oversampling=2.0)),
    ("full scan float32 (evaluation's EXACT)", SearchParams(exact=True, ignore_quantization=True)),
]


def speed_and_recall(n: int, dim: int, n_queries: int, m: int, ef_construct: int) -> None:
    data = clustered_vectors(n + n_queries, dim)
    base, queries = data[:n], data[n:]
    ids = [f"v{i}" for i in range(n)]
    with tempfile.TemporaryDirectory() as folder, EdgeStore(folder) as store:
        config = CollectionConfig(
            dim=dim, payload_indexes={}, hnsw_m=m, hnsw_ef_construct=ef_construct
        )
        store.create_collection("bench", config)
        began = time.perf_counter()
        for start in range(0, n, 1000):
            chunk = ids[start : start + 1000]
            store.upsert("bench", chunk, base[start : start + 1000], [{"id": i} for i in chunk])
        upsert = time.perf_counter() - began
        began = time.perf_counter()
        store.finish_load("bench")
        build = time.perf_counter() - began
        print(f"{n} x {dim}: upsert {n / upsert:.0f} points/s, HNSW + int8 build {build:.1f} s")

        began = time.perf_counter()
        truth = []
        for q in queries:
            scores = base @ q
            top = np.argpartition(-scores, K)[:K]
            truth.append(set(top[np.argsort(-scores[top])].tolist()))
        numpy_ms = 1000 * (time.perf_counter() - began) / n_queries

        print(
            f"\n{'setting':40s} {'median ms':>9s} {'p95 ms':>7s} {'recall@1k':>9s} {'vs numpy':>8s}"
        )
        print(
            f"{'numpy exact float32 (baseline)':40s} {numpy_ms:9.2f} {'':>7s} {1.0:9.3f} {1.0:8.2f}"
        )
        best = None
        for name, params in SETTINGS:
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
                best = (median, float(np.mean(recalls)))
        print(
            f"\nsummary: default HNSW int8 is {numpy_ms / best[0]:.2f}x numpy brute force "
            f"per query at recall@1k {best[1]:.3f} (N={n}, d={dim})"
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
    parser.add_argument("--skip-demo", action="store_true", help="only the synthetic part")
    args = parser.parse_args()
    speed_and_recall(args.n, args.dim, args.queries, args.m, args.ef_construct)
    if not args.skip_demo:
        int8_vs_float32(args.workdir)


if __name__ == "__main__":
    main()
