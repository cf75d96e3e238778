"""Exact top-k ranking of an evaluation's queries, the kernel alone: ilias's one-pass blocked
search (``ilias.query.exact.exact_top_k``) against same-run baselines over the same vectors.

An evaluation ranks every query of a benchmark (ILIAS: 1,232 image + 1,000 text queries)
against every stored vector and keeps the top k (k = 1000). This benchmark measures that
ranking with no engine and no model in the way, so it runs on any machine with numpy (and
torch for ``--device cuda``), a lent GPU machine included:

- ``numpy floor``: per block of stored rows, one ``queries @ block.T`` and an
  ``argpartition`` of the block's scores merged into the running top k (the plain recipe
  the issue names as the floor);
- ``faiss flat``: ``IndexFlatIP`` over the same vectors, ``search(queries, k)`` (the
  reference's engine; skipped where faiss-cpu is not installed);
- ``ilias cpu``: ``exact_top_k(..., device="cpu")``;
- ``torch floor`` / ``ilias cuda`` (when torch sees a GPU and ``--device`` names it): the
  whole stored matrix on the GPU once, ``matmul`` + ``topk`` per block (the GPU's floor),
  and ilias's GPU path, which copies each block from host memory as the collection streams
  it (what an evaluation does).

Every result is checked against the numpy floor: the same top-k set per query, the k-th
score's ties aside (``agree`` column). Vectors are clustered (hard: many near neighbours),
float32 or float16 (``--dtype float16``: ``compact`` collections store originals so).

Run:  python bench/exact.py --n 1000000 --dim 512 [--queries 2232] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator

import numpy as np

from ilias.query.exact import block_rows, exact_top_k


def clustered(n: int, dim: int, seed: int, dtype: str) -> np.ndarray:
    """``n`` unit rows around ``n // 50`` centres (hard data: dense neighbourhoods)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 50), dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 200_000
    for start in range(0, n, step):
        stop = min(n, start + step)
        rows = centres[rng.integers(0, len(centres), stop - start)]
        rows += 0.6 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:stop] = rows
    return out.astype(np.float16) if dtype == "float16" else out


def blocks_of(vectors: np.ndarray, rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(vectors), rows):
        stop = min(len(vectors), start + rows)
        yield np.arange(start, stop, dtype=np.int64), vectors[start:stop]


def numpy_floor(queries: np.ndarray, vectors: np.ndarray, k: int, rows: int) -> np.ndarray:
    """Top-k keys per query: a GEMM and an argpartition per block, merged (unordered)."""
    n = len(queries)
    top_s = np.full((n, 0), -np.inf, dtype=np.float32)
    top_k = np.full((n, 0), -1, dtype=np.int64)
    for keys, block in blocks_of(vectors, rows):
        scores = queries @ np.asarray(block, dtype=np.float32).T
        merged_s = np.concatenate([top_s, scores], axis=1)
        merged_k = np.concatenate([top_k, np.broadcast_to(keys, scores.shape)], axis=1)
        if merged_s.shape[1] > k:
            pick = np.argpartition(-merged_s, k - 1, axis=1)[:, :k]
            merged_s = np.take_along_axis(merged_s, pick, axis=1)
            merged_k = np.take_along_axis(merged_k, pick, axis=1)
        top_s, top_k = merged_s, merged_k
    return top_k


def torch_floor(
    queries: np.ndarray, vectors: np.ndarray, k: int, device: str
) -> tuple[np.ndarray, float]:
    """(keys, seconds): the GPU's floor, the stored matrix resident on the device and
    ``matmul`` + ``topk`` per block."""
    import torch

    where = torch.device(device)
    stored = torch.from_numpy(np.ascontiguousarray(vectors)).to(where)
    q = torch.from_numpy(queries).to(where)
    torch.cuda.synchronize(where)
    began = time.perf_counter()
    top_s = torch.full((len(queries), 0), -float("inf"), device=where)
    top_k = torch.full((len(queries), 0), -1, dtype=torch.int64, device=where)
    rows = 262_144
    for start in range(0, len(stored), rows):
        block = stored[start : start + rows].to(torch.float32)
        scores = q @ block.T
        keys = torch.arange(start, start + len(block), device=where).expand(len(q), -1)
        merged_s = torch.cat([top_s, scores], dim=1)
        merged_k = torch.cat([top_k, keys], dim=1)
        top_s, pick = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
        top_k = torch.gather(merged_k, 1, pick)
    result = top_k.cpu().numpy()
    return result, time.perf_counter() - began


def faiss_flat(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, float] | None:
    """(keys, seconds of the search alone), or None without faiss-cpu."""
    try:
        import faiss
    except ImportError:
        return None
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(np.asarray(vectors, dtype=np.float32))
    began = time.perf_counter()
    _, keys = index.search(queries, k)
    return keys, time.perf_counter() - began


def agreement(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's top-k set that the baseline's set holds (1.0: identical
    but for ties at the k-th score, which any exact search breaks its own way)."""
    shared = [len(np.intersect1d(a[a >= 0], b[b >= 0])) / max(1, len(b[b >= 0]))
              for a, b in zip(found, truth, strict=True)]  # fmt: skip
    return float(np.mean(shared))


def timed(call: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    began = time.perf_counter()
    out = call()
    return out, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="stored vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=2232, help="1,232 image + 1,000 text")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, or a torch device (cuda, cuda:0)")
    parser.add_argument("--skip-faiss", action="store_true")
    args = parser.parse_args()

    vectors = clustered(args.n, args.dim, 0, args.dtype)
    picks = np.random.default_rng(1).integers(0, args.n, args.queries)
    noise = np.random.default_rng(2).standard_normal((args.queries, args.dim), dtype=np.float32)
    queries = np.asarray(vectors[picks], dtype=np.float32) + 0.3 * noise / np.sqrt(args.dim)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    rows = block_rows(args.queries, args.dim)
    flops = 2.0 * args.queries * args.n * args.dim
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; {args.n:,} x {args.dim} "
        f"{args.dtype} stored, {args.queries:,} queries, k {args.k}, blocks of {rows:,} rows"
    )

    table: list[tuple[str, float, float]] = []
    print("\n| ranking | seconds | ms/query | TFLOP/s | vs numpy floor | agree |")
    print("|---|---|---|---|---|---|")

    def row(name: str, seconds: float, agree: float) -> None:
        """One row, printed as soon as it is measured (a long run keeps what it measured)."""
        table.append((name, seconds, agree))
        print(
            f"| {name} | {seconds:.2f} | {1000 * seconds / args.queries:.2f} | "
            f"{flops / seconds / 1e12:.2f} | {table[0][1] / seconds:.2f}x | {agree:.4f} |"
        )

    truth, floor_s = timed(lambda: numpy_floor(queries, vectors, args.k, rows))
    row("numpy floor (GEMM + argpartition)", floor_s, 1.0)
    if not args.skip_faiss:
        found = faiss_flat(queries, vectors, args.k)
        if found is not None:
            row("faiss flat (IndexFlatIP)", found[1], agreement(found[0], truth))
    result = exact_top_k({"q": queries}, blocks_of(vectors, rows), args.k)
    row("ilias exact_top_k cpu", result.seconds, agreement(result.keys["q"], truth))
    if args.device != "cpu":
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: torch sees no GPU; GPU rows skipped")
        else:
            for _ in range(2):  # the first call pays CUDA's start; report the second
                gpu = exact_top_k(
                    {"q": queries}, blocks_of(vectors, rows), args.k, device=args.device
                )
            name = f"ilias exact_top_k {args.device} (blocks from host)"
            row(name, gpu.seconds, agreement(gpu.keys["q"], truth))
            keys, seconds = torch_floor(queries, vectors, args.k, args.device)
            row(
                f"torch floor {args.device} (resident, matmul + topk)",
                seconds,
                agreement(keys, truth),
            )
            print(f"gpu: {torch.cuda.get_device_name(torch.device(args.device))}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    ratios = ", ".join(f"{name.split(' (')[0]} {floor_s / s:.2f}x" for name, s, _ in table[1:])
    print(f"\npeak RSS {peak:.1f} GiB; vs numpy floor: {ratios}")


if __name__ == "__main__":
    main()
