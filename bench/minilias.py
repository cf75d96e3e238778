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
The baselines run on the first ``--baseline-rows`` rows (default 1M) and are scaled
linearly to ``--n``: at 5M x 1024 the float32 database (20 GB) does not fit beside the
collection on a 24 GB machine; the output says when a figure is scaled.

Run:  python bench/minilias.py --n 1000000 --dim 512 [--device cuda] [--workdir DIR]
      python bench/minilias.py --n 5000000 --dim 1024     (mini-ILIAS size; 16 GB disk)

With ``--device cuda`` the evaluation ranks on the GPU (torch) and a torch floor on the
same device (the database resident there, matmul + topk) is printed beside the CPU ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def raw_engine_load(feats: Path, dim: int, folder: Path, limit: int) -> tuple[int, float, float]:
    """Qdrant Edge alone at its fastest safe bulk load, over the first ``limit`` stored rows:
    the same collection config as ilias's (int8, no graph, the same segment plan), float32
    rows passed as buffers (memoryviews), batches of 4096, no WAL, one flush, one
    ``optimize()``, then the same payload indexes built once. Returns (points, upsert
    seconds, seal + index seconds)."""
    import qdrant_edge as qe

    from ilias.indexing import CollectionConfig
    from ilias.indexing.store.edge import _edge_config, _ensure_payload_indexes

    config = _resolved(CollectionConfig(dim=dim, storage="auto", index="scan", wal=False), feats)
    shard = qe.EdgeShard.create(str(folder), _edge_config(config))
    began, count = time.perf_counter(), 0
    for rows in database_rows(feats):
        rows = rows[: limit - count]
        for start in range(0, len(rows), 4096):
            part = rows[start : start + 4096]
            points = [
                qe.Point(str(uuid.uuid4()), {"global": memoryview(r)}, {"id": str(count + j),
                         "role": "distractor"})
                for j, r in enumerate(part)
            ]  # fmt: skip
            shard.update(qe.UpdateOperation.upsert_points(points))
            count += len(part)
        if count >= limit:
            break
    shard.flush()
    upsert_s = time.perf_counter() - began
    began = time.perf_counter()
    shard.optimize()
    _ensure_payload_indexes(shard, config)
    shard.flush()
    build_s = time.perf_counter() - began
    shard.close()
    return count, upsert_s, build_s


def _resolved(config, feats: Path):
    """The config as ilias resolves it for this many rows (storage, segments)."""
    import dataclasses

    import h5py

    from ilias.indexing.store.layout import resolve_storage

    rows = 0
    for path in feats.glob("features_*.hdf5"):
        if "queries" not in path.name:
            with h5py.File(path, "r") as found:
                rows += len(found["features"])
    storage = resolve_storage("auto", dim=config.dim, expected_points=rows, m=0)
    return dataclasses.replace(config, storage=storage, expected_points=rows)


def in_memory(feats: Path, limit: int) -> np.ndarray:
    """The first ``limit`` stored rows as one float32 array (the in-memory baselines run on
    these; beyond them the database would not fit in RAM as float32)."""
    parts, rows = [], 0
    for part in database_rows(feats):
        parts.append(part[: limit - rows])
        rows += len(parts[-1])
        if rows >= limit:
            break
    return np.concatenate(parts)


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


def torch_floor(database: np.ndarray, queries: dict, device: str) -> float:
    """The same floor on a torch device: the database copied there once (not timed), then
    per batch of queries one matrix product and ``torch.topk``."""
    import torch

    where = torch.device(device)
    data = torch.from_numpy(database).to(where)
    q = torch.from_numpy(np.concatenate(list(queries.values()))).to(where)
    batch = max(8, (1 << 30) // (4 * len(database)))
    if where.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for start in range(0, len(q), batch):
        torch.topk(q[start : start + batch] @ data.T, K, dim=1)
    if where.type == "cuda":
        torch.cuda.synchronize()
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
    parser.add_argument(
        "--workers", type=int, default=None,
        help="processes writing the import (ilias load --workers; default: ilias's choice)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline-rows", type=int, default=1_000_000,
        help="the baselines run on the first this many stored rows (at most --n) and are "
        "scaled to --n linearly: 5M x 1024 as float32 is 20 GB, beyond a 24 GB machine's "
        "room beside the collection's page cache",
    )  # fmt: skip
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="minilias-"))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} is not empty")
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ILIAS_HOME": str(root / "home")}
    store = f"edge:{root / 'store'}"
    baselines = not args.skip_baselines
    try:
        began = time.perf_counter()
        data = write_dataset(root, args.n, args.dim, args.image_queries)
        print(f"features written: {args.n:,} x {args.dim} ({time.perf_counter() - began:.0f} s)")
        ilias = [sys.executable, "-m", "ilias"]
        # Each baseline runs right after its ilias counterpart: on a shared machine the
        # load changes over minutes, and the ratios compare neighbours.
        load_s, load_peak, out = timed(
            [*ilias, "load", str(data["core"]), "--features", str(data["features"]),
             "--for-eval", "--store", store, "-c", "mini",
             *(["--workers", str(args.workers)] if args.workers else [])], env,
        )  # fmt: skip
        print(out.strip())
        found = re.search(r"import ([\d.]+) s \(([\d,]+) points/s\), index build ([\d.]+) s", out)
        import_rate = float(found.group(2).replace(",", "")) if found else float("nan")
        build_s = float(found.group(3)) if found else float("nan")
        limit = min(args.n, args.baseline_rows)
        scale = args.n / limit  # the baselines' seconds, scaled to the whole database
        if baselines:
            raw_rows, raw_upsert, raw_build = raw_engine_load(
                data["features"], args.dim, root / "raw", limit
            )
            shutil.rmtree(root / "raw", ignore_errors=True)
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
        database = in_memory(data["features"], limit) if baselines else None
        if database is not None:
            floor = numpy_floor(database, data["queries"]) * scale
            flat = faiss_flat(database, data["queries"])
            flat = flat * scale if flat is not None else None
        total = load_s + eval_s
        print(f"\n{'stage':44s} {'seconds':>8s}")
        rate = f"({args.n / load_s:,.0f} points/s)"
        print(f"{'ilias load --features --for-eval (process)':44s} {load_s:8.1f}  {rate}")
        config = json.loads((root / "store" / "mini" / "collection.json").read_text())
        parts = int(config.get("import_parts", 1))
        stage = f"  import ({parts} processes{', each seals + indexes' if parts > 1 else ''})"
        print(f"{stage:44s} {args.n / import_rate:8.1f}  ({import_rate:,.0f} points/s)")
        built = (
            "  index build (done by each process above)"
            if parts > 1
            else ("  index build (last seal, payload indexes)")
        )
        print(f"{built:44s} {build_s:8.1f}")
        print(f"{'ilias eval (image + text, exact; process)':44s} {eval_s:8.1f}")
        print(f"{'  the exact pass (both kinds)':44s} {search_s:8.1f}")
        print(f"{'total, files to metrics.json':44s} {total:8.1f}")
        print(f"peak RSS of the ilias processes: {max(load_peak, eval_peak):.1f} GB")
        for kind, result in scores.items():
            print(f"{kind} queries ({result['n_queries']}): mAP@1k {result['map']:.2f}")
        if not baselines:
            return
        assert database is not None
        scaled = f" (measured on the first {limit:,} rows, x {scale:g})" if scale != 1 else ""
        raw = raw_rows / raw_upsert
        raw_total = (raw_upsert + raw_build) * scale
        ilias_total = args.n / import_rate + build_s
        print(f"\nraw engine (Edge, same config, float32 buffers, no WAL, one flush, one "
              f"optimize, then the payload indexes){scaled}: upsert {raw:,.0f} points/s; "
              f"upsert + seal + indexes {raw_total:.1f} s")  # fmt: skip
        whole = raw_total / ilias_total
        print(f"ilias import / raw upsert = {import_rate / raw:.2f}x (the import seals as it "
              f"goes; the raw engine is one process); whole load, raw / ilias = "
              f"{whole:.2f}x")  # fmt: skip
        print(f"numpy GEMM + argpartition (in memory, all queries){scaled}: {floor:.1f} s; "
              f"ilias exact pass / numpy = {search_s / floor:.2f}x")  # fmt: skip
        if flat is not None:
            print(f"faiss IndexFlatIP (batches of 50, all queries){scaled}: {flat:.1f} s; "
                  f"ilias exact pass / faiss = {search_s / flat:.2f}x")  # fmt: skip
        if args.device != "cpu":
            on_device = torch_floor(database, data["queries"], args.device) * scale
            ratio = search_s / on_device
            print(f"torch matmul + topk on {args.device} (database resident there): "
                  f"{on_device:.1f} s; ilias exact pass / this = {ratio:.2f}x")  # fmt: skip
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"peak RSS of this process (baselines): {peak:.1f} GB")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
