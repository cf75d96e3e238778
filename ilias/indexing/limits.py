"""Bounds on the options that size an extraction, checked before any work, one line each.

Each of these options multiplies memory. Every local worker is a process with its own
encoder and its own decoded images (``--workers``); a forward pass holds ``--batch-size``
images of up to ``--resolution`` x ``--resolution`` pixels each, and the activations grow
with those pixels. A typo (``--workers 1000000``, ``--resolution 20000``) used to start that
work and run the machine out of memory, or hang, before saying anything; a nonsense value
(``--resolution -1``) failed far from its cause. So they are refused up front:

- ``--workers``: 1 to ``WORKERS_PER_CPU`` x this machine's CPUs for the local scheduler
  (the processes start here); at least 1 elsewhere (a remote cluster sizes itself).
- ``--batch-size``: 1 to ``MAX_BATCH_SIZE``.
- ``--resolution``: ``MIN_RESOLUTION`` to ``MAX_RESOLUTION`` pixels on the larger side (the
  ILIAS rule picks 384 to 768; 4096 already costs 28 times the pixels of 768).

This module is a leaf (the standard library only) so that the CLI checks options without
importing torch or dask.
"""

from __future__ import annotations

import os

from ilias.errors import IliasError

WORKERS_PER_CPU = 4
MAX_BATCH_SIZE = 4096
MIN_RESOLUTION = 32
MAX_RESOLUTION = 4096


def cpu_count() -> int:
    """CPUs this process may use (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_local_workers() -> int:
    return WORKERS_PER_CPU * cpu_count()


def check_workers(workers: int | None, scheduler: str = "local", option: str = "--workers") -> None:
    """``workers`` local processes fit this machine (None: the default)."""
    if workers is None:
        return
    if workers < 1:
        raise IliasError(f"{option} {workers}: give 1 or more worker processes")
    limit = max_local_workers()
    if scheduler == "local" and workers > limit:
        raise IliasError(
            f"{option} {workers}: this machine has {cpu_count()} CPUs; use at most {limit} "
            f"local worker processes ({WORKERS_PER_CPU} per CPU), or a cluster "
            "(--scheduler tcp://host:8786)"
        )


def check_batch_size(batch_size: int, option: str = "--batch-size") -> None:
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise IliasError(f"{option} {batch_size}: give 1 to {MAX_BATCH_SIZE} images per batch")


def check_resolution(resolution: int | None, option: str = "--resolution") -> None:
    """A larger-side size in the supported range (None: the ILIAS resolution rule)."""
    if resolution is not None and not MIN_RESOLUTION <= resolution <= MAX_RESOLUTION:
        raise IliasError(
            f"{option} {resolution}: give {MIN_RESOLUTION} to {MAX_RESOLUTION} pixels (the "
            "larger image side), or leave it out for the ILIAS rule (384 / 512 / 724)"
        )
