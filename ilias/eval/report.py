"""A run's own files: ``metrics.json``, ``per_query.parquet``, and two runs side by side.

``metrics.json`` holds the numbers and everything needed to reproduce them (package
version, encoder spec, resolution, store and collection config, the run's config, timings);
``per_query.parquet`` holds one row per query (``query_id, instance, kind, ap, oracle,
n_positives``) for analysis in any dataframe library. pyarrow is imported only when a
Parquet file is read or written, so ``ilias.eval`` stays numpy-only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from ilias.errors import DatasetError

METRICS_FILE = "metrics.json"
PER_QUERY_FILE = "per_query.parquet"
PER_QUERY_COLUMNS = ("query_id", "instance", "kind", "ap", "oracle", "n_positives")


@dataclass(frozen=True)
class PerQueryRow:
    """One query's result: AP and oracle on the 0-1 scale, as the metrics module gives them."""

    query_id: str
    instance: str
    kind: str
    ap: float
    oracle: float
    n_positives: int


def write_per_query(path: Path | str, rows: Sequence[PerQueryRow]) -> Path:
    """Write the per-query table as Parquet (needs ``pyarrow``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "query_id": pa.array([r.query_id for r in rows], pa.string()),
            "instance": pa.array([r.instance for r in rows], pa.string()),
            "kind": pa.array([r.kind for r in rows], pa.string()),
            "ap": pa.array([r.ap for r in rows], pa.float64()),
            "oracle": pa.array([r.oracle for r in rows], pa.float64()),
            "n_positives": pa.array([r.n_positives for r in rows], pa.int64()),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_per_query(path: Path | str) -> list[PerQueryRow]:
    """Read a per-query Parquet table back into rows."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; is this a results folder of `ilias eval run`?")
    columns = pq.read_table(path).to_pydict()
    missing = [c for c in PER_QUERY_COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"{path} lacks the column(s) {', '.join(missing)}")
    return [
        PerQueryRow(*values)
        for values in zip(*(columns[c] for c in PER_QUERY_COLUMNS), strict=True)
    ]


def per_query_ap(rows: Sequence[PerQueryRow], kind: str = "image") -> dict[str, float]:
    """``{query_id: ap}`` of one kind of query."""
    return {r.query_id: r.ap for r in rows if r.kind == kind}


def write_metrics(path: Path | str, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (paths become strings; NaN/inf become null, which JSON lacks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(metrics), indent=2) + "\n", encoding="utf-8")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _plain(value.item())
    return value


def read_metrics(run_dir: Path | str) -> dict[str, Any]:
    """Read a results folder's ``metrics.json``."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path} does not exist; pass a results folder written by `ilias eval run`"
        )
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class ComparisonRow:
    """One line of a side-by-side table; ``delta`` is B - A where both are numbers."""

    metric: str
    a: float | int | str | None
    b: float | int | str | None
    delta: float | None


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The comparable facts of a run, flattened in a stable, readable order."""
    flat: dict[str, Any] = {}
    k = metrics.get("k")
    for kind, result in metrics.get("queries", {}).items():
        if "map" not in result:
            flat[f"{kind} queries"] = f"skipped: {result.get('skipped', '?')}"
            continue
        flat[f"{kind} mAP@{k}"] = result["map"]
        flat[f"{kind} oracle@{k}"] = result["oracle"]
        flat[f"{kind} queries"] = result["n_queries"]
        for group, values in (result.get("breakdowns") or {}).items():
            if group in ("n_queries", "uncategorised") or not isinstance(values, Mapping):
                continue
            for key, value in values.items():
                flat[f"{kind} {group} {key}"] = value
    encoder = metrics.get("encoder", {})
    flat["encoder"] = encoder.get("spec")
    flat["resolution"] = encoder.get("resolution")
    search = metrics.get("search", {})
    flat["search"] = ", ".join(f"{k}={v}" for k, v in search.items() if v is not None)
    flat["collection points"] = metrics.get("store", {}).get("points")
    for name, seconds in metrics.get("timings", {}).items():
        flat[f"time {name}"] = seconds
    flat["ilias version"] = metrics.get("ilias_version")
    return flat


def compare_metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[ComparisonRow]:
    """Rows for a side-by-side table of two runs' ``metrics.json`` (A's order, then B's)."""
    flat_a, flat_b = _headline(a), _headline(b)
    rows = []
    for metric in list(flat_a) + [m for m in flat_b if m not in flat_a]:
        value_a, value_b = flat_a.get(metric), flat_b.get(metric)
        delta = (
            float(value_b) - float(value_a) if _is_number(value_a) and _is_number(value_b) else None
        )
        rows.append(ComparisonRow(metric, value_a, value_b, delta))
    return rows


def format_comparison(rows: Sequence[ComparisonRow], name_a: str = "A", name_b: str = "B") -> str:
    """A plain-text table (the CLI may draw its own from the same rows)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1000 else f"{value:.1f}"
        return "-" if value is None else str(value)

    table = [("metric", name_a, name_b, "B - A")] + [
        (r.metric, cell(r.a), cell(r.b), "" if r.delta is None else f"{r.delta:+.3f}") for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
