"""Dask workers that die: once (the partition is retried and the load is exact) and again
and again (one clear error, and what was stored is kept). Real worker processes are killed
for real: a record whose unpickling calls ``os._exit`` in the process that receives it."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from ilias.config import DEFAULT_ENCODER
from ilias.errors import ExtractionError
from ilias.indexing import EdgeStore, ExtractionOptions, load_collection
from ilias.loader import Record, read_images

pytestmark = [pytest.mark.slow, pytest.mark.faults]

POISON = textwrap.dedent(
    '''
    import os
    from pathlib import Path


    def revive(path, marker, times):
        """Runs where a task is unpickled: kill that worker ``times`` times, then hand the
        record its real path. In the driver (whose pid is in the environment; the scheduler
        unpickles the graph there) it stays poisoned, for the worker."""
        if os.environ.get("ILIAS_TEST_DRIVER_PID") == str(os.getpid()):
            return Poison(path, marker, times)
        deaths = Path(marker)
        died = len(deaths.read_text()) if deaths.exists() else 0
        if died < times:
            deaths.write_text("x" * (died + 1))
            os._exit(1)
        return path


    class Poison:
        def __init__(self, path, marker, times):
            self.args = (path, marker, times)

        def __reduce__(self):
            return (revive, self.args)
    '''
)


@pytest.fixture
def poison(tmp_path, monkeypatch):
    (tmp_path / "ilias_test_poison.py").write_text(POISON)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers inherit sys.path
    monkeypatch.setenv("ILIAS_TEST_DRIVER_PID", str(os.getpid()))
    import ilias_test_poison

    yield ilias_test_poison
    sys.modules.pop("ilias_test_poison", None)


def options() -> ExtractionOptions:
    return ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=224, batch_size=4, partition_size=4,
        scheduler="local", n_workers=1,
    )  # fmt: skip


def records_with_one_poisoned(tiny_ilias, poison, tmp_path, times) -> list[Record]:
    records = read_images(tiny_ilias / "distractors")
    readable = [r for r in records if r.id.endswith(("astronaut.jpg", "camera.jpg", "moon.jpg"))]
    first = readable[0]
    marker = tmp_path / "deaths"
    bad = Record(first.id, poison.Poison(str(first.source), str(marker), times), first.payload)
    return [bad, *readable[1:]]


def test_a_worker_that_dies_once_costs_nothing(tiny_ilias, poison, tmp_path):
    records = records_with_one_poisoned(tiny_ilias, poison, tmp_path, times=1)
    with EdgeStore(tmp_path / "q") as store:
        report = load_collection(records, store, "c", options())
        assert (report.loaded, len(report.failures)) == (3, 0)
        assert store.count("c") == 3
    assert (tmp_path / "deaths").read_text() == "x"  # it really died, once


def test_a_partition_that_keeps_killing_workers_is_one_clear_error(tiny_ilias, poison, tmp_path):
    records = records_with_one_poisoned(tiny_ilias, poison, tmp_path, times=100)
    with EdgeStore(tmp_path / "q") as store, pytest.raises(ExtractionError) as raised:
        load_collection(records, store, "c", options())
    assert str(raised.value) == (
        "a partition killed 4 Dask workers in a row (out of memory, or a decoder that crashes "
        "the process?); what was stored is kept, so run the load again to resume, with fewer "
        "--workers or a smaller --batch-size"
    )
    assert len((tmp_path / "deaths").read_text()) == 4
