"""Progress of long commands in any output: bars on a terminal, timed lines elsewhere."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from ilias.cli_progress import LineProgress, progress_display, staged
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.loader import read_images


class Clock:
    """A clock the test advances (the lines are timed by it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_interval_with_counts_and_the_mean_rate() -> None:
    out, clock = io.StringIO(), Clock()
    lines = LineProgress(Console(file=out, width=200), interval=5.0, clock=clock)
    images = lines.add_task("images", total=None)
    parts = lines.add_task("partitions", total=3)
    lines.update(images, completed=40)  # a resumed load: 40 already stored
    lines.update(parts, completed=0, total=3)
    clock.now += 2.0
    lines.update(images, completed=60)
    assert out.getvalue() == ""  # under the interval: nothing yet
    clock.now += 3.0
    lines.update(images, completed=90)  # 50 extracted in 5 s
    lines.update(parts, completed=1)
    assert out.getvalue().splitlines() == ["images 90 (10.0/s), partitions 0/3 (-/s); 5 s"]
    clock.now += 5.0
    lines.update(images, completed=140)
    lines.update(parts, completed=3)
    clock.now += 60.0  # after the last count (an index build): the rate stays
    lines.print_line()
    assert out.getvalue().splitlines()[-1] == "images 140 (10.0/s), partitions 3/3 (0.3/s); 70 s"


def test_output_that_is_no_terminal_gets_lines_and_a_last_one() -> None:
    out = io.StringIO()
    with progress_display(Console(file=out, width=200)) as bar:
        assert isinstance(bar, LineProgress)
        progress = staged(bar)
        for done in range(5):
            progress("queries", done, 4)
    assert out.getvalue().startswith("queries 4/4 (")
    assert len(out.getvalue().splitlines()) == 1


def test_a_terminal_gets_bars_with_the_same_mean_rate() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True)
    with progress_display(console) as bar:
        assert not isinstance(bar, LineProgress)
        task = bar.add_task("images", total=10)
        bar.update(task, completed=0)
        bar.update(task, completed=10)
    assert "10/10" in out.getvalue()
    assert "/s" in out.getvalue()


def test_a_stage_that_reports_seldom_still_prints_lines(monkeypatch) -> None:
    """A model loading or a long partition: the heartbeat prints the counts so far."""
    monkeypatch.setenv("ILIAS_PROGRESS_SECONDS", "1")
    out = io.StringIO()
    with progress_display(Console(file=out, width=200)) as bar:
        task = bar.add_task("images", total=100)
        bar.update(task, completed=10)
        time.sleep(1.5)  # no update meanwhile
        assert out.getvalue().startswith("images 10/100 (-/s); 1 s")
        bar.update(task, completed=100)
    assert out.getvalue().splitlines()[-1].startswith("images 100/100 (")


@pytest.mark.slow  # a real load: one local Dask worker process, the real model
def test_a_load_reports_the_rate_its_bar_shows_and_start_up_apart(tiny_ilias, tmp_path) -> None:
    """One clock for the bar and the summary's images/s: from the moment the started
    workers get the first partition to the last partition counted (cluster start-up and
    close outside it, start-up reported as its own number)."""
    lines = LineProgress(Console(file=io.StringIO(), width=200), 3600.0, clock=time.perf_counter)
    images = lines.add_task("images", total=None)
    options = ExtractionOptions(DEFAULT_ENCODER, resolution=224, partition_size=3, n_workers=1)
    with EdgeStore(tmp_path) as store:

        def progress(done: int, total: int | None) -> None:
            lines.update(images, completed=done, total=total)

        report = load_collection(read_images(tiny_ilias / "distractors"), store, "t", options,
                                 progress=progress)  # fmt: skip
    count = lines._counts[images]
    assert report.loaded == 8 and len(report.failures) == 2  # 10 files, 2 broken
    assert count.first == 0 and count.completed == 10  # counted from the workers' start
    # the same interval, to the callback's microseconds: no start-up, no cluster close
    assert abs((count.last - count.since) - report.extract_seconds) < 0.05
    assert count.rate() == pytest.approx(report.images_per_s, rel=0.01)
    assert report.startup_seconds > 0.2  # a LocalCluster's processes take a while to start


def test_large_counts_read_as_numbers_not_exponents() -> None:
    out, clock = io.StringIO(), Clock()
    lines = LineProgress(Console(file=out, width=200), interval=5.0, clock=clock)
    rows = lines.add_task("features", total=1_000_000)
    lines.update(rows, completed=0)
    clock.now += 5.0
    lines.update(rows, completed=496_520)
    assert out.getvalue().splitlines() == ["features 496,520/1,000,000 (99304.0/s); 5 s"]
