"""PNG plots of a run: category bars, scale/clutter groups, per-query AP, and two runs compared.

Matplotlib's object API on the Agg canvas (``Figure``, never ``pyplot``): no global state,
no display needed, safe in worker threads and in tests. Imported only by the code that
draws, so ``ilias.eval`` itself stays numpy-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 120
_BAR = "#3b6ea8"
_BAR_B = "#d9822b"


def _save(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=_DPI, bbox_inches="tight")
    return path


def _group_label(key: str) -> str:
    """``"0.0688...-0.1352..."`` -> ``"[0.069, 0.135)"``: readable tick labels."""
    low, _, high = key.partition("-")
    return f"[{_short(low)}, {_short(high)})"


def _short(number: str) -> str:
    try:
        value = float(number)
    except ValueError:
        return number
    return "inf" if np.isinf(value) else f"{value:.3g}"


def plot_categories(
    categories: Mapping[str, float],
    path: Path | str,
    *,
    subcategories: Mapping[str, float] | None = None,
    title: str = "mAP@1k per category",
) -> Path:
    """Horizontal bars, best first: categories, and subcategories beside them if given."""
    panels = [("category", categories)] + (
        [("subcategory", subcategories)] if subcategories else []
    )
    height = max(2.5, 0.32 * max(len(values) for _, values in panels) + 1.2)
    figure = Figure(figsize=(6.0 * len(panels), height), layout="constrained")
    for index, (name, values) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        ordered = sorted(values.items(), key=lambda item: item[1])
        labels = [label for label, _ in ordered]
        axes.barh(labels, [v for _, v in ordered], color=_BAR)
        for y, (_, value) in enumerate(ordered):
            axes.text(value + 0.5, y, f"{value:.1f}", va="center", fontsize=8)
        axes.set_xlim(0, 105)
        axes.set_xlabel("mAP (%)")
        axes.set_title(f"per {name}")
        axes.tick_params(axis="y", labelsize=8)
    figure.suptitle(title)
    return _save(figure, path)


def plot_groups(
    scale: Mapping[str, float],
    clutter: Mapping[str, float],
    path: Path | str,
    *,
    title: str = "mAP@1k per group of positives",
    counts: Mapping[str, int] | None = None,
    other: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
    labels: tuple[str, str] = ("run", "other"),
) -> Path:
    """mAP per scale group and per clutter group (two panels), each bar labelled with its
    value; ``counts`` (``Breakdowns.n_queries``) adds the queries behind each bar to the
    tick labels; ``other`` draws a second run beside the first."""
    figure = Figure(figsize=(10.0, 3.8), layout="constrained")
    panels = (
        ("scale", "scale (box area / image area)", scale),
        ("clutter", "clutter (objects in the image)", clutter),
    )
    for index, (kind, name, values) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, index)
        keys = list(values)
        x = np.arange(len(keys))
        width = 0.4 if other else 0.7
        series = [(values, _BAR, labels[0], -width / 2 if other else 0.0)]
        if other:
            series.append((other[index - 1], _BAR_B, labels[1], width / 2))
        for data, colour, label, shift in series:
            heights = [data.get(k, np.nan) for k in keys]
            bars = axes.bar(x + shift, heights, width, color=colour, label=label)
            axes.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        if other:
            axes.legend(fontsize=8)
        ticks = [_group_label(k) for k in keys]
        if counts:
            ticks = [
                f"{t}\n{counts.get(f'{kind}:{k}', 0)} queries"
                for t, k in zip(ticks, keys, strict=True)
            ]
        axes.set_xticks(x, ticks, fontsize=8)
        axes.set_ylim(0, 105)
        axes.set_ylabel("mAP (%)")
        axes.set_title(name, fontsize=10)
        if not keys:
            axes.text(
                0.5, 0.5, "no positive with this information", ha="center", transform=axes.transAxes
            )
    figure.suptitle(title)
    return _save(figure, path)


def plot_per_query_ap(
    per_query_ap: Mapping[str, float], path: Path | str, *, title: str = "AP@1k per query"
) -> Path:
    """Per-query AP (x100) sorted from best to worst, with the mAP as a line."""
    values = np.sort(100.0 * np.fromiter(per_query_ap.values(), dtype=np.float64))[::-1]
    figure = Figure(figsize=(7.0, 3.4), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    axes.bar(np.arange(len(values)), values, width=1.0 if len(values) > 60 else 0.8, color=_BAR)
    if len(values):
        axes.axhline(
            values.mean(),
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"mAP {values.mean():.2f}",
        )
        axes.legend(fontsize=8)
    axes.set_ylim(0, 100)
    axes.set_xlabel("queries, best first")
    axes.set_ylabel("AP (%)")
    axes.set_title(title)
    return _save(figure, path)


def plot_ap_scatter(
    ap_a: Mapping[str, float],
    ap_b: Mapping[str, float],
    path: Path | str,
    *,
    label_a: str = "run A",
    label_b: str = "run B",
    title: str = "AP@1k per query",
) -> Path:
    """Per-query AP of two runs against each other (the ILIAS paper's Fig. 6).

    Points above the diagonal are queries where run B does better. Only queries present in
    both runs are drawn; the counts of wins either side are in the legend.
    """
    common = [q for q in ap_a if q in ap_b]
    a = 100.0 * np.array([ap_a[q] for q in common], dtype=np.float64)
    b = 100.0 * np.array([ap_b[q] for q in common], dtype=np.float64)
    figure = Figure(figsize=(4.8, 4.8), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    better_b, better_a = int((b > a).sum()), int((a > b).sum())
    axes.plot([0, 100], [0, 100], color="grey", linewidth=1)
    axes.scatter(
        a,
        b,
        s=12,
        alpha=0.6,
        color=_BAR,
        edgecolors="none",
        label=f"{len(common)} queries: B better {better_b}, A better {better_a}",
    )
    axes.set_xlim(-2, 102)
    axes.set_ylim(-2, 102)
    axes.set_aspect("equal")
    axes.set_xlabel(f"AP (%) {label_a}")
    axes.set_ylabel(f"AP (%) {label_b}")
    axes.set_title(title)
    axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_named_scores(
    series: Mapping[str, Mapping[str, float]],
    path: Path | str,
    *,
    title: str,
    ylabel: str = "score (%)",
) -> Path:
    """Bars of named scores (GPR1200 mAP per subset; UnED R@1 and mMP@5 per domain), one
    colour per metric in ``series`` (metric -> {name: value}), each bar labelled."""
    names = list(dict.fromkeys(n for values in series.values() for n in values))
    figure = Figure(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.8), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.8 / max(len(series), 1)
    colours = (_BAR, _BAR_B, "#5a9e5a", "#8e6bb8")
    for index, (metric, values) in enumerate(series.items()):
        shift = (index - (len(series) - 1) / 2) * width
        heights = [values.get(n, np.nan) for n in names]
        bars = axes.bar(x + shift, heights, width, color=colours[index % 4], label=metric)
        axes.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    axes.set_xticks(x, names, fontsize=8)
    axes.set_ylim(0, 105)
    axes.set_ylabel(ylabel)
    if len(series) > 1:
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, path)
