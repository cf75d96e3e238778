"""Exact top k of many queries at once: one pass over the stored vectors, in blocks.

The evaluation's ranking is the reference's: every query scored against every stored
original, the k best kept (faiss' flat index). Per query through the engine that is a full
scan per query; here all queries of an evaluation (image and text together) are scored in
one pass over the collection (``Store.stream_vectors``): per block of stored rows, one
matrix product ``queries x block`` and an update of a running top k per query. Each block
is read once, float16 blocks (``compact``) are converted to float32 as they come.

The running top k costs little beside the products: once a query holds k candidates, only
the scores of a block above its current k-th score can enter (one comparison per score,
``np.nonzero``), and only those queries' lists are merged. A plain ``argpartition`` of
every score row, what the numpy baseline does, costs several times that.

Ties: the k-th score's ties are where any exact search may differ (faiss, numpy and the
engine break them by their own internal order); here a score equal to a query's current
k-th score does not displace it, which of several points tied within one merge stays is
``argpartition``'s choice, and each final list is ordered by score, then by the engine's
point order.

``device``: ``cpu`` (numpy, BLAS on all cores) or a torch device (``cuda``, ``cuda:N``;
``torch-cpu`` runs the torch code on the CPU, which the tests use): the queries stay on
the device, each block is copied there (float16 blocks as float16, converted there), and
``torch.topk`` keeps the running top k.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ilias.indexing.prefetch import prefetched
from ilias.types import Hit

Blocks = Iterable[tuple[np.ndarray, np.ndarray]]  # (int64 keys, rows float32 / float16)
# Scores of one block are held as float32 queries x rows: at most this many bytes.
SCORE_BYTES = 1 << 27


@dataclass(frozen=True)
class ExactResult:
    """Per query set: ``(keys, scores)`` arrays of shape (queries, <= k), best first
    (keys -1 / scores -inf pad a list when fewer than k points exist)."""

    keys: dict[str, np.ndarray]
    scores: dict[str, np.ndarray]
    seconds: float
    rows: int


def block_rows(queries: int, dim: int = 0) -> int:
    """Stored rows per block: the score block stays within ``SCORE_BYTES``."""
    return int(max(1024, min(65_536, SCORE_BYTES // (4 * max(1, queries)))))


def normalized(vectors: np.ndarray) -> np.ndarray:
    """float32 unit rows (the engine normalises cosine queries the same way)."""
    rows = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1)


def exact_top_k(
    queries: Mapping[str, np.ndarray],
    blocks: Blocks,
    k: int,
    *,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
) -> ExactResult:
    """The exact top ``k`` (inner product of unit rows: cosine) of every query set in
    ``queries`` (name -> rows) over the stored ``blocks``, in one pass."""
    names = list(queries)
    sizes = [len(queries[n]) for n in names]
    matrix = normalized(np.concatenate([queries[n] for n in names])) if names else None
    began = time.perf_counter()
    if matrix is None or not len(matrix):
        empty = {n: np.zeros((0, 0), np.int64) for n in names}
        return ExactResult(empty, {n: np.zeros((0, 0), np.float32) for n in names}, 0.0, 0)
    if device == "cpu":
        keys, scores, rows = _numpy_top_k(matrix, blocks, k, progress)
    else:
        keys, scores, rows = _torch_top_k(matrix, blocks, k, device, progress)
    keys, scores = _ordered(keys, scores)
    out_keys, out_scores, start = {}, {}, 0
    for name, size in zip(names, sizes, strict=True):
        out_keys[name], out_scores[name] = keys[start : start + size], scores[start : start + size]
        start += size
    return ExactResult(out_keys, out_scores, time.perf_counter() - began, rows)


def hits_of_keys(keys: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[list[Hit]]:
    """Rankings as hits named by dataset id (payload: the id alone; evaluation reads ids
    and scores). The cyclic garbage collector is paused meanwhile: 2.2 million new objects
    (an ILIAS evaluation's top 1000s) set it scanning every object again and again, which
    took twice as long as making them (measured: 12.6 s with it, 4.6 s without); none of
    them can form a cycle."""
    with _collector_paused():
        return _hits(keys, scores, names)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _hits(keys: np.ndarray, scores: np.ndarray, names: Sequence[str]) -> list[list[Hit]]:
    out = []
    for row_keys, row_scores in zip(keys.tolist(), scores.tolist(), strict=True):
        hits = []
        for key, score in zip(row_keys, row_scores, strict=True):
            if key < 0:
                break
            name = names[key]
            hits.append(Hit(name, score, {"id": name}))
        out.append(hits)
    return out


# ------------------------------------------------------------------------- numpy


def _numpy_top_k(
    queries: np.ndarray, blocks: Blocks, k: int, progress: Callable[[int], None] | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Block n+1 is read and multiplied in a thread (BLAS, on every core, without the GIL)
    while block n's scores update the running top k here (numpy's comparisons and
    partitions, one core, most of them without the GIL either): the update no longer waits
    for the product nor the product for the update. Two score blocks are held at a time."""
    top = _RunningTopK(len(queries), k)
    seen = 0

    def products() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for keys, rows in blocks:
            block = np.asarray(rows, dtype=np.float32)  # float16: converted block by block
            yield queries @ block.T, np.asarray(keys, dtype=np.int64)

    for scores, keys in prefetched(products(), "exact-product"):
        top.add(scores, keys)
        seen += len(keys)
        if progress:
            progress(seen)
    top.merge()
    return top.keys, top.scores, seen


class _RunningTopK:
    """Per query, the k best (score, key) so far, and the scores above the k-th found since.

    Until every list is full, blocks are merged whole (``argpartition``). After that a
    block costs one comparison per score against each query's k-th best at the last merge
    (a lower bound of the true k-th, so nothing that belongs is missed); the few scores
    above it wait in a buffer, merged once some query has gathered k of them."""

    def __init__(self, n: int, k: int):
        self.k = k
        self.scores = np.full((n, 0), -np.inf, dtype=np.float32)
        self.keys = np.full((n, 0), -1, dtype=np.int64)
        self.kth = np.full(n, -np.inf, dtype=np.float32)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # rows, keys, scores
        self.waiting = np.zeros(n, dtype=np.int64)

    def add(self, scores: np.ndarray, keys: np.ndarray) -> None:
        if self.scores.shape[1] < self.k:
            merged_s = np.concatenate([self.scores, scores], axis=1)
            merged_k = np.concatenate([self.keys, np.broadcast_to(keys, scores.shape)], axis=1)
            self._keep(merged_s, merged_k, np.arange(len(scores)))
            return
        rows, cols = np.nonzero(scores > self.kth[:, None])
        if not len(rows):
            return
        self.pending.append((rows, keys[cols], scores[rows, cols]))
        self.waiting += np.bincount(rows, minlength=len(scores))
        if self.waiting.max() >= self.k:
            self.merge()

    def merge(self) -> None:
        """Fold the waiting scores into the lists of the queries that have any."""
        if not self.pending:
            return
        rows = np.concatenate([p[0] for p in self.pending])
        keys = np.concatenate([p[1] for p in self.pending])
        values = np.concatenate([p[2] for p in self.pending])
        self.pending, self.waiting[:] = [], 0
        order = np.argsort(rows, kind="stable")
        rows, keys, values = rows[order], keys[order], values[order]
        counts = np.bincount(rows, minlength=len(self.scores))
        touched = np.flatnonzero(counts)
        width = int(counts.max())
        slot = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]
        where = np.searchsorted(touched, rows)
        cand_s = np.full((len(touched), width), -np.inf, dtype=np.float32)
        cand_k = np.full((len(touched), width), -1, dtype=np.int64)
        cand_s[where, slot], cand_k[where, slot] = values, keys
        merged_s = np.concatenate([self.scores[touched], cand_s], axis=1)
        merged_k = np.concatenate([self.keys[touched], cand_k], axis=1)
        self._keep(merged_s, merged_k, touched)

    def _keep(self, merged_s: np.ndarray, merged_k: np.ndarray, rows: np.ndarray) -> None:
        """The k best of ``merged`` become the lists of ``rows`` (which of several points
        tied at the k-th score stays is ``argpartition``'s choice)."""
        if merged_s.shape[1] <= self.k:
            self.scores, self.keys = merged_s, merged_k
            if merged_s.shape[1] == self.k:
                self.kth = merged_s.min(axis=1)
            return
        pick = np.argpartition(-merged_s, self.k - 1, axis=1)[:, : self.k]
        best_s = np.take_along_axis(merged_s, pick, axis=1)
        best_k = np.take_along_axis(merged_k, pick, axis=1)
        if len(rows) == len(self.scores) and self.scores.shape[1] < self.k:
            self.scores, self.keys = best_s, best_k
        else:
            self.scores[rows], self.keys[rows] = best_s, best_k
        self.kth[rows] = best_s.min(axis=1)


def _ordered(keys: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each list best first: by score, then by key (the engine's point order)."""
    order = np.lexsort((keys, -scores), axis=1)
    return np.take_along_axis(keys, order, axis=1), np.take_along_axis(scores, order, axis=1)


# ------------------------------------------------------------------------- torch


def _torch_top_k(
    queries: np.ndarray,
    blocks: Blocks,
    k: int,
    device: str,
    progress: Callable[[int], None] | None,
) -> tuple[np.ndarray, np.ndarray, int]:
    import torch

    where = torch.device("cpu" if device == "torch-cpu" else device)
    q = torch.from_numpy(queries).to(where)
    n = len(queries)
    top_scores = torch.full((n, 0), -float("inf"), device=where)
    top_keys = torch.full((n, 0), -1, dtype=torch.int64, device=where)
    seen = 0
    for keys, rows in blocks:
        array = np.ascontiguousarray(rows)
        if not array.flags.writeable:  # a memory-mapped segment: torch wants its own copy
            array = array.copy()
        block = torch.from_numpy(array).to(where, non_blocking=True).to(torch.float32)
        key_row = torch.from_numpy(np.asarray(keys, dtype=np.int64)).to(where)
        scores = q @ block.T
        merged_s = torch.cat([top_scores, scores], dim=1)
        merged_k = torch.cat([top_keys, key_row.expand(n, -1)], dim=1)
        top_scores, pick = torch.topk(merged_s, min(k, merged_s.shape[1]), dim=1)
        top_keys = torch.gather(merged_k, 1, pick)
        seen += len(array)
        if progress:
            progress(seen)
    out_s = np.full((n, k), -np.inf, dtype=np.float32)
    out_k = np.full((n, k), -1, dtype=np.int64)
    width = top_scores.shape[1]
    out_s[:, :width] = top_scores.cpu().numpy()
    out_k[:, :width] = top_keys.cpu().numpy()
    return out_k, out_s, seen


def torch_device_for(device: str) -> str:
    """The ranking device for an evaluation's ``--device``: a CUDA device when one is asked
    for (or ``auto`` and torch sees one), else ``cpu`` (numpy). Imports torch only when a
    GPU may be meant."""
    if device == "cpu":
        return "cpu"
    from ilias.indexing.devices import resolve_device

    resolved = resolve_device(device)
    return "cpu" if resolved.type == "cpu" else str(resolved)


__all__ = ["ExactResult", "block_rows", "exact_top_k", "hits_of_keys", "torch_device_for"]
