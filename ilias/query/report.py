"""What the CLI, scripts and scripted runs show or write from search hits and evaluations.

Functions, not CLI code, so that the rows ``ilias search`` prints, the JSON of ``ilias
search --json`` and ``ilias eval --output``, the similarity files, per-query rows and plots
of ``ilias eval run`` come from one place and can be checked exactly in tests. They take
what the library returns (``Hit`` lists, ``BenchmarkRun``, ``Evaluation``) and add nothing
of their own. Writing Parquet needs pyarrow and plots need matplotlib; both are imported by
the functions that use them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ilias.eval import write_similarities
from ilias.eval.report import (
    PER_QUERY_FILE,
    PerQueryRow,
    per_query_ap,
    read_metrics,
    read_per_query,
)
from ilias.query.evaluation import BenchmarkRun, Evaluation
from ilias.types import Hit

SIMILARITY_FORMATS = {"json": ".json", "pickle": ".pkl"}
# Similarity file stems per kind; image queries keep the reference's own name.
SIMILARITY_STEMS = {
    "image": "similarities",
    "text": "similarities-text",
    "hybrid": "similarities-hybrid",
}
# Payload keys that get a column of their own in the hits table (``path`` is shown by ``id``).
_OWN_COLUMNS = frozenset({"id", "instance", "role", "path"})


# ----------------------------------------------------------------------------- hits


@dataclass(frozen=True)
class HitRow:
    """One row of the ``ilias search`` table: rank, score, id, instance, role, other payload."""

    rank: int
    score: float
    id: str
    instance: str
    role: str
    extra: dict[str, Any]

    def cells(self) -> tuple[str, str, str, str, str, str]:
        """The row as printed: score to 4 decimals, the other payload as compact JSON."""
        extra = json.dumps(self.extra) if self.extra else ""
        return (str(self.rank), f"{self.score:.4f}", self.id, self.instance, self.role, extra)


HIT_COLUMNS = ("rank", "score", "id", "instance", "role", "payload")


def hits_table_rows(hits: Sequence[Hit]) -> list[HitRow]:
    """Rows of the search table, ranked from 1 in the order the hits came."""
    return [
        HitRow(
            rank,
            hit.score,
            hit.id,
            str(hit.payload.get("instance", "")),
            str(hit.payload.get("role", "")),
            {k: v for k, v in hit.payload.items() if k not in _OWN_COLUMNS},
        )
        for rank, hit in enumerate(hits, start=1)
    ]


def hits_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """``[{rank, id, score, payload}, ...]``: what ``ilias search --json`` prints."""
    return [
        {"rank": rank, "id": hit.id, "score": hit.score, "payload": dict(hit.payload)}
        for rank, hit in enumerate(hits, start=1)
    ]


# ----------------------------------------------------------------------- evaluations


def run_summary_json(run: BenchmarkRun) -> dict[str, Any]:
    """What ``ilias eval --output`` writes: the totals (x100) and per-query AP and oracle."""
    scores = run.scores
    return {
        "kind": run.kind,
        "k": scores.k,
        "n_queries": scores.n_queries,
        "map": scores.map,
        "oracle": scores.oracle,
        **search_summary(run),
        "per_query_ap": dict(scores.per_query_ap),
        "per_query_oracle": dict(scores.per_query_oracle),
    }


def search_summary(run: BenchmarkRun) -> dict[str, Any]:
    """How the rankings were searched: ``exact`` (the reference's), or ``approximate`` with
    its recall@k against exact search and the number of queries that was measured on."""
    return {"search": run.search, "recall": run.recall, "recall_queries": run.recall_queries}


def evaluation_summary(evaluation: Evaluation) -> dict[str, dict[str, Any]]:
    """Per kind: ``{map, oracle, n_queries, breakdowns}``, or ``{skipped: reason}``."""
    out: dict[str, dict[str, Any]] = {}
    for kind, run in evaluation.runs.items():
        out[kind] = {
            "map": run.scores.map,
            "oracle": run.scores.oracle,
            "n_queries": run.scores.n_queries,
            **search_summary(run),
            "breakdowns": run.breakdowns.to_dict() if run.breakdowns else None,
        }
    for kind, reason in evaluation.skipped.items():
        out[kind] = {"skipped": reason}
    return out


def write_similarity_files(
    evaluation: Evaluation, folder: Path | str, formats: Sequence[str] = ("json",)
) -> list[str]:
    """The reference's similarity files, one per kind and format; returns their names."""
    folder = Path(folder)
    names = []
    for kind, run in evaluation.runs.items():
        for fmt in formats:
            name = SIMILARITY_STEMS[kind] + SIMILARITY_FORMATS[fmt]
            write_similarities(folder / name, run.pairs(), k=evaluation.k)
            names.append(name)
    return names


def per_query_rows(evaluation: Evaluation) -> list[PerQueryRow]:
    """One row per query and kind: AP and oracle (0-1) and the instance's positive count."""
    rows = []
    for kind, run in evaluation.runs.items():
        for query_id, ap in run.scores.per_query_ap.items():
            instance = query_id.split("/", 1)[0]
            positives = evaluation.benchmark.ground_truth.get(instance, frozenset())
            rows.append(
                PerQueryRow(
                    query_id,
                    instance,
                    kind,
                    ap,
                    run.scores.per_query_oracle[query_id],
                    len(positives),
                )
            )
    return rows


def plot_evaluation(
    evaluation: Evaluation,
    folder: Path | str,
    name: str,
    compare_with: Path | str | None = None,
) -> list[str]:
    """The PNGs of a run: per-query AP, scale/clutter groups and categories per kind, and
    per-query AP against another results folder; returns their names."""
    from ilias.eval import plots

    folder, k = Path(folder), evaluation.k
    written = []
    image_ap: Mapping[str, float] = {}
    if "image" in evaluation.runs:
        image_ap = evaluation.runs["image"].scores.per_query_ap
        written.append(
            plots.plot_per_query_ap(
                image_ap, folder / "per_query_ap.png", title=f"{name}: AP@{k} per image query"
            )
        )
    for kind, run in evaluation.runs.items():
        breakdown = run.breakdowns
        if breakdown is None:
            continue
        suffix = "" if kind == "image" else f"-{kind}"
        if breakdown.scale or breakdown.clutter:
            written.append(
                plots.plot_groups(
                    breakdown.scale,
                    breakdown.clutter,
                    folder / f"groups{suffix}.png",
                    counts=breakdown.n_queries,
                    title=f"{name}: mAP@{k} per group of positives ({kind} queries)",
                )
            )
        if breakdown.categories:
            written.append(
                plots.plot_categories(
                    breakdown.categories,
                    folder / f"categories{suffix}.png",
                    subcategories=breakdown.subcategories,
                    title=f"{name}: mAP@{k} per category ({kind} queries)",
                )
            )
    if compare_with is not None and image_ap:
        compare_with = Path(compare_with)
        other = read_per_query(compare_with / PER_QUERY_FILE)
        other_name = read_metrics(compare_with).get("name", compare_with.name)
        written.append(
            plots.plot_ap_scatter(
                per_query_ap(other, "image"),
                image_ap,
                folder / "compare_ap.png",
                label_a=str(other_name),
                label_b=name,
            )
        )
    return [p.name for p in written]


__all__ = [
    "HIT_COLUMNS",
    "SIMILARITY_FORMATS",
    "HitRow",
    "evaluation_summary",
    "hits_json",
    "hits_table_rows",
    "per_query_rows",
    "plot_evaluation",
    "run_summary_json",
    "write_similarity_files",
]
