"""Local Dask worker processes end as soon as their worker has closed, skipping teardown.

A worker process that imported torch and timm takes 1.5-2 s of interpreter teardown to
exit once its worker has closed (measured here: ``import timm, torch`` alone, 1.5 s from
the last ``atexit`` handler to the process's end; the module dicts and objects freed one by
one). The nanny that closes it waits 4 s (``Nanny.close``'s 5 s timeout x 0.8; the
LocalCluster gives no way to raise it) and then kills it, with a "Worker process still
alive after 4.0 seconds, killing" warning: a normal load's end on a busy machine.

So the processes of a LocalCluster we start get :class:`ExitWithoutTeardown`: when its
worker closes normally, it registers an ``atexit`` handler that flushes the logs and output
and ends the process with ``os._exit(0)``, in place of the rest of the interpreter's exit
(the ``atexit`` handlers registered before it, the module teardown). Nothing is lost: the
worker has closed (its tasks, comms and the nanny's queues are finished and joined before
the interpreter exits), the process has no children of its own, and what is left is its
own memory. Workers of a cluster someone else runs (``--scheduler tcp://...``) are never
given it. Measured on a 300-image ``ilias load --local`` (two workers, a busy 2-core
machine): closing the cluster took 2.0-4.4 s before, 0.35 s with it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys

from distributed.diagnostics.plugin import WorkerPlugin


class ExitWithoutTeardown(WorkerPlugin):
    """On a normal worker close, end the process at its first ``atexit`` handler."""

    name = "ilias-exit-without-teardown"

    def teardown(self, worker) -> None:
        # Registered last, so it runs first among atexit handlers (LIFO): after the worker
        # loop has ended and the nanny's queues are joined, before the module teardown.
        atexit.register(_exit_now)


def _exit_now() -> None:
    logging.shutdown()  # flush the log handlers
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # closed or None
            stream.flush()
    os._exit(0)
