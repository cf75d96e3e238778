"""Scripted evaluation runs: one TOML file in, one results folder out, reproducible.

A run description names the dataset, the encoder (spec, resolution, optional linear
adaptation), the store and collection, the search parameters, the re-rankers and what to
report. ``run_config`` loads the collection if it is missing or incomplete (the load is
resumable and skips what is stored), runs the image queries (and the text queries where the
encoder has a text tower), scores them exactly as the ILIAS reference does, and writes:

    similarities.json / .pkl        image queries, the reference's formats (evaluate.py reads them)
    similarities-text.json / .pkl   text queries, likewise (scored apart, as in ILIAS)
    metrics.json                    mAP, oracle, breakdowns, timings, versions, configs
    per_query.parquet               query_id, instance, kind, ap, oracle, n_positives
    *.png                           per-query AP, scale/clutter groups, categories, comparison

``compare_runs`` puts two results folders side by side. This module sits above ``eval``
(it uses ``loader``, ``indexing`` and ``query``); ``eval`` stays numpy-only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ilias import __version__
from ilias.errors import DatasetError, IliasError
from ilias.eval import (
    Breakdowns,
    FileScores,
    IliasIds,
    RetrievalScores,
    read_taxonomy,
    score_rankings,
    write_similarities,
)
from ilias.eval.report import (
    METRICS_FILE,
    PER_QUERY_FILE,
    ComparisonRow,
    PerQueryRow,
    compare_metrics,
    per_query_ap,
    read_metrics,
    read_per_query,
    write_metrics,
    write_per_query,
)
from ilias.indexing import EncoderSpec, ExtractionOptions, SearchParams, load_collection, open_store
from ilias.indexing.local_features import LocalConfig
from ilias.loader import Benchmark, read_ilias
from ilias.query import Retriever, run_queries
from ilias.rerank import parse_rerankers

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

SIMILARITY_FORMATS = {"json": ".json", "pickle": ".pkl"}
DATASET_KINDS = ("ilias",)


class RunConfigError(IliasError):
    """A run description that cannot be run as written; the message names the key to fix."""


# ------------------------------------------------------------------------ the config

# section -> key -> (accepted types, default). Anything else in the file is refused, so a
# misspelt key can never be silently ignored.
_SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "run": {"name": ((str,), None)},
    "dataset": {
        "kind": ((str,), "ilias"),
        "path": ((str,), None),
        "distractors": ((str,), None),
        "taxonomy": ((str,), None),
    },
    "encoder": {
        "spec": ((str,), None),
        "resolution": ((int,), None),
        "adaptation": ((str,), None),
    },
    "extraction": {
        "scheduler": ((str,), "local"),
        "workers": ((int,), None),
        "batch_size": ((int,), 16),
    },
    "store": {"spec": ((str,), None), "collection": ((str,), None)},
    "search": {
        "k": ((int,), 1000),
        "exact": ((bool,), False),
        "hnsw_ef": ((int,), None),
        "oversampling": ((int, float), None),
        "rescore": ((bool,), True),
    },
    "rerank": {"steps": ((list,), [])},
    "metrics": {
        "breakdowns": ((bool,), True),
        "text_queries": ((bool,), True),
        "check_ids": ((bool,), True),
    },
    "output": {
        "dir": ((str,), None),
        "similarities": ((list,), ["json"]),
        "plots": ((bool,), True),
        "compare_with": ((str,), None),
        "overwrite": ((bool,), False),
    },
}
_REQUIRED = (("dataset", "path"), ("encoder", "spec"), ("store", "spec"))


@dataclass(frozen=True)
class RunConfig:
    """A parsed run description; relative paths are resolved against the file's folder."""

    name: str
    dataset: Path
    distractors: Path | None
    taxonomy: Path | None
    encoder: str
    resolution: int | None
    adaptation: Path | None
    store: str
    collection: str | None
    scheduler: str
    workers: int | None
    batch_size: int
    search: SearchParams
    k: int
    rerank: tuple[str, ...]
    breakdowns: bool
    text_queries: bool
    check_ids: bool
    output: Path
    similarities: tuple[str, ...]
    plots: bool
    compare_with: Path | None
    overwrite: bool
    raw: dict
    source: Path | None = None
    kind: str = "ilias"


def load_run_config(path: Path | str) -> RunConfig:
    """Read and check a run description (TOML)."""
    path = Path(path)
    if not path.is_file():
        raise RunConfigError(f"run description {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise RunConfigError(f"{path} is not valid TOML: {error}") from error
    return parse_run_config(data, base=path.resolve().parent, source=path.resolve())


def parse_run_config(
    data: Mapping[str, Any], *, base: Path, source: Path | None = None
) -> RunConfig:
    """Check ``data`` against the schema and fill defaults; paths resolve against ``base``."""
    where = str(source) if source else "run description"
    values: dict[str, dict[str, Any]] = {}
    for section, body in data.items():
        if section not in _SCHEMA:
            raise RunConfigError(
                f"{where}: unknown section [{section}]; known: {', '.join(_SCHEMA)}"
            )
        if not isinstance(body, Mapping):
            raise RunConfigError(f"{where}: [{section}] must be a table of keys")
    for section, keys in _SCHEMA.items():
        body = dict(data.get(section, {}))
        unknown = sorted(set(body) - set(keys))
        if unknown:
            raise RunConfigError(
                f"{where}: unknown key(s) {', '.join(unknown)} in [{section}]; known: "
                f"{', '.join(keys)}"
            )
        values[section] = {}
        for key, (types, default) in keys.items():
            value = body.get(key, default)
            wrong_bool = isinstance(value, bool) and bool not in types
            if value is not None and (not isinstance(value, types) or wrong_bool):
                names = " or ".join(t.__name__ for t in types)
                raise RunConfigError(f"{where}: [{section}] {key} must be a {names}, not {value!r}")
            values[section][key] = value
    for section, key in _REQUIRED:
        if not values[section][key]:
            raise RunConfigError(f"{where}: [{section}] {key} is required")

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(value).expanduser()
        return candidate if candidate.is_absolute() else (base / candidate).resolve()

    dataset = resolve(values["dataset"]["path"])
    assert dataset is not None
    name = values["run"]["name"] or (source.stem if source else dataset.name)
    kind = values["dataset"]["kind"]
    if kind not in DATASET_KINDS:
        raise RunConfigError(
            f"{where}: [dataset] kind = {kind!r} cannot be run from a config yet (kinds: "
            f"{', '.join(DATASET_KINDS)}); score GPR1200 and UnED with ilias.eval.gpr1200 "
            "and ilias.eval.uned"
        )
    formats = tuple(values["output"]["similarities"])
    bad = [f for f in formats if f not in SIMILARITY_FORMATS]
    if bad:
        raise RunConfigError(
            f"{where}: [output] similarities {bad} not known; use {list(SIMILARITY_FORMATS)}"
        )
    search = values["search"]
    if search["k"] < 1:
        raise RunConfigError(f"{where}: [search] k must be at least 1")
    output = resolve(values["output"]["dir"]) or (base / "runs" / name).resolve()
    return RunConfig(
        name=name,
        kind=kind,
        dataset=dataset,
        distractors=resolve(values["dataset"]["distractors"]),
        taxonomy=resolve(values["dataset"]["taxonomy"]),
        encoder=values["encoder"]["spec"],
        resolution=values["encoder"]["resolution"],
        adaptation=resolve(values["encoder"]["adaptation"]),
        store=_resolve_store(values["store"]["spec"], base),
        collection=values["store"]["collection"],
        scheduler=values["extraction"]["scheduler"],
        workers=values["extraction"]["workers"],
        batch_size=values["extraction"]["batch_size"],
        search=SearchParams(
            exact=search["exact"],
            hnsw_ef=search["hnsw_ef"],
            oversampling=None if search["oversampling"] is None else float(search["oversampling"]),
            rescore=search["rescore"],
        ),
        k=search["k"],
        rerank=tuple(str(step) for step in values["rerank"]["steps"]),
        breakdowns=values["metrics"]["breakdowns"],
        text_queries=values["metrics"]["text_queries"],
        check_ids=values["metrics"]["check_ids"],
        output=output,
        similarities=formats,
        plots=values["output"]["plots"],
        compare_with=resolve(values["output"]["compare_with"]),
        overwrite=values["output"]["overwrite"],
        raw={section: dict(body) for section, body in data.items()},
        source=source,
    )


def _resolve_store(spec: str, base: Path) -> str:
    """``edge:relative/path`` is relative to the config file, like every other path."""
    kind, sep, rest = spec.partition(":")
    if kind == "edge" and sep and rest:
        path = Path(rest).expanduser()
        return f"edge:{path if path.is_absolute() else (base / path).resolve()}"
    return spec


def encoder_spec(config: RunConfig) -> str:
    """The encoder spec the collection is built with, adaptation layer included."""
    if config.adaptation is None:
        return config.encoder
    if "adaptation" not in {f.name for f in dataclasses.fields(EncoderSpec)}:
        raise RunConfigError(
            "linear adaptation is not available yet in this version of ilias; remove "
            "[encoder] adaptation"
        )
    parsed = EncoderSpec.parse(config.encoder)
    if parsed.adaptation:
        raise RunConfigError(
            "[encoder] spec already names an adaptation layer ('|adapt='); give it once, "
            "either in the spec or as [encoder] adaptation"
        )
    if not config.adaptation.is_file():
        raise RunConfigError(f"[encoder] adaptation: {config.adaptation} does not exist")
    return str(dataclasses.replace(parsed, adaptation=str(config.adaptation)))


def _check_rerank(config: RunConfig) -> bool:
    """Refuse unknown re-rankers before any extraction; True when they need local features."""
    steps = [s for s in config.rerank if s.split(":")[0] != "ames"]
    if len(steps) != len(config.rerank):
        raise RunConfigError(
            "[rerank] ames needs user-supplied weights, which scripted runs do not take yet; "
            "use the Python API (ilias.rerank.AmesRerank)"
        )
    try:
        return any(step.needs_local for step in parse_rerankers(steps))
    except IliasError as error:
        raise RunConfigError(f"[rerank] steps: {error}") from error


def _collection_name(config: RunConfig, benchmark: Benchmark, spec: str) -> str:
    """One collection per (dataset, encoder, resolution) unless the config names one."""
    if config.collection:
        return config.collection
    digest = hashlib.sha1(f"{spec}|{config.resolution}".encode()).hexdigest()[:8]
    return f"{benchmark.name}-{digest}"


# ----------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class _QueryResults:
    rankings: dict[str, list[tuple[str, float]]]
    encode_seconds: float
    search_seconds: float


def run_config(
    path: Path | str | RunConfig,
    *,
    overwrite: bool | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Run a run description; returns the results folder.

    ``overwrite`` and ``scheduler`` override the file's ``[output] overwrite`` and
    ``[extraction] scheduler`` (a CLI flag, a test). Errors a user can fix raise
    ``IliasError`` before any expensive step where they can be seen early.
    """
    started = time.perf_counter()
    config = path if isinstance(path, RunConfig) else load_run_config(path)
    if overwrite is not None:
        config = dataclasses.replace(config, overwrite=overwrite)
    if scheduler is not None:
        config = dataclasses.replace(config, scheduler=scheduler)
    needs_local = _check_rerank(config)
    spec = encoder_spec(config)
    _check_output(config)
    taxonomy = read_taxonomy(config.taxonomy) if config.taxonomy else None
    benchmark = read_ilias(config.dataset, config.distractors)
    collection = _collection_name(config, benchmark, spec)
    ids = ilias_ids_of(benchmark)

    def report(stage: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(stage, done, total)) if progress else None

    timings: dict[str, float] = {}
    with open_store(config.store) as store:
        options = ExtractionOptions(
            encoder=spec,
            resolution=config.resolution,
            batch_size=config.batch_size,
            scheduler=config.scheduler,
            n_workers=config.workers,
            local=LocalConfig() if needs_local else None,
        )
        metadata = {"dataset": str(config.dataset)}
        if config.distractors:
            metadata["distractors"] = str(config.distractors)
        load = load_collection(
            benchmark.database,
            store,
            collection,
            options,
            metadata=metadata,
            progress=report("extract"),
        )
        timings["load_extract_s"] = load.extract_seconds
        timings["load_index_s"] = load.index_seconds
        info = store.info(collection)
        retriever = Retriever(store, collection, params=config.search)
        image_run = run_queries(
            benchmark,
            retriever,
            "image",
            k=config.k,
            params=config.search,
            progress=report("image queries"),
            rerank=parse_rerankers(config.rerank),
        )
        timings.update({f"stage_{name}_s": t for name, t in image_run.stage_seconds.items()})
        image = _QueryResults(
            {q: [(h.id, h.score) for h in hits] for q, hits in image_run.rankings.items()},
            image_run.encode_seconds,
            image_run.search_seconds,
        )
        timings["image_encode_s"] = image.encode_seconds
        timings["image_search_s"] = image.search_seconds
        text, text_skipped = None, _text_skip_reason(config, benchmark, retriever)
        if text_skipped is None:
            text = _run_text_queries(benchmark, retriever, config, report("text queries"))
            timings["text_encode_search_s"] = text.encode_seconds + text.search_seconds
        resolution = retriever.encoder.resolution

    began = time.perf_counter()
    rankings = dict(image.rankings) | (text.rankings if text else {})
    scores = score_rankings(
        rankings,
        ids,
        k=config.k,
        check_database=config.check_ids,
        breakdowns=config.breakdowns,
        taxonomy=taxonomy,
    )
    timings["score_s"] = time.perf_counter() - began

    began = time.perf_counter()
    _clear_previous_run(config)
    files = _write_similarity_files(config, image.rankings, text.rankings if text else None)
    rows = _per_query_rows(scores, ids)
    write_per_query(config.output / PER_QUERY_FILE, rows)
    if config.plots:
        files["plots"] = _plot_run(config, scores, per_query_ap(rows, "image"))
    files["per_query"] = PER_QUERY_FILE
    timings["write_s"] = time.perf_counter() - began
    timings["total_s"] = time.perf_counter() - started

    metrics = {
        "name": config.name,
        "ilias_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "k": config.k,
        "map": scores.image.map if scores.image else None,
        "oracle": scores.image.oracle if scores.image else None,
        "n_queries": scores.image.n_queries if scores.image else 0,
        "queries": {
            "image": _kind_summary(scores.image, scores.image_breakdowns),
            "text": _kind_summary(scores.text, scores.text_breakdowns)
            if text
            else {"skipped": text_skipped},
        },
        "dataset": {
            "kind": config.kind,
            "name": benchmark.name,
            "path": config.dataset,
            "distractors": config.distractors,
            "taxonomy": config.taxonomy,
            "image_queries": len(benchmark.image_queries),
            "text_queries": len(benchmark.text_queries),
            "database": len(benchmark.database),
            "positives": benchmark.n_positives,
        },
        "encoder": {"spec": spec, "resolution": resolution, "adaptation": config.adaptation},
        "store": {
            "spec": config.store,
            "collection": collection,
            "location": info.location,
            "points": info.points,
            "collection_config": info.config.to_dict(),
            "loaded_now": load.loaded,
            "already_present": load.already_present,
            "unreadable": [f"{f.id}: {f.reason}" for f in load.failures],
        },
        "search": {
            "k": config.k,
            "exact": config.search.exact,
            "hnsw_ef": config.search.hnsw_ef,
            "oversampling": config.search.oversampling,
            "rescore": config.search.rescore,
        },
        "rerank": {"steps": list(config.rerank)},
        "timings": timings,
        "files": files,
        "config_file": config.source,
        "config": config.raw,
    }
    write_metrics(config.output / METRICS_FILE, metrics)
    logger.info(
        "run %s: image mAP@%d %.2f -> %s",
        config.name,
        config.k,
        metrics["map"] or 0.0,
        config.output,
    )
    return config.output


def ilias_ids_of(benchmark: Benchmark) -> IliasIds:
    """The reference's view of a benchmark: query ids, positives with scale/clutter, the rest."""
    positives = {p for ids in benchmark.ground_truth.values() for p in ids}
    positive_info: dict[str, tuple[float, int] | None] = dict.fromkeys(sorted(positives))
    for record in benchmark.database:
        payload = record.payload
        if record.id in positives and "scale" in payload and "clutter" in payload:
            positive_info[record.id] = (float(payload["scale"]), int(payload["clutter"]))
    distractors = frozenset(r.id for r in benchmark.database if r.id not in positives)
    return IliasIds(
        tuple(q.id for q in benchmark.image_queries),
        tuple(q.id for q in benchmark.text_queries),
        positive_info,
        distractors,
    )


def _check_output(config: RunConfig) -> None:
    """Refuse to overwrite a run unless asked (checked before any expensive step)."""
    if (config.output / METRICS_FILE).exists() and not config.overwrite:
        raise RunConfigError(
            f"{config.output} already holds a run; choose another [output] dir or set "
            "[output] overwrite = true"
        )


def _clear_previous_run(config: RunConfig) -> None:
    """Remove the files the previous run in this folder wrote (listed in its metrics.json).

    Called once the new results are ready, so a failed run leaves the old one intact, and
    stale plots or similarity files cannot be mistaken for the new run's. Nothing else in
    the folder is touched.
    """
    if not (config.output / METRICS_FILE).exists():
        return
    try:
        files = read_metrics(config.output).get("files", {})
    except ValueError:  # a damaged metrics.json: remove just that
        files = {}
    names = [*files.get("similarities", []), *files.get("plots", [])]
    names += [files.get("per_query", PER_QUERY_FILE), METRICS_FILE]
    for name in names:
        target = config.output / str(name)
        if target.parent == config.output and target.is_file():
            target.unlink()


def _text_skip_reason(config: RunConfig, benchmark: Benchmark, retriever: Retriever) -> str | None:
    """Why text queries are not run (None: they are)."""
    if not config.text_queries:
        return "[metrics] text_queries = false"
    if not benchmark.text_queries:
        return "the dataset has no text queries"
    if not getattr(retriever.encoder, "has_text_tower", False):
        return "the encoder has no text tower"
    if not hasattr(retriever, "search_texts"):
        return "this version of ilias cannot search by text"
    return None


def _run_text_queries(
    benchmark: Benchmark,
    retriever: Retriever,
    config: RunConfig,
    progress: Callable[[int, int], None] | None,
    batch_size: int = 32,
) -> _QueryResults:
    """Text-to-image search for every text query (the whole ``T*.txt``, no template)."""
    queries = benchmark.text_queries
    rankings: dict[str, list[tuple[str, float]]] = {}
    began = time.perf_counter()
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        results = retriever.search_texts([q.text for q in chunk], config.k, None, config.search)
        for query, hits in zip(chunk, results, strict=True):
            rankings[query.id] = [(h.id, h.score) for h in hits]
        if progress:
            progress(start + len(chunk), len(queries))
    return _QueryResults(rankings, 0.0, time.perf_counter() - began)


def _write_similarity_files(
    config: RunConfig,
    image: Mapping[str, list[tuple[str, float]]],
    text: Mapping[str, list[tuple[str, float]]] | None,
) -> dict[str, Any]:
    files: dict[str, Any] = {"similarities": []}
    for kind, rankings in (("image", image), ("text", text)):
        if not rankings:
            continue
        stem = "similarities" if kind == "image" else "similarities-text"
        for fmt in config.similarities:
            name = stem + SIMILARITY_FORMATS[fmt]
            write_similarities(config.output / name, rankings)
            files["similarities"].append(name)
    return files


def _per_query_rows(scores: FileScores, ids: IliasIds) -> list[PerQueryRow]:
    rows = []
    for kind, result in (("image", scores.image), ("text", scores.text)):
        if result is None:
            continue
        for query_id, ap in result.per_query_ap.items():
            instance = query_id.split("/", 1)[0]
            rows.append(
                PerQueryRow(
                    query_id,
                    instance,
                    kind,
                    ap,
                    result.per_query_oracle[query_id],
                    len(ids.ground_truth.get(instance, ())),
                )
            )
    return rows


def _kind_summary(scores: RetrievalScores | None, breakdowns: Breakdowns | None) -> dict:
    if scores is None:
        return {"skipped": "no queries of this kind"}
    return {
        "map": scores.map,
        "oracle": scores.oracle,
        "n_queries": scores.n_queries,
        "breakdowns": breakdowns.to_dict() if breakdowns else None,
    }


def _plot_run(config: RunConfig, scores: FileScores, image_ap: Mapping[str, float]) -> list[str]:
    """The run's PNGs (image queries; text queries get their own where they ran)."""
    from ilias.eval import plots

    out = config.output
    written = [
        plots.plot_per_query_ap(
            image_ap,
            out / "per_query_ap.png",
            title=f"{config.name}: AP@{config.k} per image query",
        )
    ]
    for kind, breakdown in (("image", scores.image_breakdowns), ("text", scores.text_breakdowns)):
        if breakdown is None:
            continue
        suffix = "" if kind == "image" else "-text"
        if breakdown.scale or breakdown.clutter:
            written.append(
                plots.plot_groups(
                    breakdown.scale,
                    breakdown.clutter,
                    out / f"groups{suffix}.png",
                    counts=breakdown.n_queries,
                    title=f"{config.name}: mAP@{config.k} per group of positives ({kind} queries)",
                )
            )
        if breakdown.categories:
            written.append(
                plots.plot_categories(
                    breakdown.categories,
                    out / f"categories{suffix}.png",
                    subcategories=breakdown.subcategories,
                    title=f"{config.name}: mAP@{config.k} per category ({kind} queries)",
                )
            )
    if config.compare_with is not None:
        other = read_per_query(config.compare_with / PER_QUERY_FILE)
        other_name = read_metrics(config.compare_with).get("name", config.compare_with.name)
        written.append(
            plots.plot_ap_scatter(
                per_query_ap(other, "image"),
                image_ap,
                out / "compare_ap.png",
                label_a=str(other_name),
                label_b=config.name,
            )
        )
    return [p.name for p in written]


# ------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class RunComparison:
    """Two runs side by side: table rows (B - A deltas) and the per-query AP scatter."""

    name_a: str
    name_b: str
    rows: list[ComparisonRow]
    scatter: Path | None


def compare_runs(
    run_a: Path | str,
    run_b: Path | str,
    *,
    plot: Path | str | None = None,
    kind: str = "image",
) -> RunComparison:
    """Compare two results folders; with ``plot``, draw per-query AP of A vs B there."""
    run_a, run_b = Path(run_a), Path(run_b)
    metrics_a, metrics_b = read_metrics(run_a), read_metrics(run_b)
    name_a = str(metrics_a.get("name") or run_a.name)
    name_b = str(metrics_b.get("name") or run_b.name)
    if metrics_a.get("k") != metrics_b.get("k"):
        logger.warning("runs use different k (%s vs %s)", metrics_a.get("k"), metrics_b.get("k"))
    scatter = None
    if plot is not None:
        from ilias.eval.plots import plot_ap_scatter

        ap_a = per_query_ap(read_per_query(run_a / PER_QUERY_FILE), kind)
        ap_b = per_query_ap(read_per_query(run_b / PER_QUERY_FILE), kind)
        if not set(ap_a) & set(ap_b):
            raise DatasetError(
                f"{run_a} and {run_b} share no {kind} query; compare runs of the same dataset"
            )
        scatter = plot_ap_scatter(
            ap_a,
            ap_b,
            plot,
            label_a=name_a,
            label_b=name_b,
            title=f"AP@{metrics_a.get('k')} per {kind} query",
        )
    return RunComparison(name_a, name_b, compare_metrics(metrics_a, metrics_b), scatter)
