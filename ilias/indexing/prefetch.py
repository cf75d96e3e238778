"""One item ahead: the next item of an iterator is made in a thread while the caller works
on the current one.

Why: the heavy steps on both sides release the GIL for much of their time (HDF5
decompression, numpy and BLAS, parts of the engine's writes), so a reader and a writer, or
a producer of matrix products and their consumer, overlap on two cores without a queue,
with at most one item waiting and the order kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

T = TypeVar("T")
_END = object()


def prefetched(items: Iterable[T], name: str = "prefetch") -> Iterator[T]:
    """``items`` in order, each next one made (``next()``) in a thread named ``name`` while
    the caller uses the one before; an exception of ``items`` is raised where its item
    would have come."""
    iterator = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
        pending = pool.submit(next, iterator, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, iterator, _END)
            yield cast(T, item)
