"""Where a model wins and loses: mAP per taxonomy category, per object scale, per clutter.

Exactly as the ILIAS reference's report (``evaluation/src/dataset.py``, ``report=True``):

- **Categories**: each query's AP@k (from the full ranking) is averaged per instance
  first, then over the instances of a category (or of a ``category-subcategory`` pair), so
  an instance with many queries weighs no more than one with a single query.
- **Scale and clutter groups** of positives (scale = box area / image area, clutter =
  number of other objects): for each query and group, the instance's positives *outside*
  the group are removed from both the ranking and the ground truth, and AP@k is computed
  on what is left (normalised by ``min(k, positives left)``); a query whose instance has no
  positive in the group is skipped for that group. A group's mAP is the mean over the
  queries that were not skipped. Positives with no scale/clutter value fall outside every
  group (the reference requires a value for each).

Group keys are spelled as the reference spells them (``"0-0.06880213760855043"``,
``"53-inf"``) so reports can be compared key by key. Numpy only.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ilias.errors import DatasetError
from ilias.eval.metrics import average_precision_batch, evaluate_rankings

Ranking = Sequence[tuple[str, float]]

INF = math.inf
#: The reference's group boundaries: quartiles of the ILIAS positives' scale and clutter.
SCALE_GROUPS: tuple[tuple[float, float], ...] = (
    (0, 0.06880213760855043),
    (0.06880213760855043, 0.13526567164179104),
    (0.13526567164179104, 0.2729876723163842),
    (0.2729876723163842, INF),
)
CLUTTER_GROUPS: tuple[tuple[float, float], ...] = ((0, 18), (18, 33), (33, 53), (53, INF))


def group_key(low: float, high: float) -> str:
    """``"low-high"`` as the reference formats its keys (``f"{t1}-{t2}"``)."""
    return f"{low}-{high}"


@dataclass(frozen=True)
class Breakdowns:
    """mAP x100 per category, subcategory, scale group and clutter group.

    ``n_queries`` counts, per ``"scale:<key>"`` / ``"clutter:<key>"`` / ``"category:<name>"``,
    the queries behind each number; ``uncategorised`` lists instances the taxonomy lacks.
    """

    categories: dict[str, float] = field(default_factory=dict)
    subcategories: dict[str, float] = field(default_factory=dict)
    scale: dict[str, float] = field(default_factory=dict)
    clutter: dict[str, float] = field(default_factory=dict)
    n_queries: dict[str, int] = field(default_factory=dict)
    uncategorised: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["uncategorised"] = list(self.uncategorised)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> Breakdowns:
        return cls(
            categories=dict(data.get("categories", {})),
            subcategories=dict(data.get("subcategories", {})),
            scale=dict(data.get("scale", {})),
            clutter=dict(data.get("clutter", {})),
            n_queries=dict(data.get("n_queries", {})),
            uncategorised=tuple(data.get("uncategorised", ())),
        )


# ---------------------------------------------------------------------------- taxonomy


def parse_taxonomy(data: object, source: str = "taxonomy") -> dict[str, tuple[str, str]]:
    """``{category: {subcategory: {subsubcategory: [instances]}}}`` -> instance -> (c, sc).

    The shape of the reference's ``misc/taxonomy.json``; only two levels are reported, as
    the reference reports them.
    """
    taxonomy: dict[str, tuple[str, str]] = {}
    shape = "{category: {subcategory: {subsubcategory: [instance, ...]}}}"
    if not isinstance(data, Mapping):
        raise DatasetError(f"{source}: expected {shape}")
    for category, subcategories in data.items():
        if not isinstance(subcategories, Mapping):
            raise DatasetError(f"{source}: {category!r} must map subcategories; expected {shape}")
        for subcategory, leaves in subcategories.items():
            if not isinstance(leaves, Mapping):
                raise DatasetError(
                    f"{source}: {category}/{subcategory} must map sub-subcategories to "
                    f"instance lists; expected {shape}"
                )
            for leaf, instances in leaves.items():
                if not isinstance(instances, list) or not all(
                    isinstance(i, str) for i in instances
                ):
                    raise DatasetError(
                        f"{source}: {category}/{subcategory}/{leaf} must be a list of instance "
                        "names"
                    )
                for instance in instances:
                    if instance in taxonomy:
                        raise DatasetError(
                            f"{source}: instance {instance!r} appears twice; each instance "
                            "belongs to one category"
                        )
                    taxonomy[instance] = (str(category), str(subcategory))
    return taxonomy


def read_taxonomy(path: Path | str) -> dict[str, tuple[str, str]]:
    """Read a taxonomy JSON file (the reference's ``misc/taxonomy.json`` shape)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"taxonomy file {path} does not exist; fix [dataset] taxonomy")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON: {error}") from error
    return parse_taxonomy(data, str(path))


def category_breakdown(
    per_query_ap: Mapping[str, float],
    query_instance: Mapping[str, str],
    taxonomy: Mapping[str, tuple[str, str]],
) -> tuple[dict[str, float], dict[str, float], dict[str, int], tuple[str, ...]]:
    """Category and ``category-subcategory`` mAP x100: per instance first, then over instances.

    Returns (categories, subcategories, queries per category, uncategorised instances).
    """
    per_instance: dict[str, list[float]] = defaultdict(list)
    for query_id, ap in per_query_ap.items():
        per_instance[query_instance[query_id]].append(100.0 * ap)
    by_category: dict[str, list[float]] = defaultdict(list)
    by_subcategory: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    uncategorised = []
    for instance, aps in per_instance.items():
        if instance not in taxonomy:
            uncategorised.append(instance)
            continue
        category, subcategory = taxonomy[instance]
        mean = float(np.mean(aps))
        by_category[category].append(mean)
        by_subcategory[f"{category}-{subcategory}"].append(mean)
        counts[f"category:{category}"] += len(aps)
    categories = {c: float(np.mean(v)) for c, v in sorted(by_category.items())}
    subcategories = {s: float(np.mean(v)) for s, v in sorted(by_subcategory.items())}
    return categories, subcategories, dict(counts), tuple(sorted(uncategorised))


# ------------------------------------------------------------------ scale and clutter


@dataclass(frozen=True)
class _RankingArrays:
    """Rankings as padded arrays: scores, positive-of-its-instance flags, the value per entry."""

    queries: list[str]
    scores: np.ndarray  # [n_q, m], -inf padding
    positive: np.ndarray  # [n_q, m] bool


def _arrays(
    rankings: Mapping[str, Ranking],
    queries: Sequence[str],
    ground_truth: Mapping[str, frozenset[str] | set[str]],
    query_instance: Mapping[str, str],
) -> tuple[_RankingArrays, list[list[str]]]:
    width = max((len(rankings.get(q, ())) for q in queries), default=0)
    scores = np.full((len(queries), width), -np.inf)
    positive = np.zeros((len(queries), width), dtype=bool)
    ids_per_row: list[list[str]] = []
    for row, query_id in enumerate(queries):
        ranking = rankings.get(query_id, ())
        truth = ground_truth.get(query_instance[query_id], frozenset())
        ids = [db_id for db_id, _ in ranking]
        scores[row, : len(ids)] = [score for _, score in ranking]
        positive[row, : len(ids)] = [db_id in truth for db_id in ids]
        ids_per_row.append(ids)
    if not (scores[:, 1:] <= scores[:, :-1]).all():  # rank each row once, stably, by score
        order = np.argsort(-scores, axis=1, kind="stable")
        scores = np.take_along_axis(scores, order, axis=1)
        positive = np.take_along_axis(positive, order, axis=1)
        ids_per_row = [
            [ids[i] for i in row[: len(ids)]]
            for ids, row in zip(ids_per_row, order.tolist(), strict=True)
        ]
    return _RankingArrays(list(queries), scores, positive), ids_per_row


def group_breakdown(
    rankings: Mapping[str, Ranking],
    ground_truth: Mapping[str, frozenset[str] | set[str]],
    query_instance: Mapping[str, str],
    values: Mapping[str, float | None],
    groups: Sequence[tuple[float, float]],
    k: int = 1000,
) -> tuple[dict[str, float], dict[str, int]]:
    """mAP x100 per group ``[low, high)`` of a per-positive value (scale or clutter).

    ``values`` maps positive ids to the value (None or absent: outside every group). Returns
    (mAP per group key, queries behind each). Groups no query reaches are left out, as the
    reference leaves them out of its dict.
    """
    prepared = _arrays(rankings, list(query_instance), ground_truth, query_instance)
    return _group_maps(prepared, ground_truth, query_instance, values, groups, k)


def _group_maps(
    prepared: tuple[_RankingArrays, list[list[str]]],
    ground_truth: Mapping[str, frozenset[str] | set[str]],
    query_instance: Mapping[str, str],
    values: Mapping[str, float | None],
    groups: Sequence[tuple[float, float]],
    k: int,
) -> tuple[dict[str, float], dict[str, int]]:
    arrays, ids_per_row = prepared
    entry_value = np.full(arrays.scores.shape, np.nan)
    rows, columns = np.nonzero(arrays.positive)
    entry_value[rows, columns] = [
        _or_nan(values.get(ids_per_row[r][c]))
        for r, c in zip(rows.tolist(), columns.tolist(), strict=True)
    ]
    # The group's positives per query come from the ground truth, retrieved or not.
    truth_values = np.full(
        (len(arrays.queries), max(map(len, ground_truth.values()), default=0)), np.nan
    )
    for row, query_id in enumerate(arrays.queries):
        positives = [_or_nan(values.get(p)) for p in ground_truth.get(query_instance[query_id], ())]
        truth_values[row, : len(positives)] = positives
    maps: dict[str, float] = {}
    counts: dict[str, int] = {}
    with np.errstate(invalid="ignore"):
        for low, high in groups:
            in_group = (entry_value >= low) & (entry_value < high)
            n_left = ((truth_values >= low) & (truth_values < high)).sum(axis=1)
            counted = n_left > 0
            if not counted.any():
                continue
            # Remove the positives outside the group: move them to the end of their row
            # (a stable sort on a flag keeps the rest in rank order) as -inf padding, which
            # sorts after every real result and is never relevant.
            kept = ~(arrays.positive[counted] & ~in_group[counted])
            order = np.argsort(~kept, axis=1, kind="stable")
            kept = np.take_along_axis(kept, order, axis=1)
            scores = np.where(
                kept, np.take_along_axis(arrays.scores[counted], order, axis=1), -np.inf
            )
            relevant = kept & np.take_along_axis(
                (arrays.positive & in_group)[counted], order, axis=1
            )
            aps = average_precision_batch(scores, relevant, n_left[counted], k)
            key = group_key(low, high)
            maps[key] = 100.0 * float(aps.mean())
            counts[key] = int(counted.sum())
    return maps, counts


def _or_nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def compute_breakdowns(
    rankings: Mapping[str, Ranking],
    ground_truth: Mapping[str, frozenset[str] | set[str]],
    query_instance: Mapping[str, str],
    *,
    positive_info: Mapping[str, tuple[float, int] | None] | None = None,
    taxonomy: Mapping[str, tuple[str, str]] | None = None,
    per_query_ap: Mapping[str, float] | None = None,
    k: int = 1000,
    scale_groups: Sequence[tuple[float, float]] = SCALE_GROUPS,
    clutter_groups: Sequence[tuple[float, float]] = CLUTTER_GROUPS,
) -> Breakdowns:
    """All breakdowns of one query set (image *or* text queries: never mix them).

    ``query_instance`` names the queries to score and their instance; ``ground_truth`` maps
    an instance to its positives; ``positive_info`` maps a positive to ``(scale, clutter)``
    (scale/clutter breakdowns are skipped without it); ``taxonomy`` maps an instance to
    ``(category, subcategory)`` (category breakdowns are skipped without it).
    """
    counts: dict[str, int] = {}
    categories: dict[str, float] = {}
    subcategories: dict[str, float] = {}
    uncategorised: tuple[str, ...] = ()
    if taxonomy is not None:
        if per_query_ap is None:
            truth = {q: ground_truth.get(i, frozenset()) for q, i in query_instance.items()}
            per_query_ap = evaluate_rankings(rankings, truth, k).per_query_ap
        categories, subcategories, category_counts, uncategorised = category_breakdown(
            {q: per_query_ap[q] for q in query_instance}, query_instance, taxonomy
        )
        counts.update(category_counts)
    scale: dict[str, float] = {}
    clutter: dict[str, float] = {}
    if positive_info:
        prepared = _arrays(rankings, list(query_instance), ground_truth, query_instance)
        for name, position, groups in (("scale", 0, scale_groups), ("clutter", 1, clutter_groups)):
            values = {p: (info[position] if info else None) for p, info in positive_info.items()}
            maps, group_counts = _group_maps(
                prepared, ground_truth, query_instance, values, groups, k
            )
            (scale if name == "scale" else clutter).update(maps)
            counts.update({f"{name}:{key}": n for key, n in group_counts.items()})
    return Breakdowns(categories, subcategories, scale, clutter, counts, uncategorised)
