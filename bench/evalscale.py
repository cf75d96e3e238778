"""Exact evaluation at scale: 1,232 queries x top 1000 over 1M x 512, ilias vs faiss.

The evaluation path (``Retriever.search_vectors`` with ``EXACT``, the search every
``evaluate_collection`` run makes by default: a full scan of the float32 originals inside
a real Qdrant Edge collection, queries sent in batches of 64) against faiss-cpu
``IndexFlatIP``, the reference's engine, on the same vectors in the same run. Reports
total and per-query time, the ratio, whether the top-1000 lists agree (same ids; order
may differ only among exactly tied float32 scores), and peak memory.

Run:  python bench/evalscale.py [--n 1000000] [--dim 512] [--queries 1232]
Needs faiss-cpu (pip install faiss-cpu); the collection is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import resource
import tempfile
import time

import numpy as np
from vectors import clustered_vectors  # bench/vectors.py

from ilias.indexing import CollectionConfig, EdgeStore
from ilias.query import EXACT, Retriever

K = 1000


def rss_peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1232)
    parser.add_argument("--faiss-batch", type=int, default=50)
    args = parser.parse_args()
    import faiss

    data = clustered_vectors(args.n + args.queries, args.dim)
    base, queries = data[: args.n], data[args.n :]
    print(f"{platform.processor() or platform.machine()}, {faiss.omp_get_max_threads()} threads")

    began = time.perf_counter()
    index = faiss.IndexFlatIP(args.dim)
    index.add(base)
    faiss_ids = np.empty((len(queries), K), dtype=np.int64)
    faiss_scores = np.empty((len(queries), K), dtype=np.float32)
    for start in range(0, len(queries), args.faiss_batch):
        chunk = queries[start : start + args.faiss_batch]
        scores, ids = index.search(chunk, K)
        faiss_scores[start : start + len(chunk)], faiss_ids[start : start + len(chunk)] = (
            scores,
            ids,
        )
    faiss_s = time.perf_counter() - began
    del index

    with tempfile.TemporaryDirectory() as folder, EdgeStore(folder) as store:
        store.create_collection("scale", CollectionConfig(dim=args.dim, payload_indexes={}))
        began = time.perf_counter()
        for start in range(0, args.n, 5000):
            ids = [str(i) for i in range(start, min(args.n, start + 5000))]
            store.upsert("scale", ids, base[start : start + 5000], [{} for _ in ids])
        upsert_s = time.perf_counter() - began
        began = time.perf_counter()
        store.finish_load("scale")
        build_s = time.perf_counter() - began
        print(f"load: upsert {args.n / upsert_s:,.0f} points/s, index build {build_s:.0f} s")
        retriever = Retriever(store, "scale")
        began = time.perf_counter()
        rows = retriever.search_vectors(queries, K, params=EXACT)  # as evaluations search
        ilias_s = time.perf_counter() - began

    same = sum(
        {int(h.id) for h in row} == set(f.tolist()) for row, f in zip(rows, faiss_ids, strict=True)
    )
    # A list that differs must differ only by points tied with the k-th score (float32).
    boundary_ties = sum(
        abs(row[-1].score - float(f_scores[-1])) < 1e-6
        for row, f, f_scores in zip(rows, faiss_ids, faiss_scores, strict=True)
        if {int(h.id) for h in row} != set(f.tolist())
    )
    worst = max(
        float(np.max(np.abs(np.array([h.score for h in row]) - f)))
        for row, f in zip(rows, faiss_scores, strict=True)
    )
    n = len(queries)
    print(f"\n{'engine':40s} {'total s':>8s} {'ms/query':>9s}")
    faiss_name = f"faiss IndexFlatIP (batches of {args.faiss_batch})"
    print(f"{faiss_name:40s} {faiss_s:8.1f} {1000 * faiss_s / n:9.1f}")
    print(f"{'ilias exact (Qdrant Edge full scan)':40s} {ilias_s:8.1f} {1000 * ilias_s / n:9.1f}")
    print(
        f"\nidentical top-{K} id sets: {same}/{n} (the {n - same} others differ at a k-th "
        f"score tie: {boundary_ties}/{n - same}); largest score difference {worst:.2e}"
    )
    print(f"peak RSS {rss_peak_gb():.1f} GB")
    print(
        f"summary: ilias exact / faiss flat = {ilias_s / faiss_s:.2f}x total time "
        f"(N={args.n}, d={args.dim}, {n} queries, {same}/{n} identical)"
    )


if __name__ == "__main__":
    main()
