"""mini-ILIAS from features to numbers: one command, each stage timed, same-run baselines.

Writes synthetic features in the reference's layout (an ILIAS core folder of empty query
and positive files for the ids and ground truth; ``features_image_queries.hdf5``,
``features_text_queries.hdf5``, ``features_positives.hdf5`` and numbered
``features_distractors_NNNNN.hdf5`` files of clustered float16 vectors, 1M rows each),
then times the real commands in their own processes:

    ilias load CORE --features DIR --for-eval     (a graph-less collection: no HNSW build)
    ilias eval CORE --queries image,text --query-features DIR --output metrics.json

and prints each stage, the total and the peak memory of each process, next to the same
run's baselines over the same vectors: the raw engine's bulk upsert (Qdrant Edge, no WAL,
flushed once: its fastest safe load), numpy's matrix product + ``argpartition`` (the
floor), and faiss-cpu ``IndexFlatIP`` (the reference's engine; skipped if not installed).

Run:  python bench/minilias.py --n 1000000 --dim 512 [--device cuda] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from vectors import ClusteredStream  # bench/vectors.py

from ilias.indexing.features import feature_file_name, write_features

K = 1000
PER_FILE = 1_000_000
INSTANCES = 1000


def write_dataset(root: Path, n: int, dim: int, image_queries: int) -> dict:
    """The core folder, the feature files; returns what the baselines need."""
    core, feats = root / "core", root / "features"
    feats.mkdir(parents=True)
    stream = ClusteredStream(n, dim, seed=7, chunk=PER_FILE)
    rng = np.random.default_rng(3)
    picked = rng.choice(len(stream.centers), INSTANCES, replace=len(stream.centers) < INSTANCES)
    centres = stream.centers[picked]
    query_ids, text_ids, positive_ids, rows_q, rows_t, rows_p = [], [], [], [], [], []
    for i in range(INSTANCES):
        name = f"inst{i:04d}"
        (core / name / "query").mkdir(parents=True)
        (core / name / "pos").mkdir()
        for q in range(2 if i < image_queries - INSTANCES else 1):
            (core / name / "query" / f"Q{q:03d}.jpg").touch()
            query_ids.append(f"{name}/query/Q{q:03d}.jpg")
            rows_q.append(centres[i])
        (core / name / "query" / "T000.txt").write_text(f"object {i}")
        text_ids.append(f"{name}/query/T000.txt")
        rows_t.append(centres[i])
        for p in range(5):
            (core / name / "pos" / f"P{p:03d}.jpg").touch()
            positive_ids.append(f"{name}/pos/P{p:03d}.jpg")
            rows_p.append(centres[i])

    def near(rows: list, scale: float) -> np.ndarray:
        x = np.asarray(rows) + scale * rng.standard_normal((len(rows), dim)).astype(np.float32)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    queries, texts, positives = near(rows_q, 0.9), near(rows_t, 1.1), near(rows_p, 0.9)
    write_features(feats / feature_file_name("image_queries"), query_ids, queries)
    write_features(feats / feature_file_name("text_queries"), text_ids, texts)
    write_features(feats / feature_file_name("positives"), positive_ids, positives)
    distractors = n - len(positive_ids)
    for number in range(-(-distractors // PER_FILE)):
        rows = stream.chunk(number)[: distractors - number * PER_FILE]
        ids = [f"{number * 10 + j // 100_000:05d}.tar/{j:08d}" for j in range(len(rows))]
        write_features(feats / feature_file_name("distractors", number), ids, rows)
    return {"core": core, "features": feats, "queries": {"image": queries, "text": texts}}


def database_rows(feats: Path):
    """The database as stored vectors (positives, then each distractor file), float32 unit."""
    import h5py

    for path in [feats / feature_file_name("positives"), *sorted(feats.glob("features_distr*"))]:
        with h5py.File(path, "r") as found:
            for start in range(0, len(found["features"]), 200_000):
                x = np.asarray(found["features"][start : start + 200_000], np.float32)
                yield x / np.linalg.norm(x, axis=1, keepdims=True)


def raw_engine_upsert(feats: Path, dim: int, folder: Path) -> float:
    """Qdrant Edge alone: the same vectors, no WAL, batches of 4096, one flush at the end."""
    import qdrant_edge as qe

    from ilias.indexing import CollectionConfig
    from ilias.indexing.store.edge import _edge_config

    config = _edge_config(
        CollectionConfig(dim=dim, payload_indexes={}, storage="compact", index="scan")
    )
    shard = qe.EdgeShard.create(str(folder), config)
    began, count = time.perf_counter(), 0
    for rows in database_rows(feats):
        for start in range(0, len(rows), 4096):
            part = rows[start : start + 4096]
            points = [
                qe.Point(str(uuid.uuid4()), {"global": r}, {"id": str(count + j)})
                for j, r in enumerate(part.tolist())
            ]
            shard.update(qe.UpdateOperation.upsert_points(points))
            count += len(part)
    shard.flush()
    seconds = time.perf_counter() - began
    shard.close()
    return count / seconds


def in_memory(feats: Path, limit_bytes: int = 8 << 30) -> np.ndarray | None:
    """The database as one float32 array, or None beyond ``limit_bytes`` (the in-memory
    baselines are skipped then: they would swap)."""
    rows = 0
    import h5py

    paths = [feats / feature_file_name("positives"), *sorted(feats.glob("features_distr*"))]
    for path in paths:
        with h5py.File(path, "r") as found:
            rows, dim = rows + len(found["features"]), found["features"].shape[1]
    if rows * dim * 4 > limit_bytes:
        return None
    return np.concatenate(list(database_rows(feats)))


def numpy_floor(database: np.ndarray, queries: dict) -> float:
    """Plain numpy: queries in batches whose score rows stay within 256 MB, each batch one
    matrix product with the whole database and one ``argpartition`` per row."""
    q = np.concatenate(list(queries.values()))
    batch = max(8, (256 << 20) // (4 * len(database)))
    began = time.perf_counter()
    for start in range(0, len(q), batch):
        scores = q[start : start + batch] @ database.T
        np.argpartition(-scores, K - 1, axis=1)[:, :K]
    return time.perf_counter() - began


def faiss_flat(database: np.ndarray, queries: dict) -> float | None:
    """faiss-cpu ``IndexFlatIP`` over the same array, queries in batches of 50 (as the
    reference's knn search); None where faiss is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    q = np.concatenate(list(queries.values()))
    index = faiss.IndexFlatIP(q.shape[1])
    index.add(database)
    began = time.perf_counter()
    for start in range(0, len(q), 50):
        index.search(q[start : start + 50], K)
    return time.perf_counter() - began


def timed(command: list[str], env: dict) -> tuple[float, float, str]:
    """Seconds, peak RSS (GB) of the command's process tree, its output."""
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, peak, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="database points")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--image-queries", type=int, default=1232)
    parser.add_argument("--device", default="cpu", help="where eval ranks: cpu, cuda, ...")
    parser.add_argument("--workdir", type=Path, default=None, help="kept (default: temporary)")
    parser.add_argument("--skip-baselines", action="store_true")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="minilias-"))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ILIAS_HOME": str(root / "home")}
    store = f"edge:{root / 'store'}"
    try:
        began = time.perf_counter()
        data = write_dataset(root, args.n, args.dim, args.image_queries)
        print(f"features written: {args.n:,} x {args.dim} ({time.perf_counter() - began:.0f} s)")
        ilias = [sys.executable, "-m", "ilias"]
        load_s, load_peak, out = timed(
            [*ilias, "load", str(data["core"]), "--features", str(data["features"]),
             "--for-eval", "--store", store, "-c", "mini"], env,
        )  # fmt: skip
        print(out.strip())
        metrics = root / "metrics.json"
        eval_s, eval_peak, out = timed(
            [*ilias, "eval", str(data["core"]), "--queries", "image,text", "--query-features",
             str(data["features"]), "--store", store, "-c", "mini", "--output", str(metrics),
             "--device", args.device], env,
        )  # fmt: skip
        print(out.strip())
        written = json.loads(metrics.read_text())
        scores = written["queries"]
        search_s = sum(v for key, v in written["timings"].items() if key.endswith("_search_s"))
        total = load_s + eval_s
        print(f"\n{'stage':44s} {'seconds':>8s}")
        rate = f"({args.n / load_s:,.0f} points/s)"
        print(f"{'ilias load --features --for-eval':44s} {load_s:8.1f}  {rate}")
        print(f"{'ilias eval (image + text, exact)':44s} {eval_s:8.1f}")
        print(f"{'  of which the exact pass (both kinds)':44s} {search_s:8.1f}")
        print(f"{'total, files to metrics.json':44s} {total:8.1f}")
        print(f"peak RSS: load {load_peak:.1f} GB, eval {eval_peak:.1f} GB (max of the children)")
        for kind, result in scores.items():
            print(f"{kind} queries ({result['n_queries']}): mAP@1k {result['map']:.2f}")
        if not args.skip_baselines:
            raw = raw_engine_upsert(data["features"], args.dim, root / "raw")
            shutil.rmtree(root / "raw", ignore_errors=True)
            database = in_memory(data["features"])
            if database is None:
                print("numpy and faiss baselines skipped: the database exceeds 8 GB as float32")
                return
            floor = numpy_floor(database, data["queries"])
            flat = faiss_flat(database, data["queries"])
            ratio = args.n / load_s / raw
            print(f"\nraw engine upsert (Edge, no WAL): {raw:,.0f} points/s; ilias load / raw "
                  f"= {ratio:.2f}x (load includes its build and start-up)")  # fmt: skip
            print(f"numpy GEMM + argpartition (in memory, all queries): {floor:.1f} s; "
                  f"ilias exact pass / numpy = {search_s / floor:.2f}x")  # fmt: skip
            if flat is not None:
                print(f"faiss IndexFlatIP (batches of 50, all queries): {flat:.1f} s; "
                      f"ilias exact pass / faiss = {search_s / flat:.2f}x")  # fmt: skip
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
            print(f"peak RSS of this process (baselines): {peak:.1f} GB")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
