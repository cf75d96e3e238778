"""Progress of the long commands (load, eval, demo, mine, ...), visible in any output.

On a terminal, rich bars. When the output is not a terminal (a log file, CI, a pipe,
``nohup``), rich would print the bars once, at the end; :class:`LineProgress` prints one
line every few seconds instead (``ILIAS_PROGRESS_SECONDS``, default 5), with each task's
counts and rate, and a last line when the command ends. Both show one rate per task: the
items done since the task's first count over the time since then (a mean, as the
commands' summaries report, e.g. ``images/s`` after a load), not rich's moving estimate.

Imported by the commands when they run, not by ``ilias --help``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ilias.config import positive_int_env

INTERVAL_ENV = "ILIAS_PROGRESS_SECONDS"


@dataclass
class _Count:
    """A task's counts, and the first count and time it was seen at (the rate's origin)."""

    description: str
    total: float | None = None
    completed: float = 0.0
    first: float | None = None
    since: float = 0.0
    last: float = 0.0  # when the count last changed (a finished task's rate stops there)
    printed: float | None = None  # the count the last line showed

    def see(self, completed: float, now: float) -> None:
        if self.first is None:
            self.first, self.since = completed, now
        if completed != self.completed:
            self.last = now
        self.completed = completed

    def rate(self) -> float | None:
        if self.first is None or self.last <= self.since:
            return None
        return (self.completed - self.first) / (self.last - self.since)


def _format_rate(rate: float | None) -> str:
    return f"{rate:6.1f}/s" if rate else "     -/s"


class MeanRateColumn(ProgressColumn):
    """Items per second since the task's first count (the rate a summary reports)."""

    def __init__(self, counts: dict[TaskID, _Count]) -> None:
        super().__init__()
        self._counts = counts

    def render(self, task: Task) -> Text:
        count = self._counts.get(task.id)
        return Text(_format_rate(count.rate() if count else None), style="progress.data.speed")


class _Bars(Progress):
    """rich's bars, keeping each task's counts for :class:`MeanRateColumn`: the rate's
    origin is the first count a command reports (a resumed load starts at the images
    already stored), not the moment the bar was drawn."""

    def __init__(self, console: Console) -> None:
        self.counts: dict[TaskID, _Count] = {}
        super().__init__(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            MeanRateColumn(self.counts),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )

    def update(self, task_id: TaskID, *, completed: float | None = None, **kwargs: Any) -> None:
        if completed is not None:
            count = self.counts.setdefault(task_id, _Count(""))
            count.see(completed, self.get_time())
        super().update(task_id, completed=completed, **kwargs)


@dataclass
class LineProgress:
    """The subset of ``rich.progress.Progress`` the commands use (``add_task``, ``update``,
    ``console``), printed as a line every ``interval`` seconds and once at the end."""

    console: Console
    interval: float
    clock: Callable[[], float] = time.monotonic
    _counts: dict[TaskID, _Count] = field(default_factory=dict)
    _started: float = 0.0
    _printed: float = 0.0
    _lock: threading.RLock = field(default_factory=threading.RLock)  # updates vs heartbeat

    def __post_init__(self) -> None:
        self._started = self._printed = self.clock()

    def add_task(self, description: str, total: float | None = None, **_: object) -> TaskID:
        with self._lock:
            task = TaskID(len(self._counts))
            self._counts[task] = _Count(description, total)
        return task

    def update(
        self,
        task: TaskID,
        *,
        completed: float | None = None,
        total: float | None = None,
        **_: object,
    ) -> None:
        with self._lock:
            count, now = self._counts[task], self.clock()
            if total is not None:
                count.total = total
            if completed is not None:
                count.see(completed, now)
        self.tick()

    def print_line(self, *, final: bool = False) -> None:
        """One line: the count, total and rate of each task still running or counted since
        the last line (``final``: of every task), then the time since the start."""
        with self._lock:
            self._printed = now = self.clock()
            parts = []
            for count in self._counts.values():
                done = count.total is not None and count.completed >= count.total
                if count.first is None or (done and count.printed == count.completed and not final):
                    continue  # nothing counted yet, or a finished stage already shown
                count.printed = count.completed
                of = f"/{_count(count.total)}" if count.total is not None else ""
                rate = _format_rate(count.rate()).strip()
                parts.append(f"{count.description} {_count(count.completed)}{of} ({rate})")
            if parts or not final:
                shown = ", ".join(parts) or "working"
                self.console.print(
                    f"{shown}; {now - self._started:.0f} s", highlight=False, soft_wrap=True
                )

    def tick(self) -> None:
        """A line if the last is ``interval`` old: a stage that reports seldom (a model
        loading, a partition being encoded) still shows the command is alive."""
        if self.clock() - self._printed >= self.interval:
            self.print_line()


def _interval() -> float:
    return float(positive_int_env(INTERVAL_ENV, 5, "a number of seconds, e.g. 5"))


@contextmanager
def progress_display(console: Console) -> Iterator[Progress | LineProgress]:
    """Bars on a terminal, else a line every few seconds (and one at the end)."""
    if console.is_terminal:
        with _Bars(console) as bars:
            yield bars
        return
    lines = LineProgress(console, _interval())
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(lines.interval / 5):
            lines.tick()

    beat = threading.Thread(target=heartbeat, name="ilias-progress", daemon=True)
    beat.start()
    try:
        yield lines
    finally:
        stop.set()
        beat.join()
        lines.print_line(final=True)


def staged(bar: Progress | LineProgress) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` callback that gives each stage its own task."""
    tasks: dict[str, TaskID] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return progress


def _count(value: float) -> str:
    """A count as people read it: 1,000,000 (not 1e+06), a fraction only if it has one."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
