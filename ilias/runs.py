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
import os
import re
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ilias import __version__
from ilias.config import data_home
from ilias.errors import DatasetError, IliasError
from ilias.eval import read_taxonomy
from ilias.eval.report import (
    METRICS_FILE,
    PER_QUERY_FILE,
    ComparisonRow,
    compare_metrics,
    per_query_ap,
    read_metrics,
    read_per_query,
    write_metrics,
    write_per_query,
)
from ilias.indexing import EncoderSpec, ExtractionOptions, load_collection, open_store
from ilias.indexing.devices import check_device, check_precision
from ilias.loader import (
    Benchmark,
    Gpr1200Dataset,
    UnedDataset,
    is_ilias_layout,
    open_dataset,
    selection_tag,
)
from ilias.query import EXACT, evaluate_collection, ilias_ids_of, parse_where
from ilias.query.report import (
    SIMILARITY_FORMATS,
    evaluation_summary,
    per_query_rows,
    plot_evaluation,
    write_similarity_files,
)
from ilias.rerank import parse_rerankers
from ilias.types import LocalConfig, SearchParams

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]

DATASET_KINDS = ("ilias", "gpr1200", "uned")
__all__ = [
    "SIMILARITY_FORMATS",
    "RunComparison",
    "RunConfig",
    "RunConfigError",
    "compare_runs",
    "encoder_spec",
    "ilias_ids_of",
    "load_run_config",
    "parse_run_config",
    "run_config",
]


class RunConfigError(IliasError):
    """A run description that cannot be run as written; the message names the key to fix."""


# ------------------------------------------------------------------------ the config


# The file's shape, one model per section. ``extra="forbid"`` refuses a misspelt key rather
# than ignoring it; ``strict`` refuses ``k = "10"`` or ``exact = 1`` rather than guessing.
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Run(_Section):
    name: str | None = None


class _Dataset(_Section):
    kind: str = "ilias"
    path: str = Field(min_length=1)
    distractors: str | None = None  # images (folder, list) or tar shards (folder, glob, {a..b})
    select: str | None = None  # a selection list (mini-ILIAS): load only those distractors
    taxonomy: str | None = None
    crop_queries: bool = False  # the reference extracts image queries whole by default
    mask_queries: bool = False  # ... or masked outside their boxes (its --masking)


class _Encoder(_Section):
    spec: str = Field(min_length=1)
    resolution: int | None = None
    adaptation: str | None = None


class _Extraction(_Section):
    scheduler: str = "local"
    workers: int | None = None
    batch_size: int = 16
    device: str = "auto"  # auto, cpu, cuda, cuda:N (ilias.indexing.devices)
    precision: str = "auto"  # auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16, bf16
    decode_threads: int | None = None
    draft: bool = True  # large JPEGs decoded at reduced size (ilias.loader.images)


class _Store(_Section):
    spec: str = Field(min_length=1)
    collection: str | None = None


class _Search(_Section):
    k: int = 1000
    exact: bool = True  # the reference's ranking; false: the collection's index, recall measured
    hnsw_ef: int | None = None
    oversampling: float | None = None
    rescore: bool = True
    where: list[str] = []  # payload filter clauses, as ``--where`` takes them


class _Rerank(_Section):
    steps: list[str] = []
    ames_weights: str | None = None  # a published AMES checkpoint, for the "ames" step


class _Metrics(_Section):
    breakdowns: bool = True
    text_queries: bool = True
    check_ids: bool = True


class _Output(_Section):
    dir: str | None = None
    similarities: list[str] = ["json"]
    plots: bool = True
    compare_with: str | None = None
    overwrite: bool = False


class _RunFile(_Section):
    run: _Run = _Run()
    dataset: _Dataset
    encoder: _Encoder
    extraction: _Extraction = _Extraction()
    store: _Store
    search: _Search = _Search()
    rerank: _Rerank = _Rerank()
    metrics: _Metrics = _Metrics()
    output: _Output = _Output()


# pydantic error type -> what the key should have held
_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
}


def _config_error(origin: str, error: ValidationError) -> RunConfigError:
    """The first problem pydantic found, as one line naming the section and key."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    kind, value = first["type"], first.get("input")
    section = loc[0] if loc else ""
    fields = _RunFile.model_fields
    if len(loc) == 1 and kind == "extra_forbidden":
        return RunConfigError(f"{origin}: unknown section [{section}]; known: {', '.join(fields)}")
    if len(loc) == 1 and kind == "missing":
        required = next(
            k for k, f in _section_model(section).model_fields.items() if f.is_required()
        )
        return RunConfigError(f"{origin}: [{section}] {required} is required")
    if len(loc) == 1:
        return RunConfigError(f"{origin}: [{section}] must be a table of keys, not {value!r}")
    key = loc[1]
    if kind == "extra_forbidden":
        known = ", ".join(_section_model(section).model_fields)
        return RunConfigError(f"{origin}: [{section}] unknown key {key!r}; known: {known}")
    if kind in ("missing", "string_too_short"):
        return RunConfigError(f"{origin}: [{section}] {key} is required")
    expected = _EXPECTED.get(kind, first["msg"])
    item = f" (item {loc[2]})" if len(loc) > 2 else ""
    return RunConfigError(f"{origin}: [{section}] {key}{item}: {expected}, not {value!r}")


def _section_model(section: str) -> type[BaseModel]:
    annotation = _RunFile.model_fields[section].annotation
    assert isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation


@dataclass(frozen=True)
class RunConfig:
    """A parsed run description; relative paths are resolved against the file's folder."""

    name: str
    dataset: Path
    distractors: str | None  # a path, a shard pattern or a URL
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
    where: tuple[str, ...] = ()  # [search] where: the filter every query runs with
    crop_queries: bool = False  # [dataset] crop_queries: image queries cropped to their box
    mask_queries: bool = False  # [dataset] mask_queries: masked outside their boxes
    ames_weights: Path | None = None  # [rerank] ames_weights: the AMES checkpoint
    select: Path | None = None  # [dataset] select: a selection list applied at load
    device: str = "auto"  # [extraction] device: where database and queries are encoded
    precision: str = "auto"  # [extraction] precision
    decode_threads: int | None = None  # [extraction] decode_threads: per worker
    draft: bool = True  # [extraction] draft: reduced-size decoding of large JPEGs


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
    origin = source.name if source else "run description"
    try:
        parsed = _RunFile.model_validate(dict(data))
    except ValidationError as error:
        raise _config_error(origin, error) from None

    def resolve(value: str | None) -> Path | None:
        if value is None:
            return None
        candidate = Path(expand_variables(value, origin)).expanduser()
        return candidate if candidate.is_absolute() else (base / candidate).resolve()

    dataset = resolve(parsed.dataset.path)
    assert dataset is not None
    name = parsed.run.name or (source.stem if source else dataset.name)
    kind = parsed.dataset.kind
    if kind not in DATASET_KINDS:
        raise RunConfigError(
            f"{origin}: [dataset] kind = {kind!r} is not known; use one of: "
            f"{', '.join(DATASET_KINDS)}"
        )
    if kind != "ilias" and parsed.rerank.steps:
        raise RunConfigError(
            f"{origin}: [rerank] steps apply to ILIAS runs; a {kind} run scores the first "
            "search, as its authors' protocol does: remove [rerank] steps"
        )
    formats = tuple(parsed.output.similarities)
    bad = [f for f in formats if f not in SIMILARITY_FORMATS]
    if bad:
        raise RunConfigError(
            f"{origin}: [output] similarities {bad} not known; use {list(SIMILARITY_FORMATS)}"
        )
    search = parsed.search
    if search.k < 1:
        raise RunConfigError(f"{origin}: [search] k must be at least 1, not {search.k}")
    tuned = search.hnsw_ef is not None or search.oversampling is not None or not search.rescore
    if search.exact and tuned:
        raise RunConfigError(
            f"{origin}: [search] hnsw_ef, oversampling and rescore tune approximate search: "
            "set exact = false to use them (exact search is the reference's ranking)"
        )
    try:
        parse_where(search.where)
    except IliasError as error:
        raise RunConfigError(f"{origin}: [search] where: {error}") from None
    if parsed.dataset.crop_queries and parsed.dataset.mask_queries:
        raise RunConfigError(
            f"{origin}: [dataset] crop_queries and mask_queries: choose one (the reference's "
            "run scripts use neither: queries whole)"
        )
    extraction = parsed.extraction
    try:
        check_device(extraction.device)
        check_precision(extraction.precision)
    except IliasError as error:
        raise RunConfigError(f"{origin}: [extraction] {str(error).lstrip('-')}") from None
    if extraction.decode_threads is not None and extraction.decode_threads < 1:
        raise RunConfigError(f"{origin}: [extraction] decode_threads must be at least 1")
    output = resolve(parsed.output.dir) or (base / "runs" / name).resolve()
    return RunConfig(
        name=name,
        kind=kind,
        dataset=dataset,
        distractors=_resolve_spec(parsed.dataset.distractors, base, origin),
        select=resolve(parsed.dataset.select),
        taxonomy=resolve(parsed.dataset.taxonomy),
        encoder=parsed.encoder.spec,
        resolution=parsed.encoder.resolution,
        adaptation=resolve(parsed.encoder.adaptation),
        store=_resolve_store(parsed.store.spec, base, origin),
        collection=parsed.store.collection,
        scheduler=parsed.extraction.scheduler,
        workers=parsed.extraction.workers,
        batch_size=parsed.extraction.batch_size,
        device=extraction.device,
        precision=extraction.precision,
        decode_threads=extraction.decode_threads,
        draft=extraction.draft,
        search=EXACT
        if search.exact
        else SearchParams(
            hnsw_ef=search.hnsw_ef, oversampling=search.oversampling, rescore=search.rescore
        ),
        crop_queries=parsed.dataset.crop_queries,
        mask_queries=parsed.dataset.mask_queries,
        k=search.k,
        where=tuple(search.where),
        rerank=tuple(parsed.rerank.steps),
        ames_weights=resolve(parsed.rerank.ames_weights),
        breakdowns=parsed.metrics.breakdowns,
        text_queries=parsed.metrics.text_queries,
        check_ids=parsed.metrics.check_ids,
        output=output,
        similarities=formats,
        plots=parsed.output.plots,
        compare_with=resolve(parsed.output.compare_with),
        overwrite=parsed.output.overwrite,
        raw={section: dict(body) for section, body in data.items()},
        source=source,
    )


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_variables(value: str, origin: str = "run description") -> str:
    """``${NAME}`` replaced by the environment variable; ``${ILIAS_HOME}`` is ilias's data
    folder even when unset (``~/.local/share/ilias``), so a run file written against it
    follows ``ILIAS_HOME`` as ``ilias demo`` does. Any other unset variable is refused."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "ILIAS_HOME":
            return str(data_home())
        if name not in os.environ:
            raise RunConfigError(
                f"{origin}: {value!r} uses ${{{name}}}, which is not set; set it or write "
                "the path out"
            )
        return os.environ[name]

    return _VARIABLE.sub(value_of, value)


def _resolve_spec(spec: str | None, base: Path, origin: str) -> str | None:
    """A distractor path or shard pattern relative to the config file; URLs as written."""
    if spec is None or "://" in spec:
        return spec
    path = Path(expand_variables(spec, origin)).expanduser()
    return str(path if path.is_absolute() else base / path)


def _resolve_store(spec: str, base: Path, origin: str) -> str:
    """``edge:relative/path`` is relative to the config file, like every other path."""
    kind, sep, rest = spec.partition(":")
    if kind == "edge" and sep and rest:
        path = Path(expand_variables(rest, origin)).expanduser()
        return f"edge:{path if path.is_absolute() else (base / path).resolve()}"
    return spec


def _check_dataset(config: RunConfig) -> None:
    """An ILIAS run's dataset and distractors exist, named by their keys when not (checked
    before anything is loaded; the loader alone could only say what it expected)."""
    origin = config.source.name if config.source else "run description"
    hint = (
        f"`ilias demo` writes its dataset under ILIAS_HOME ({data_home()}); write paths "
        "as ${ILIAS_HOME}/... to follow it"
    )
    if not config.dataset.exists():
        raise RunConfigError(f"{origin}: [dataset] path {config.dataset}: no such folder. {hint}")
    if not is_ilias_layout(config.dataset):
        raise RunConfigError(
            f"{origin}: [dataset] path {config.dataset} is not an ILIAS-layout dataset (no "
            "<instance>/query/ folder in it); point it at the folder of instances"
        )
    distractors = config.distractors
    if distractors is None or "://" in distractors or any(c in distractors for c in "*?[{"):
        return  # a shard pattern or URL: the loader expands it and names what it lacks
    if not Path(distractors).exists():
        raise RunConfigError(
            f"{origin}: [dataset] distractors {distractors}: no such file or folder. {hint}"
        )


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
        if config.ames_weights is None:
            raise RunConfigError(
                "[rerank] ames needs [rerank] ames_weights = FILE, a published AMES checkpoint "
                "(none ship with ilias)"
            )
        from ilias.rerank.ames import load_ames

        try:  # the file's layout is checked now, before any extraction
            load_ames(config.ames_weights)
        except IliasError as error:
            raise RunConfigError(f"[rerank] ames_weights: {error}") from None
    try:
        return len(steps) != len(config.rerank) or any(
            step.needs_local for step in parse_rerankers(steps)
        )
    except IliasError as error:
        raise RunConfigError(f"[rerank] steps: {error}") from error


def _collection_name(config: RunConfig, benchmark: Benchmark, spec: str) -> str:
    """One collection per (dataset, encoder, resolution, selection) unless the config
    names one: a selected (mini) load never mixes with a full one."""
    if config.collection:
        return config.collection
    digest = hashlib.sha1(f"{spec}|{config.resolution}".encode()).hexdigest()[:8]
    selection = f"-{selection_tag(config.select)}" if config.select else ""
    return f"{benchmark.name}-{digest}{selection}"


# ----------------------------------------------------------------------------- a run


def run_config(
    path: Path | str | RunConfig,
    *,
    overwrite: bool | None = None,
    scheduler: str | None = None,
    progress: Progress | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Path:
    """Run a run description; returns the results folder.

    ``overwrite``, ``scheduler``, ``device`` and ``precision`` override the file's
    ``[output] overwrite`` and ``[extraction]`` keys (a CLI flag, a test). Errors a user
    can fix raise ``IliasError`` before any expensive step where they can be seen early.
    The queries and scores come from ``ilias.query.evaluate_collection``; this function adds
    the load before and the results folder after.
    """
    started = time.perf_counter()
    config = path if isinstance(path, RunConfig) else load_run_config(path)
    if overwrite is not None:
        config = dataclasses.replace(config, overwrite=overwrite)
    if scheduler is not None:
        config = dataclasses.replace(config, scheduler=scheduler)
    if device is not None:
        config = dataclasses.replace(config, device=check_device(device))
    if precision is not None:
        config = dataclasses.replace(config, precision=check_precision(precision))
    if config.kind != "ilias":
        return _run_protocol(config, progress, started)
    needs_local = _check_rerank(config)
    spec = encoder_spec(config)
    _check_output(config)
    _check_dataset(config)
    taxonomy = read_taxonomy(config.taxonomy) if config.taxonomy else None
    source = open_dataset(config.dataset, config.distractors, config.select)
    benchmark = source.benchmark
    assert benchmark is not None  # _check_dataset checked the ILIAS layout
    # The ids inside tar shards are only known once read: check_ids cannot list them.
    check_ids = config.check_ids and not source.tar_shards
    if config.check_ids and source.tar_shards:
        logger.info("%s: check_ids skipped: distractors come from tar shards", config.name)
    collection = _collection_name(config, benchmark, spec)

    report = _stage_reporter(progress)
    with open_store(config.store) as store:
        options = _extraction_options(config, spec, LocalConfig() if needs_local else None)
        load = load_collection(
            source, store, collection, options, metadata=source.metadata,
            progress=report("extract"),
        )  # fmt: skip
        info = store.info(collection)
        evaluation = evaluate_collection(
            store,
            collection,
            benchmark,
            kinds=("image", "text") if config.text_queries else ("image",),
            k=config.k,
            filter=parse_where(config.where),
            params=config.search,
            crop_queries=config.crop_queries,
            mask_queries=config.mask_queries,
            rerank=config.rerank,
            ames_weights=str(config.ames_weights) if config.ames_weights else None,
            breakdowns=config.breakdowns,
            taxonomy=taxonomy,
            check_database=check_ids,
            progress=progress,
            device=config.device,
            precision=config.precision,
        )
    timings = {
        "load_startup_s": load.startup_seconds,  # starting the workers, apart from the rate
        "load_extract_s": load.extract_seconds,
        "load_index_s": load.index_seconds,
    }
    timings |= evaluation.timings

    began = time.perf_counter()
    _clear_previous_run(config)
    files: dict[str, Any] = {
        "similarities": write_similarity_files(evaluation, config.output, config.similarities)
    }
    write_per_query(config.output / PER_QUERY_FILE, per_query_rows(evaluation))
    if config.plots:
        files["plots"] = plot_evaluation(
            evaluation, config.output, config.name, compare_with=config.compare_with
        )
    files["per_query"] = PER_QUERY_FILE
    timings["write_s"] = time.perf_counter() - began
    timings["total_s"] = time.perf_counter() - started

    queries = evaluation_summary(evaluation)
    if not config.text_queries:
        queries["text"] = {"skipped": "[metrics] text_queries = false"}
    image = evaluation.runs.get("image")
    metrics = {
        "name": config.name,
        "ilias_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "k": config.k,
        "map": image.scores.map if image else None,
        "oracle": image.scores.oracle if image else None,
        "n_queries": image.scores.n_queries if image else 0,
        "queries": queries,
        "dataset": {
            "kind": config.kind,
            "name": benchmark.name,
            "path": config.dataset,
            "distractors": config.distractors,
            "select": config.select,
            "taxonomy": config.taxonomy,
            "crop_queries": config.crop_queries,
            "mask_queries": config.mask_queries,
            "image_queries": len(benchmark.image_queries),
            "text_queries": len(benchmark.text_queries),
            "database": info.points,  # positives + the distractors loaded (tar shards too)
            "positives": benchmark.n_positives,
        },
        "encoder": {
            "spec": spec,
            "resolution": evaluation.resolution,
            "adaptation": config.adaptation,
        },
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
            "mode": "exact" if config.search == EXACT else "approximate",
            "exact": config.search.exact,
            "hnsw_ef": config.search.hnsw_ef,
            "oversampling": config.search.oversampling,
            "rescore": config.search.rescore,
            "where": list(config.where),
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


def _stage_reporter(
    progress: Progress | None,
) -> Callable[[str], Callable[[int, int | None], None] | None]:
    """``report(stage)``: a ``progress(done, total)`` callback for one stage, or None."""

    def report(stage: str) -> Callable[[int, int | None], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total or done)

    return report


def _extraction_options(
    config: RunConfig, spec: str, local: LocalConfig | None = None
) -> ExtractionOptions:
    """How a scripted run extracts: its [encoder] and [extraction] sections."""
    return ExtractionOptions(
        encoder=spec,
        resolution=config.resolution,
        batch_size=config.batch_size,
        scheduler=config.scheduler,
        n_workers=config.workers,
        local=local,
        device=config.device,
        precision=config.precision,
        decode_threads=config.decode_threads,
        draft=config.draft,
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
    names = [*files.get("similarities", []), *files.get("plots", []), *files.get("tables", [])]
    names += [files.get("per_query", PER_QUERY_FILE), METRICS_FILE]
    for name in names:
        target = config.output / str(name)
        if target.parent == config.output and target.is_file():
            target.unlink()


# ------------------------------------------------------------ GPR1200 and UnED runs

PROTOCOL_TABLES = {"gpr1200": "subsets.csv", "uned": "domains.csv"}


def _run_protocol(config: RunConfig, progress: Progress | None, started: float) -> Path:
    """A GPR1200 or UnED run: load the images its authors rank into the collection, search
    them (exact by default), score them by the authors' protocol, write the results folder:
    ``metrics.json``, a per-subset / per-domain CSV table and its bar plot."""
    import csv

    from ilias.loader import load_gpr1200, load_uned
    from ilias.query import evaluate_gpr1200, evaluate_uned

    spec = encoder_spec(config)
    _check_output(config)
    gpr1200 = config.kind == "gpr1200"
    dataset: Gpr1200Dataset | UnedDataset
    if gpr1200:
        dataset = load_gpr1200(config.dataset)
        records = list(dataset.records)
        sizes = {name: end - start for name, start, end in dataset.subsets}
    else:
        dataset = load_uned(config.dataset)
        records = dataset.index_records
    digest = hashlib.sha1(f"{spec}|{config.resolution}".encode()).hexdigest()[:8]
    collection = config.collection or f"{config.kind}-{digest}"

    report = _stage_reporter(progress)
    with open_store(config.store) as store:
        options = _extraction_options(config, spec)
        metadata = {"dataset": str(config.dataset), "dataset_kind": config.kind}
        load = load_collection(
            records, store, collection, options, metadata=metadata, progress=report("extract")
        )
        info = store.info(collection)
        if isinstance(dataset, Gpr1200Dataset):
            run = evaluate_gpr1200(
                store, collection, dataset, params=config.search, progress=progress,
                subsets=dataset.subsets,
            )  # fmt: skip
        else:
            run = evaluate_uned(store, collection, dataset, params=config.search, progress=progress)
    began = time.perf_counter()
    _clear_previous_run(config)
    config.output.mkdir(parents=True, exist_ok=True)
    table = PROTOCOL_TABLES[config.kind]
    scores = run.scores.to_dict()
    with (config.output / table).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        if gpr1200:
            writer.writerow(["subset", "map", "n_images"])
            writer.writerows([n, f"{v:.4f}", sizes[n]] for n, v in scores["subsets"].items())
            writer.writerow(["all", f"{scores['map']:.4f}", run.n_queries])
            series = {"mAP": {**scores["subsets"], "all": scores["map"]}}
        else:
            writer.writerow(["domain", "r_at_1", "mmp_at_5", "n_queries", "n_without_relevant"])
            for name, row in scores["domains"].items():
                writer.writerow(
                    [name, f"{row['r_at_1']:.4f}", f"{row['mmp_at_5']:.4f}", row["n_queries"],
                     row["n_without_relevant"]]
                )  # fmt: skip
            writer.writerow(["mean", f"{scores['r_at_1']:.4f}", f"{scores['mmp_at_5']:.4f}",
                             run.n_queries, ""])  # fmt: skip
            series = {
                "R@1": {n: r["r_at_1"] for n, r in scores["domains"].items()},
                "mMP@5": {n: r["mmp_at_5"] for n, r in scores["domains"].items()},
            }
    files: dict[str, Any] = {"tables": [table], "plots": []}
    if config.plots:
        from ilias.eval.plots import plot_named_scores

        what = "mAP per subset" if gpr1200 else "R@1 and mMP@5 per domain"
        plot = plot_named_scores(
            series, config.output / f"{config.kind}.png", title=f"{config.name}: {what}"
        )
        files["plots"] = [plot.name]
    timings = {
        "load_startup_s": load.startup_seconds,
        "load_extract_s": load.extract_seconds,
        "load_index_s": load.index_seconds,
        "encode_s": run.encode_seconds,
        "search_s": run.search_seconds,
        "score_s": run.score_seconds,
        "write_s": time.perf_counter() - began,
        "total_s": time.perf_counter() - started,
    }
    metrics = {
        "name": config.name,
        "ilias_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        config.kind: scores,
        "n_queries": run.n_queries,
        "dataset": {"kind": config.kind, "path": config.dataset, "images": len(records)},
        "encoder": {"spec": spec, "resolution": config.resolution},
        "store": {
            "spec": config.store,
            "collection": collection,
            "location": info.location,
            "points": info.points,
            "loaded_now": load.loaded,
            "already_present": load.already_present,
            "unreadable": [f"{f.id}: {f.reason}" for f in load.failures],
        },
        "search": {"mode": "exact" if config.search == EXACT else "approximate"},
        "timings": timings,
        "files": files,
        "config_file": config.source,
        "config": config.raw,
    }
    write_metrics(config.output / METRICS_FILE, metrics)
    return config.output


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
