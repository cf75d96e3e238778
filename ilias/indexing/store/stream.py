"""A collection's stored vectors, streamed once in blocks: what exact evaluation ranks.

``Store.stream_vectors`` returns a ``VectorStream``: blocks of ``(keys, rows)`` in the
order the engine holds them, where ``keys`` are int64 positions and ``names()`` (ready
once the blocks are read) gives the dataset id of each key. Rows are the stored
originals, float32 or float16 (``compact``), already normalised for cosine; a consumer
converts each block as it goes, so at most one block is ever held as float32.

Two ways to fill it: Qdrant Edge reads a built collection's own segment files
(``edge_segments``: memory-mapped, no per-value Python objects), and every engine can
page through its scroll API (``scroll_stream``: the engine's rows as Python lists, about
20 ns a value to convert, so 10-20x slower; used for filtered streams, collections still
loading, servers).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ilias.errors import StoreError
from ilias.indexing.store.engine import Condition, Engine


class StreamMismatch(StoreError):
    """A direct read turned out not to match the engine (found only once the ids were
    read); the caller reads the collection again through ``Store.stream_vectors(...,
    direct=False)``."""


Block = tuple[np.ndarray, np.ndarray]  # (int64 keys, rows)


@dataclass
class VectorStream:
    """Stored vectors of one collection: ``total`` points in ``blocks``; ``names()`` maps a
    key to its dataset id once the blocks have been read. ``direct``: read from the
    engine's files (True) or through its scroll API (False)."""

    total: int
    dim: int
    blocks: Iterator[Block]
    names: Callable[[], Sequence[str]]
    direct: bool


def scroll_stream(
    engine: Engine,
    target: str,
    vector: str,
    dim: int,
    conditions: Sequence[Condition],
    named_by: str | None,
    total: int,
    block: int,
    page: int = 4096,
) -> VectorStream:
    """Every matching point through the engine's scroll, ``block`` rows at a time."""
    names: list[str] = []

    def blocks() -> Iterator[Block]:
        offset: str | int | None = None
        pending: list[np.ndarray] = []
        held = start = 0
        wanted = [named_by] if named_by else []
        while True:
            points, offset = engine.scroll(target, offset, page, (vector,), wanted, conditions)
            if points:
                rows = np.fromiter(
                    itertools.chain.from_iterable(p.vectors[vector] for p in points),
                    dtype=np.float32,
                    count=len(points) * dim,
                ).reshape(len(points), dim)
                names.extend(
                    str(p.payload.get(named_by, p.id)) if named_by else p.id for p in points
                )
                pending.append(rows)
                held += len(points)
            if pending and (held >= block or offset is None):
                rows = np.concatenate(pending)
                yield np.arange(start, start + len(rows), dtype=np.int64), rows
                start += len(rows)
                pending, held = [], 0
            if offset is None:
                return

    return VectorStream(total, dim, blocks(), lambda: names, direct=False)
