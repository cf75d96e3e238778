"""The ``ilias`` command: parses options, calls the library, prints. No logic of its own.

Only light modules are imported here (typer, rich, ``ilias.config``, ``ilias.errors``,
``ilias.types``, the ``--where`` parser), so that ``ilias --help`` and option errors answer
at once; each command imports the stages it uses (torch, dask, Qdrant) when it runs.

No ``from __future__ import annotations`` here: typer reads every command's annotations to
build the help, and as strings each one is compiled and evaluated again on every run
(``typing.get_type_hints``), 60 ms of ``ilias --help``; evaluated once at import, they cost
nothing more.
"""

import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ilias.cli_help import HelpGroup
from ilias.config import Settings, data_home
from ilias.errors import CollectionBusy, DiskFull, IliasError
from ilias.types import LocalConfig, SearchParams

if TYPE_CHECKING:
    from ilias.indexing.load import Upload

app = typer.Typer(
    cls=HelpGroup,  # help that reads right: flags as flags, brackets kept (ilias.cli_help)
    help="Instance-level image retrieval on Qdrant: load, search, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
try:
    _defaults = Settings()  # option defaults: environment > ilias.toml > built-in
except IliasError as _config_error:  # a malformed ilias.toml: one line, no traceback
    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(_config_error))}")
    sys.exit(1)

StoreOption = Annotated[
    str,
    typer.Option(
        "--store",
        envvar="ILIAS_STORE",
        help="edge:PATH (embedded Qdrant Edge) or http://host:6333[?shards=6&replicas=2] "
        "(a Qdrant server; API key in QDRANT_API_KEY).",
    ),
]
UploadOption = Annotated[
    str,
    typer.Option(
        "--upload",
        help="Who writes the vectors: auto (the Dask workers for a Qdrant server, this process "
        "for Edge), driver, or workers.",
    ),
]
CollectionOption = Annotated[
    str, typer.Option("--collection", "-c", envvar="ILIAS_COLLECTION", help="Collection name.")
]
StorageOption = Annotated[
    str,
    typer.Option(
        "--storage",
        help="Layout of a new collection: ram (float32 originals in RAM), disk (originals on "
        "disk, int8 and HNSW in RAM), compact (float16 originals and HNSW on disk), or auto "
        "(by its size and this machine's RAM).",
    ),
]
IndexOption = Annotated[
    str,
    typer.Option(
        "--index",
        help="Search index of a new collection: hnsw (a graph: sublinear, approximate), scan "
        "(every int8 copy scanned in parallel segments, then re-scored: linear, recall ~1), "
        "or auto (scan up to 1 GiB of int8 copies, e.g. 2M x 512; hnsw beyond).",
    ),
]
ExactOption = Annotated[
    bool,
    typer.Option(
        "--exact",
        help="Exact search (every vector, float32) instead of the collection's index (HNSW or "
        "int8 scan).",
    ),
]
EfOption = Annotated[int | None, typer.Option("--hnsw-ef", help="HNSW ef at search time.")]
OversamplingOption = Annotated[
    float | None, typer.Option("--oversampling", help="int8 oversampling factor (e.g. 2.0).")
]
RescoreOption = Annotated[
    bool, typer.Option("--rescore/--no-rescore", help="Re-score int8 candidates in float32.")
]
RerankOption = Annotated[
    list[str] | None,
    typer.Option(
        "--rerank",
        help="Re-rank the top k, in order: aqe[:n=1:alpha=1], cs, sp[:top=100], ames "
        "(cs/sp/ames need a collection loaded with --local); repeatable.",
    ),
]
AmesWeightsOption = Annotated[
    Path | None, typer.Option(help="AMES state dict for --rerank ames (none ship).")
]
WorkersOption = Annotated[
    int | None,
    typer.Option(
        help="Dask worker processes (local scheduler: 1 to 4 per CPU); with --features, the "
        "processes writing a bulk import (default: one per core, as the RAM allows)."
    ),
]
SchedulerOption = Annotated[
    str, typer.Option(help="local (worker processes on this machine), sync, or tcp://host:8786")
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="Where the encoder runs: auto (default: a CUDA GPU if torch sees one, one local "
        "worker per GPU; else the CPU), cpu, cuda or cuda:N."
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        help="auto (default: fp16 autocast on CUDA, as the reference; fp32 on the CPU), "
        "fp32, fp16 or bf16."
    ),
]
WhereOption = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        help="Payload filter: key=value, key=a|b (any), key>=x, key<x, ...; repeatable, all must "
        "hold (bounds on one key narrow one range).",
    ),
]


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=Console(stderr=True), show_path=False)
    if not verbose:
        # dask.distributed logs cluster start/stop at INFO from loggers it configures itself
        # (and re-configures per cluster); a handler filter is the one place that holds.
        handler.addFilter(_quiet_cluster_logs)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[handler],
    )


def _quiet_cluster_logs(record: logging.LogRecord) -> bool:
    noisy = record.name.startswith(("distributed", "dask"))
    return not noisy or record.levelno >= logging.WARNING


@app.command()
def load(
    dataset: Annotated[
        str | None,
        typer.Argument(
            help="ILIAS-layout folder, image folder, list file, or WebDataset tar shards "
            "(with --features: the dataset whose payload the points get)."
        ),
    ] = None,
    distractors: Annotated[
        str | None,
        typer.Option(
            help="Distractors (ILIAS layout only): a folder or list file of images, or "
            "WebDataset tar shards: a folder of .tar, a glob, a brace pattern "
            "('yfcc100m/{00000..00049}.tar') or a URL."
        ),
    ] = None,
    select: Annotated[
        Path | None,
        typer.Option(
            "--select",
            help="Selection list (mini-ILIAS: one sample key per line, plain or .gz): load "
            "only the listed distractors.",
        ),
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option(
            "--features",
            help="Load reference HDF5 feature files (index + features; a file, folder or "
            "glob; repeatable) instead of extracting; --encoder names the model that made them.",
        ),
    ] = None,
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
    encoder: Annotated[
        str, typer.Option(envvar="ILIAS_ENCODER", help="timm:NAME[@WEIGHTS] or open_clip:ARCH/TAG")
    ] = _defaults.encoder,
    resolution: Annotated[
        int | None,
        typer.Option(help="Larger image side, 32 to 4096; default: the ILIAS resolution rule."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass (1 to 4096).")] = 16,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = "local",
    versioned: Annotated[
        bool,
        typer.Option(
            "--versioned",
            help="Load into <collection>-v<N>, then point the alias <collection> at it in one "
            "atomic step (zero-downtime reload).",
        ),
    ] = False,
    keep: Annotated[
        int | None,
        typer.Option(help="With --versioned: versions to keep, the new one included."),
    ] = None,
    upload: UploadOption = "auto",
    storage: StorageOption = "auto",
    index: IndexOption = "auto",
    for_eval: Annotated[
        bool,
        typer.Option(
            "--for-eval",
            help="The collection is for exact evaluation: --index auto builds no HNSW graph "
            "(a scan collection at any size; the build only quantizes).",
        ),
    ] = False,
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="Also store local descriptors (a MAX_SIM multivector) for re-ranking."
        ),
    ] = False,
    local_top_k: Annotated[
        int, typer.Option(help="Local descriptors kept per database image (with --local).")
    ] = 100,
    local_detector: Annotated[
        Path | None,
        typer.Option(help="Learned patch scorer (weight, bias) choosing the kept patches."),
    ] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    decode_threads: Annotated[
        int | None,
        typer.Option(help="Decoding threads per worker (default: 1 on the CPU, up to 8 per GPU)."),
    ] = None,
    draft: Annotated[
        bool,
        typer.Option(
            "--draft/--no-draft",
            help="Decode JPEGs over 4x the resolution at 1/2 or 1/4 size (several times "
            "faster); --no-draft decodes every pixel, as the reference does.",
        ),
    ] = True,
    sync: Annotated[
        bool,
        typer.Option(
            "--sync",
            help="Make the collection follow the source: also remove the points whose image "
            "(or tar shard) is no longer in what is given; never on a partial listing.",
        ),
    ] = False,
    sync_all: Annotated[
        bool,
        typer.Option(
            "--sync-all",
            help="With --sync: allow a source that shares no image with the collection.",
        ),
    ] = False,
) -> None:
    """Extract descriptors with Dask and load them into a Qdrant collection (resumable)."""
    from ilias.indexing.limits import check_batch_size
    from ilias.indexing.store.base import check_name
    from ilias.indexing.store.layout import check_storage
    from ilias.indexing.store.search_index import check_index
    from ilias.loader import open_dataset

    # Light checks first: a typo is answered before torch, dask or any file is touched.
    check_storage(storage, "--storage")
    check_index(index, "--index")
    _check_sizes(workers, scheduler, resolution)
    check_batch_size(batch_size)
    check_name(collection)
    _check_sync_options(sync, sync_all, versioned, bool(features))
    if for_eval and index == "hnsw":
        raise IliasError("--for-eval builds no graph: drop --index hnsw (or --for-eval)")
    index = "scan" if for_eval else index
    if features:
        if versioned or local or select:
            raise IliasError(
                "--features loads the files as they are: drop --versioned / --local / --select"
            )
        return _load_features(features, dataset, distractors, store, collection, encoder,
                              resolution, storage, index, workers)  # fmt: skip
    if dataset is None:
        raise IliasError("pass a dataset (folder, list file, shards) or --features FILE to load")
    if keep is not None and not versioned:
        raise IliasError("--keep only applies to --versioned loads")
    source = open_dataset(dataset, distractors, select)  # shard patterns counted, lazily
    metadata = source.metadata
    from ilias.indexing import ExtractionOptions, load_collection, load_versioned

    options = ExtractionOptions(
        encoder=encoder,
        resolution=resolution,
        batch_size=batch_size,
        scheduler=scheduler,
        n_workers=workers,
        device=device or "auto",
        precision=precision or "auto",
        decode_threads=decode_threads,
        draft=draft,
        local=LocalConfig(
            top_k_database=local_top_k,
            detector=str(local_detector.resolve()) if local_detector else None,
        )
        if local
        else None,
    )
    with _open_store(store) as backend, _progress() as bar, _held_by_service(collection):
        # Images inside tar shards are counted as they are read: no total until then. The
        # second bar counts partitions: chunks of listed images, and each tar shard.
        task = bar.add_task("images", total=None if source.tar_shards else len(source.records))
        parts = bar.add_task("partitions", total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        def shard_progress(done: int, total: int | None) -> None:
            bar.update(parts, completed=done, total=total)

        swap = None
        if versioned:
            swap = load_versioned(
                source, backend, collection, options, metadata=metadata, progress=progress,
                upload=cast("Upload", upload), keep=keep, shard_progress=shard_progress,
                storage=storage, index=index,
            )  # fmt: skip
            report = swap.report
        elif sync:
            synced = _sync(source, backend, collection, options, progress, shard_progress,
                           upload, storage, index, sync_all)  # fmt: skip
            report = synced.load
        else:
            report = load_collection(
                source, backend, collection, options, metadata=metadata, progress=progress,
                upload=cast("Upload", upload), shard_progress=shard_progress, storage=storage,
                index=index,
            )  # fmt: skip
        info = backend.info(collection)
    console.print(
        f"[bold]{report.collection}[/]: {report.loaded} loaded, {report.already_present} already "
        f"present, {len(report.failures)} skipped (unreadable); {info.points} points in "
        f"{info.location}"
    )
    if report.changed:
        console.print(f"{report.changed} stored images had changed on disk: extracted again")
    if report.shards:
        console.print(
            f"{report.shards} tar shards: {report.shards_skipped} already complete (not read), "
            f"{len(report.shard_errors)} damaged; {report.skipped_members} members that are no "
            f"image skipped, {report.not_selected} samples not selected"
        )
    if report.selection_listed:
        console.print(
            f"selection: {report.selection_found} of its {report.selection_listed} keys found "
            "in these shards (the others are in shards not loaded, or in none)"
        )
    for shard, reason in report.shard_errors.items():
        console.print(f"  [yellow]damaged shard[/] {shard}: {reason} (what it held is kept)")
    if report.uploaded_by_workers:
        console.print(f"{report.uploaded_by_workers} points uploaded by the Dask workers directly")
    if swap is not None:
        resumed = " (resumed)" if swap.resumed else ""
        dropped = f"; dropped {', '.join(swap.dropped)}" if swap.dropped else ""
        console.print(
            f"alias [bold]{swap.alias}[/] -> {swap.collection}{resumed}, was "
            f"{swap.previous or 'new'}{dropped}"
        )
    if report.loaded:
        console.print(
            f"extraction {report.extract_seconds:.1f} s ({report.images_per_s:.1f} images/s) "
            f"after {report.startup_seconds:.1f} s starting the workers, "
            f"index build {report.index_seconds:.1f} s"
        )
    for failure in report.failures[:10]:
        console.print(f"  [yellow]skipped[/] {failure.id}: {failure.reason}")
    if sync:
        _print_sync(synced)


def _load_features(
    files: list[str],
    dataset: str | None,
    distractors: str | None,
    store: str,
    collection: str,
    encoder: str,
    resolution: int | None,
    storage: str,
    index: str,
    workers: int | None = None,
) -> None:
    """``ilias load [DATASET] --features FILE...``: reference HDF5 features into a
    collection, each point with the payload an image load of DATASET would give it."""
    from ilias.indexing import expand_feature_paths, import_features
    from ilias.loader import open_dataset

    if distractors and dataset is None:
        raise IliasError("--distractors needs the dataset folder: ilias load DATASET ...")
    paths = expand_feature_paths(files)
    source = open_dataset(dataset, distractors) if dataset is not None else None
    with _open_store(store) as backend, _progress() as bar:
        task = bar.add_task("features", total=None)
        report = import_features(
            paths, backend, collection, encoder=encoder, resolution=resolution,
            records=source.records if source else (),
            metadata=source.metadata if source else None,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            storage=storage, index=index, workers=workers,
        )  # fmt: skip
    console.print(
        f"[bold]{collection}[/]: {report.loaded} loaded, {report.already_present} already "
        f"present, from {len(report.files)} feature files; {report.points} points"
    )
    if report.loaded:
        console.print(
            f"import {report.import_seconds:.1f} s ({report.loaded / report.import_seconds:,.0f} "
            f"points/s), index build {report.build_seconds:.1f} s"
        )
    if report.query_files:
        console.print(
            f"skipped {len(report.query_files)} query files (queries are encoded at evaluation "
            f"time): {', '.join(Path(f).name for f in report.query_files)}"
        )


@app.command()
def search(
    image: Annotated[Path | None, typer.Option("--image", help="Query image.")] = None,
    text: Annotated[
        str | None, typer.Option("--text", help="Text query (needs a vision-language encoder).")
    ] = None,
    weight: Annotated[
        float, typer.Option(help="Text share of the score when both --image and --text.")
    ] = 0.5,
    bbox: Annotated[str | None, typer.Option(help="Crop the query to 'x,y,w,h' first.")] = None,
    k: Annotated[int, typer.Option("-k", help="Number of hits.")] = 10,
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
    where: WhereOption = None,
    exact: ExactOption = False,
    hnsw_ef: EfOption = None,
    oversampling: OversamplingOption = None,
    rescore: RescoreOption = True,
    rerank: RerankOption = None,
    ames_weights: AmesWeightsOption = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the hits as JSON: [{rank, id, score, payload}, ...]."),
    ] = False,
    encoder: Annotated[
        str | None,
        typer.Option(
            "--encoder",
            help="Encoder spec for a collection that records none (made by another tool); "
            "ilias collections always use their own.",
        ),
    ] = None,
) -> None:
    """Search by image, text, or both (hybrid): prints the top-k hits with their payload."""
    from ilias.indexing import cached_encoder
    from ilias.query import QueryImage, Retriever, rerankers_for_collection
    from ilias.query.report import HIT_COLUMNS, hits_json, hits_table_rows

    if image is None and text is None:
        raise IliasError("give --image PATH, --text 'words', or both for a hybrid search")
    box = parse_bbox(bbox)
    params = SearchParams(exact=exact, hnsw_ef=hnsw_ef, oversampling=oversampling, rescore=rescore)
    search_filter = parse_where(where)
    with _open_store(store) as backend:
        retriever = Retriever(
            backend, collection, encoder=cached_encoder(encoder) if encoder else None
        )
        weights = str(ames_weights) if ames_weights else None
        steps = rerankers_for_collection(backend, collection, rerank or [], weights)
        timings: dict[str, float] = {}
        hits = retriever.search(
            QueryImage(image, box) if image is not None else None, text, weight=weight,
            rerank=steps, k=k, filter=search_filter, params=params, timings=timings,
        )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(hits_json(hits), indent=2))
        return
    described = " + ".join(str(q) for q in (image, text and repr(text)) if q)
    table = Table(title=f"top {k} in {collection} for {described}")
    for column in HIT_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in hits_table_rows(hits):
        table.add_row(*row.cells())
    console.print(table)
    if timings:
        console.print("  ".join(f"{name} {1000 * t:.1f} ms" for name, t in timings.items()))


class _DefaultCommandGroup(TyperGroup):
    """``ilias eval [DATASET] [OPTIONS]`` keeps scoring the benchmark as before; a first
    argument that names a subcommand (``run``, ``compare``, ``score``) runs that instead."""

    default_command = "benchmark"

    def parse_args(self, ctx, args):  # click's signature
        first = args[0] if args else None
        if first not in self.commands and first not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)

    def format_help(self, ctx, formatter) -> None:  # click's signature
        """The group's help and subcommands, then the default command's usage and options
        as ``ilias eval`` takes them (no subcommand name)."""
        super().format_help(ctx, formatter)
        default = self.commands[self.default_command]
        default.format_help(type(ctx)(default, info_name=ctx.info_name, parent=ctx.parent),
                            formatter)  # fmt: skip


eval_app = typer.Typer(
    cls=_DefaultCommandGroup,
    help="Evaluate. Without a subcommand, `ilias eval [DATASET] [OPTIONS]` runs `benchmark`: "
    "the dataset's queries against the collection (mAP@k, oracle@k); its options are listed "
    "below the subcommands.",
)
app.add_typer(eval_app, name="eval")


@eval_app.command("run")
def eval_run(
    config: Annotated[Path, typer.Argument(help="Run description (TOML); see docs/eval.md.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run already in the output folder.")
    ] = False,
    scheduler: Annotated[
        str | None, typer.Option(help="Override [extraction] scheduler: local, sync, tcp://...")
    ] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Scripted run: load if needed, query, score, write the results folder and plots.

    --device / --precision override the file's [extraction] device / precision."""
    from ilias.eval.report import read_metrics
    from ilias.runs import run_config

    with _progress() as bar:
        progress = _staged(bar)
        folder = run_config(
            config, overwrite=overwrite or None, scheduler=scheduler, progress=progress,
            device=device, precision=precision,
        )  # fmt: skip
    metrics = read_metrics(folder)
    if "gpr1200" in metrics:
        scores = metrics["gpr1200"]
        parts = "  ".join(f"{n} {v:.2f}" for n, v in scores["subsets"].items())
        console.print(
            f"[bold]{metrics['name']}[/] GPR1200 [bold green]mAP = {scores['map']:.2f}[/]  {parts}"
        )
    if "uned" in metrics:
        scores = metrics["uned"]
        console.print(
            f"[bold]{metrics['name']}[/] UnED [bold green]R@1 = {scores['r_at_1']:.2f}  "
            f"mMP@5 = {scores['mmp_at_5']:.2f}[/] (mean over {len(scores['domains'])} domains)"
        )
    for kind, result in metrics.get("queries", {}).items():
        if "map" in result:
            console.print(
                f"[bold]{metrics['name']}[/] {kind} queries ({result['n_queries']}): "
                f"[bold green]mAP@{metrics['k']} = {result['map']:.2f}[/]  "
                f"oracle@{metrics['k']} = {result['oracle']:.2f}"
            )
        else:
            console.print(f"{kind} queries skipped: {result['skipped']}")
    console.print(f"results in {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")


@eval_app.command("compare")
def eval_compare(
    run_a: Annotated[Path, typer.Argument(help="Results folder of run A.")],
    run_b: Annotated[Path, typer.Argument(help="Results folder of run B.")],
    plot: Annotated[
        Path | None, typer.Option(help="Also draw per-query AP, A vs B, into this PNG.")
    ] = None,
) -> None:
    """Two runs side by side: every number of both metrics.json, with B - A."""
    from ilias.runs import compare_runs

    comparison = compare_runs(run_a, run_b, plot=plot)
    table = Table(title=f"A = {comparison.name_a}   B = {comparison.name_b}")
    for column in ("metric", "A", "B", "B - A"):
        table.add_column(column, justify="left" if column == "metric" else "right")

    def cell(value: object) -> str:
        return f"{value:.3f}" if isinstance(value, float) else "-" if value is None else str(value)

    for row in comparison.rows:
        delta = "" if row.delta is None else f"{row.delta:+.3f}"
        table.add_row(row.metric, cell(row.a), cell(row.b), delta)
    console.print(table)
    if comparison.scatter:
        console.print(f"per-query AP scatter: {comparison.scatter}")


@eval_app.command("score")
def eval_score(
    similarity_file: Annotated[Path, typer.Argument(help="Reference .json or .pkl file.")],
    dataset: Annotated[Path, typer.Option(help="ILIAS folder holding image_ids/.")],
    k: Annotated[int, typer.Option("-k", help="mAP@k cut-off.")] = 1000,
    check_ids: Annotated[
        bool, typer.Option("--check-ids", help="Also refuse unknown database ids.")
    ] = False,
    taxonomy: Annotated[
        Path | None, typer.Option(help="Taxonomy JSON for category breakdowns.")
    ] = None,
) -> None:
    """Score a similarity file as the reference evaluate.py does (image, text, all)."""
    from ilias.eval import read_taxonomy, score_similarity_file

    scores = score_similarity_file(
        similarity_file, dataset, k=k, check_ids=check_ids, breakdowns=True,
        taxonomy=read_taxonomy(taxonomy) if taxonomy else None,
    )  # fmt: skip
    for kind, result in (("image", scores.image), ("text", scores.text), ("all", scores.all)):
        if result is not None:
            console.print(
                f"{kind} queries ({result.n_queries}): mAP@{k} = {result.map:.2f}  "
                f"oracle@{k} = {result.oracle:.2f}"
            )
    missing_images = len(scores.missing) - len(scores.missing_text)
    if missing_images:
        console.print(f"{missing_images} dataset image queries are not in the file (skipped)")
    if scores.missing_text and scores.text is None:  # a file of image queries only
        console.print(f"no text queries in the file (the dataset has {len(scores.missing_text)})")
    elif scores.missing_text:
        console.print(
            f"{len(scores.missing_text)} dataset text queries are not in the file (skipped)"
        )
    for kind, breakdown in (("image", scores.image_breakdowns), ("text", scores.text_breakdowns)):
        if breakdown is not None:
            console.print_json(data={kind: breakdown.to_dict()})


@eval_app.command("benchmark")
def evaluate(
    dataset: Annotated[
        Path | None, typer.Argument(help="ILIAS-layout folder; default: the one loaded.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="mAP@k cut-off.")] = 1000,
    queries: Annotated[
        str,
        typer.Option(
            help="image, text, or hybrid (image + its instance's text); several as "
            "image,text (exact image and text queries are ranked in one pass)."
        ),
    ] = "image",
    weight: Annotated[float, typer.Option(help="Text share of hybrid scores.")] = 0.5,
    rerank: RerankOption = None,
    ames_weights: AmesWeightsOption = None,
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
    where: WhereOption = None,
    approximate: Annotated[
        bool,
        typer.Option(
            "--approximate/--exact",
            help="The collection's index, an int8 scan or HNSW (recall@k against exact is "
            "measured on a sample), instead of the reference's exact ranking (the default).",
        ),
    ] = False,
    hnsw_ef: EfOption = None,
    oversampling: OversamplingOption = None,
    rescore: RescoreOption = True,
    crop_queries: Annotated[
        bool,
        typer.Option(
            "--crop-queries", help="Crop image queries to their boxes (the reference does not)."
        ),
    ] = False,
    mask_queries: Annotated[
        bool,
        typer.Option(
            "--mask-queries",
            help="Zero image queries outside their boxes after preprocessing, as the "
            "reference's --masking (off by default there too).",
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="Write per-query AP and the totals as JSON.")
    ] = None,
    select: Annotated[
        Path | None,
        typer.Option(
            "--select",
            help="Selection list (mini-ILIAS): search only the listed distractors, with a "
            "payload filter inside Qdrant (tags the collection once).",
        ),
    ] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    query_features: Annotated[
        Path | None,
        typer.Option(
            "--query-features",
            help="Folder of the reference's features_image_queries.hdf5 / "
            "features_text_queries.hdf5: rank these instead of encoding the queries (no "
            "model, no images; exact search).",
        ),
    ] = None,
) -> None:
    """Run the dataset's queries against the collection: mAP@k and oracle@k."""
    from ilias.loader import benchmark_for_collection
    from ilias.query import evaluate_collection
    from ilias.query.report import run_summary_json
    from ilias.query.selection import apply_selection

    tuned = hnsw_ef is not None or oversampling is not None or not rescore
    if tuned and not approximate:
        raise IliasError("--hnsw-ef, --oversampling and --no-rescore tune --approximate search")
    params = (
        SearchParams(hnsw_ef=hnsw_ef, oversampling=oversampling, rescore=rescore)
        if approximate
        else None  # exact: the reference's ranking
    )
    search_filter = parse_where(where)
    with _open_store(store) as backend:
        meta = backend.collection_config(collection).metadata
        benchmark = benchmark_for_collection(meta, dataset)
        if select is not None:
            applied = apply_selection(backend, collection, select)
            search_filter = {**(search_filter or {}), **applied.filter}
            console.print(
                f"selection {applied.tag}: {applied.distractors} of its {applied.listed} "
                f"distractors in {collection}, {applied.points} points searched"
                + (" (tagged before)" if applied.reused else "")
            )
        kinds = tuple(dict.fromkeys(q.strip() for q in queries.split(",") if q.strip()))
        if not kinds:
            raise IliasError("--queries: name image, text or hybrid (several: image,text)")
        if query_features is not None and approximate:
            raise IliasError("--query-features ranks exactly: drop --approximate")
        with _progress() as bar:
            evaluation = evaluate_collection(
                backend, collection, benchmark, kinds=kinds, k=k, weight=weight,
                filter=search_filter, params=params, rerank=rerank or (),
                ames_weights=str(ames_weights) if ames_weights else None, progress=_staged(bar),
                crop_queries=crop_queries, mask_queries=mask_queries, device=device or "auto",
                precision=precision or "auto", query_features=query_features,
            )  # fmt: skip
    runs = {kind: evaluation.run(kind) for kind in kinds}
    for kind, run in runs.items():
        _print_scores(run, f"{benchmark.name} ({kind})", collection)
    if output:
        written = (
            run_summary_json(runs[kinds[0]])
            if len(kinds) == 1
            else {
                "k": k,
                "queries": {kind: run_summary_json(r) for kind, r in runs.items()},
                "timings": evaluation.timings,
            }
        )
        output.write_text(json.dumps(written, indent=2) + "\n")
        console.print(f"per-query AP written to {output}")


def _protocol_run(kind: str, dataset: Path, options: dict) -> None:
    """``ilias eval gpr1200 DIR`` / ``ilias eval uned DIR``: a run description made from
    the options, run as ``ilias eval run`` runs a file (same results folder)."""
    from ilias.eval.report import read_metrics
    from ilias.runs import parse_run_config, run_config

    _check_sizes(options["workers"], options["scheduler"], options["resolution"])
    data: dict[str, dict] = {
        "run": {"name": options["name"] or kind},
        "dataset": {"kind": kind, "path": str(dataset)},
        "encoder": {"spec": options["encoder"]},
        "extraction": {"scheduler": options["scheduler"]},
        "store": {"spec": options["store"]},
        "output": {"dir": str(options["output"] or Path("runs") / kind)},
    }
    for section, key in (
        ("encoder", "resolution"),
        ("extraction", "workers"),
        ("extraction", "device"),
        ("extraction", "precision"),
    ):
        if options[key] is not None:
            data[section][key] = options[key]
    if options["collection"]:
        data["store"]["collection"] = options["collection"]
    config = parse_run_config(data, base=Path.cwd())
    with _progress() as bar:
        folder = run_config(config, overwrite=options["overwrite"] or None, progress=_staged(bar))
    metrics = read_metrics(folder)
    scores = metrics[kind]
    if kind == "gpr1200":
        parts = "  ".join(f"{n} {v:.2f}" for n, v in scores["subsets"].items())
        console.print(f"GPR1200 [bold green]mAP = {scores['map']:.2f}[/]  {parts}")
    else:
        console.print(
            f"UnED [bold green]R@1 = {scores['r_at_1']:.2f}  mMP@5 = {scores['mmp_at_5']:.2f}[/]"
        )
    console.print(f"results in {folder}: {', '.join(sorted(p.name for p in folder.iterdir()))}")


ProtocolEncoderOption = Annotated[
    str, typer.Option(envvar="ILIAS_ENCODER", help="timm:NAME[@WEIGHTS] or open_clip:ARCH/TAG")
]
ProtocolOutputOption = Annotated[
    Path | None, typer.Option(help="Results folder; default: runs/<benchmark>.")
]
ProtocolCollectionOption = Annotated[
    str | None, typer.Option("--collection", "-c", help="Collection; default: one per encoder.")
]
ProtocolResolutionOption = Annotated[
    int | None, typer.Option(help="Larger image side; default: the ILIAS resolution rule.")
]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Replace a previous run.")]


@eval_app.command("gpr1200")
def eval_gpr1200(
    dataset: Annotated[Path, typer.Argument(help="GPR1200 images folder ({class}_{name}.jpg).")],
    encoder: ProtocolEncoderOption = _defaults.encoder,
    resolution: ProtocolResolutionOption = None,
    store: StoreOption = _defaults.store,
    collection: ProtocolCollectionOption = None,
    output: ProtocolOutputOption = None,
    scheduler: SchedulerOption = "local",
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """GPR1200 end to end: load every image, rank all of them for each, mAP per subset."""
    _protocol_run("gpr1200", dataset, {**locals(), "name": None})


@eval_app.command("uned")
def eval_uned(
    dataset: Annotated[Path, typer.Argument(help="UnED data folder (info_files/, images/).")],
    encoder: ProtocolEncoderOption = _defaults.encoder,
    resolution: ProtocolResolutionOption = None,
    store: StoreOption = _defaults.store,
    collection: ProtocolCollectionOption = None,
    output: ProtocolOutputOption = None,
    scheduler: SchedulerOption = "local",
    workers: WorkersOption = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """UnED end to end: load every index split, search each domain's queries, R@1 and mMP@5."""
    _protocol_run("uned", dataset, {**locals(), "name": None})


@app.command()
def mine(
    out: Annotated[
        Path,
        typer.Option(
            help="The selection list to write (.gz compresses); ilias load --select reads it."
        ),
    ],
    top: Annotated[int, typer.Option(help="Distractors to keep (mini-ILIAS keeps 5000000).")],
    collection: Annotated[
        list[str] | None,
        typer.Option(
            "--collection",
            "-c",
            help="A collection of the distractors, embedded by a vision-language encoder; repeat "
            "with the same distractors in other encoders' collections to ensemble them.",
        ),
    ] = None,
    taxonomy: Annotated[
        Path | None,
        typer.Option(
            help="Taxonomy JSON (the ILIAS repository's misc/taxonomy.json) or a dataset folder "
            "holding one; default: the ILIAS folder the first collection was loaded from.",
        ),
    ] = None,
    classes: Annotated[
        Path | None, typer.Option(help="Class names, one per line, instead of a taxonomy.")
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option(
            help="Prompt templates, one per line with {} for the class name "
            "(default: eight of CLIP's ImageNet templates)."
        ),
    ] = None,
    per_prompt: Annotated[
        int | None,
        typer.Option(
            help="Distractors each prompt retrieves (default: 2 x top / classes, "
            "at least 1000, at most all)."
        ),
    ] = None,
    stats: Annotated[
        Path | None,
        typer.Option(help="Per-prompt statistics JSON (default: NAME.stats.json beside --out)."),
    ] = None,
    role: Annotated[
        str, typer.Option(help="Points to rank: distractor, or image in a plain collection.")
    ] = "distractor",
    approximate: Annotated[
        bool,
        typer.Option(
            "--approximate",
            help="The collection's index (int8 scan or HNSW) instead of an exact scan "
            "(faster; no certificate of exactness).",
        ),
    ] = False,
    store: StoreOption = _defaults.store,
) -> None:
    """Hard distractors: rank a collection's distractors by their highest text-to-image
    similarity to category prompts (several encoders ensembled by mean rank) and write the
    top N as a selection list, with per-prompt statistics."""
    from ilias.query.mining import (
        DEFAULT_TEMPLATES,
        check_text_towers,
        class_names,
        make_prompts,
        mine_distractors,
        read_templates,
        stats_path_for,
        write_mining_stats,
        write_selection,
    )

    collections = collection or [_defaults.collection]
    with _open_store(store) as backend:
        check_text_towers(backend, collections)  # before asking for a taxonomy
        dataset = backend.collection_config(collections[0]).metadata.get("dataset")
        names, source = class_names(taxonomy, classes, dataset)
        chosen = read_templates(templates) if templates else list(DEFAULT_TEMPLATES)
        prompts = make_prompts(names, chosen)
        console.print(
            f"{len(prompts)} prompts: {len(names)} class names from {source} x "
            f"{len(chosen)} templates"
        )
        with _progress() as bar:
            result = mine_distractors(
                backend, collections, prompts, top, per_prompt, role=role,
                exact=not approximate, progress=_staged(bar),
            )  # fmt: skip
    written = write_selection(out, result.ids)
    stats_file = write_mining_stats(stats or stats_path_for(out), result)
    for summary in result.encoders:
        certain = (
            f", ranking exact for its first {summary.complete}"
            if summary.complete is not None
            else ""
        )
        console.print(
            f"{summary.collection} ({summary.encoder}): {summary.distractors} {role} points, "
            f"top {summary.per_prompt} per prompt, {summary.candidates} candidates{certain}"
        )
    console.print(
        f"kept [bold]{len(result.ids)}[/] of {result.candidates} candidates -> {written}; "
        f"statistics -> {stats_file}"
    )
    if result.short:
        console.print(
            f"[yellow]only {len(result.ids)} candidates for --top {top}: all were written; "
            "raise --per-prompt to retrieve more[/]"
        )
    for summary in result.encoders:
        if summary.complete is not None and summary.complete < len(result.ids):
            console.print(
                f"[yellow]{summary.collection}: only its first {summary.complete} candidates "
                f"are certainly ranked exactly, fewer than the {len(result.ids)} kept; raise "
                "--per-prompt for an exact ranking[/]"
            )


@app.command()
def info(
    store: StoreOption = _defaults.store,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="One collection (default: all).")
    ] = None,
) -> None:
    """Settings in effect and the collections: points, index state, quantization, encoder."""
    from ilias import __version__
    from ilias.config import config_path
    from ilias.query.selection import LEDGER_PREFIX

    console.print(
        f"ilias {__version__}; store {store}; default collection {_defaults.collection}; "
        f"default encoder {_defaults.encoder}; config file {config_path() or 'none'}"
    )
    with _open_store(store) as backend:
        names = [collection] if collection else backend.list_collections()
        console.print(_collections_table(backend, names))
        for name in names:
            if backend.collection_config(name).managed:
                ledger = backend.shard_ledger(name)
                shards = [s for s in ledger if not s.startswith(LEDGER_PREFIX)]
                tags = [s.removeprefix(LEDGER_PREFIX) for s in ledger if s not in shards]
                if shards or tags:
                    console.print(
                        f"{name}: {len(shards)} tar shards loaded completely"
                        + (f"; selections tagged: {', '.join(tags)}" if tags else "")
                    )


@app.command()
def demo(
    workdir: Annotated[Path | None, typer.Option(help="Where data and the collection go.")] = None,
    instances: Annotated[int, typer.Option(help="Objects (instances) in the benchmark.")] = 24,
    positives: Annotated[int, typer.Option(help="Positives per instance.")] = 4,
    distractors: Annotated[
        int, typer.Option(help="Distractor images (the database exceeds k=1000 by default).")
    ] = 1000,
    seed: Annotated[int, typer.Option(help="Generation seed.")] = 0,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = "local",
    device: DeviceOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Offline end to end: generate a benchmark from real photos, load, query, score."""
    from ilias.demo import run_demo

    _check_sizes(workers, scheduler)
    workdir = workdir or data_home() / "demo"
    console.print(f"[bold]ilias demo[/] in {workdir} (offline, embedded Qdrant Edge)")
    with _progress() as bar:
        progress = _staged(bar)
        result = run_demo(
            workdir,
            n_instances=instances,
            positives_per_instance=positives,
            n_distractors=distractors,
            seed=seed,
            scheduler=scheduler,
            n_workers=workers,
            progress=progress,
            device=device or "auto",
            precision=precision or "auto",
        )
    bench, load_report, run = result.benchmark, result.load, result.run
    console.print(
        f"benchmark: {bench.n_instances} instances, {bench.n_positives} positives, "
        f"{bench.n_distractors} distractors from {bench.image_source} photos "
        f"({result.generate_seconds:.1f} s) - generated from real images, [bold]not ILIAS[/]"
    )
    if load_report.loaded:
        console.print(
            f"extraction: {load_report.loaded} images in {load_report.extract_seconds:.1f} s "
            f"({load_report.images_per_s:.1f} images/s) after {load_report.startup_seconds:.1f} s "
            f"starting the workers, index build {load_report.index_seconds:.1f} s"
        )
    else:
        console.print(f"extraction: all {load_report.already_present} images already loaded")
    _print_scores(run, "demo", result.collection)
    console.print(f"collection [bold]{result.collection}[/] lives in {result.store_location}")
    example = min(bench.core_dir.glob("*/query/Q000.jpg"), default=None)
    if example is not None:
        # Its own line, never wrapped (soft_wrap): a command to paste as it is.
        console.print("try:")
        console.print(
            f"ilias search --store edge:{workdir / 'qdrant'} -c {result.collection} "
            f"--image {example}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


@app.command()
def collections(store: StoreOption = _defaults.store) -> None:
    """Collections and their aliases: points, index status, shards, quantization, encoder."""
    with _open_store(store) as backend:
        console.print(_collections_table(backend, backend.list_collections()))


def _collections_table(backend, names: list[str]) -> Table | str:
    """One row per collection, as the engine reports it (shared by info and collections)."""
    if not names:
        return f"no collections in {backend.location}"
    from ilias import __version__
    from ilias.indexing.store import aliases_by_collection
    from ilias.indexing.store.layout import LAYOUTS

    aliases = aliases_by_collection(backend.list_aliases())
    columns = (
        "collection", "aliases", "points", "indexed", "status", "shards x replicas",
        "quantization", "index", "storage", "dim", "local", "encoder", "res",
    )  # fmt: skip
    rows = []
    placements = []  # where the parts live, as the engine reports it: under the table
    for name in names:
        try:
            details = backend.info(name)
        except (CollectionBusy, DiskFull) as error:  # show what its config says, and why
            config = backend.collection_config(name)
            if isinstance(error, DiskFull):
                placements.append(f"{name}: not opened: {error}")
            status = "disk full" if isinstance(error, DiskFull) else "in use by another process"
            rows.append((
                name, ", ".join(aliases.get(name, [])) or "-", "?", "?",
                status, "-", "-", config.index or "-", config.storage or "-",
                str(config.dim),
                str(config.local_dim or "-"), str(config.metadata.get("encoder")),
                str(config.metadata.get("resolution")),
            ))  # fmt: skip
            continue
        config, meta = details.config, details.config.metadata
        # What the engine applies; the in-process engine ignores the int8 asked for.
        quant = details.quantization or ("none (int8 asked)" if config.quantization else "none")
        layout = (
            f"{details.shards or '-'} x {details.replicas or '-'}"
            if details.shards or details.replicas
            else "-"
        )
        storage = config.storage or "-"  # another tool's collection: no preset
        if details.layout is not None:
            if storage in LAYOUTS and not details.layout.matches(storage):
                storage += " (engine differs)"
            described = details.layout.describe(graph=config.index != "scan")
            placements.append(f"{name}: {described}")
        rows.append((
            name, ", ".join(aliases.get(name, [])) or "-", str(details.points),
            str(details.indexed_vectors), details.status or "-", layout, quant,
            config.index or "-", storage,
            str(config.dim), str(config.local_dim or "-"), str(meta.get("encoder") or "-"),
            str(meta.get("resolution") or "-"),  # none recorded (features): the ILIAS rule
        ))  # fmt: skip
    # Columns the engine has nothing for (shards on Edge, aliases never set) stay out.
    shown = [i for i in range(len(columns)) if any(row[i] != "-" for row in rows)]
    # No cell is cut mid-word: each column is as wide as its longest word; where that leaves
    # no room for the encoder spec (80 columns), the encoder and res go under the table.
    widths = {i: max(len(w) for text in [columns[i], *(r[i] for r in rows)] for w in text.split())
              for i in shown}  # fmt: skip
    encoder, res = columns.index("encoder"), columns.index("res")
    if sum(widths.values()) + 3 * len(shown) + 1 > console.width:
        shown = [i for i in shown if i not in (encoder, res)]
        placements = [f"{row[0]}: encoder {row[encoder]}, res {row[res]}" for row in rows] + [
            p for p in placements
        ]
    caption = "storage as the engine reports it (?: not reported)\n" + "\n".join(placements)
    table = Table(
        title=f"ilias {__version__} - {backend.location}",
        caption=caption if placements else None,
        caption_justify="left",
    )
    for i in shown:
        table.add_column(columns[i], min_width=widths[i], overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    return table


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Folder for the HDF5 files.")],
    dataset: Annotated[
        Path | None,
        typer.Argument(
            help="ILIAS-layout folder whose queries to write (default: the collection's own)."
        ),
    ] = None,
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
    queries: Annotated[
        list[str] | None,
        typer.Option(help="Query kinds to encode and write: image, text (default: both)."),
    ] = None,
    fp32: Annotated[
        bool, typer.Option("--fp32", help="Write float32 rows (the reference writes float16).")
    ] = False,
    per_file: Annotated[int, typer.Option(help="Rows per distractor file.")] = 1_000_000,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the files of an earlier export in --out.")
    ] = False,
) -> None:
    """Write a collection as the ILIAS reference's feature files (its knn_search reads them)."""
    from ilias.loader import read_ilias
    from ilias.query import export_features

    with _open_store(store) as backend, _progress() as bar:
        done = export_features(
            backend, collection, out, read_ilias(dataset) if dataset else None,
            kinds=queries or ("image", "text"), fp16=not fp32, per_file=per_file,
            overwrite=overwrite, progress=_staged(bar),
        )  # fmt: skip
    db = done.database
    written = [
        f"{db.positives} positives",
        f"{db.distractors} distractors in {len(db.distractor_files)} files",
        *(f"{n} {kind} queries" for kind, n in done.queries.items()),
    ]
    console.print(f"[bold]{collection}[/] -> {out}: {', '.join(written)}")
    for kind, reason in done.skipped.items():
        console.print(f"  no {kind} queries: {reason}")
    if done.query_files:
        kind = next(iter(done.query_files))
        console.print(
            "reference search: python knn_search/search.py "
            + " ".join(done.search_arguments(kind))
            + " --use_gpu false --save_dir SIMILARITIES",
            soft_wrap=True,  # one line, to copy
        )


@app.command()
def drop(
    collection: Annotated[str, typer.Argument(help="The collection to drop (not an alias).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: StoreOption = _defaults.store,
) -> None:
    """Drop a collection and the aliases pointing at it (its points are gone for good)."""
    with _open_store(store) as backend:
        if not backend.collection_exists(collection):  # not the engine's "create it" advice
            known = ", ".join(sorted(backend.list_collections())) or "none"
            raise IliasError(
                f"no collection {collection!r} in {backend.location} (collections: {known}): "
                "nothing to drop"
            )
        try:
            points: int | str = backend.count(collection)
        except DiskFull:  # dropping is how space is freed: it needs no open collection
            points = "? (not opened: disk full)"
        if not yes and not typer.confirm(
            f"drop {collection} ({points} points) from {backend.location}?"
        ):
            raise IliasError(f"{collection} was not dropped (pass --yes to skip the question)")
        backend.drop(collection)
    console.print(f"dropped [bold]{collection}[/] ({points} points)")


@app.command()
def alias(
    name: Annotated[str, typer.Argument(help="The alias, e.g. ilias.")],
    target: Annotated[
        str | None, typer.Argument(help="The collection to point it at, e.g. ilias-v2.")
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias instead.")] = False,
    store: StoreOption = _defaults.store,
) -> None:
    """Point an alias at a collection in one atomic step (e.g. roll back a versioned load)."""
    if delete == (target is not None):
        raise IliasError("give a collection to point the alias at, or --delete (not both)")
    with _open_store(store) as backend:
        if delete:
            backend.delete_alias(name)
            console.print(f"alias [bold]{name}[/] deleted")
            return
        previous = backend.list_aliases().get(name)
        backend.set_alias(name, target)
    console.print(f"alias [bold]{name}[/] -> {target} (was {previous or 'new'})")


snapshot_app = typer.Typer(
    help="Snapshots of a collection on a Qdrant server: create, list, restore.",
    no_args_is_help=True,
)
app.add_typer(snapshot_app, name="snapshot")


@snapshot_app.command("create")
def snapshot_create(
    store: StoreOption = _defaults.store, collection: CollectionOption = _defaults.collection
) -> None:
    """Snapshot a collection on the server (an alias snapshots the collection behind it)."""
    with _open_store(store) as backend:
        snapshot = backend.create_snapshot(collection)
    console.print(
        f"snapshot [bold]{snapshot.name}[/] ({snapshot.size / 1e6:.1f} MB) of {collection}: "
        f"{snapshot.location}"
    )


@snapshot_app.command("list")
def snapshot_list(
    store: StoreOption = _defaults.store, collection: CollectionOption = _defaults.collection
) -> None:
    """Snapshots of a collection on the server."""
    with _open_store(store) as backend:
        snapshots = backend.list_snapshots(collection)
    table = Table(title=f"snapshots of {collection}")
    for column in ("name", "MB", "created", "location"):
        table.add_column(column)
    for snapshot in snapshots:
        table.add_row(
            snapshot.name, f"{snapshot.size / 1e6:.1f}", snapshot.created or "", snapshot.location
        )
    console.print(table if snapshots else f"no snapshots of {collection}")


@snapshot_app.command("restore")
def snapshot_restore(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="A snapshot name on this server, a URL or file:/// path the server can read, "
            "or a local .snapshot file (uploaded).",
        ),
    ],
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
) -> None:
    """Recover a collection from a snapshot, replacing what it holds."""
    with _open_store(store) as backend:
        backend.restore_snapshot(collection, source)
        points = backend.count(collection)
    console.print(f"[bold]{collection}[/] restored from {source}: {points} points")


adapt_app = typer.Typer(help="Linear adaptation layers on frozen descriptors.")
app.add_typer(adapt_app, name="adapt")


@adapt_app.command("train")
def adapt_train(
    data: Annotated[
        Path, typer.Argument(help="<root>/<domain>/<class>/ images, or a path,class,domain CSV.")
    ],
    out: Annotated[Path, typer.Option(help="Where to save the layer (.pth).")],
    encoder: Annotated[
        str, typer.Option(envvar="ILIAS_ENCODER", help="The frozen base encoder.")
    ] = _defaults.encoder,
    resolution: Annotated[int | None, typer.Option(help="Override the resolution rule.")] = None,
    dim: Annotated[int, typer.Option(help="Output dimension of the layer.")] = 512,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 5,
    heldout: Annotated[
        float,
        typer.Option(
            help="Fraction of (class, domain) labels held out for a retrieval check; 0 trains "
            "on all labels, as the ILIAS reference does."
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Split and initialisation seed.")] = 0,
    workers: WorkersOption = None,
    scheduler: SchedulerOption = "local",
) -> None:
    """Train Linear(d, dim) + L2 norm with a cosine classifier (scale 16) on frozen
    descriptors, with the ILIAS reference's recipe (all labels unless --heldout)."""
    from ilias.indexing.adaptation import save_adaptation
    from ilias.indexing.adaptation_training import train_from_records
    from ilias.loader import read_labelled

    _check_sizes(workers, scheduler, resolution)
    records = read_labelled(data)
    checked = heldout > 0  # without held-out labels there is no retrieval check to show

    def show(report) -> None:  # each epoch once, as it ends (the progress of the training)
        if report.epoch == 0 and not checked:
            return  # the untrained baseline: only a held-out check has anything to show
        said = f"epoch {report.epoch}  loss {report.loss:.4f}" if report.epoch else "untrained"
        if checked:
            said += f"  held-out R@1 {report.recall_at_1:.2f}  mAP {report.map:.2f}"
        bar.console.print(said)

    with _progress() as bar:
        task = bar.add_task("extract", total=len(records))
        run = train_from_records(
            records,
            encoder,
            resolution=resolution,
            scheduler=scheduler,
            n_workers=workers,
            d_out=dim,
            epochs=epochs,
            heldout_fraction=heldout,
            seed=seed,
            progress=lambda done, total: bar.update(task, completed=done),
            on_epoch=show,
        )
    path = save_adaptation(run.result.layer, out)
    console.print(
        f"{run.n_train} training / {run.n_heldout} held-out images, {run.n_classes} "
        f"(class, domain) labels, {run.n_failed} unreadable; layer saved to {path}\n"
        f"use it: --encoder '{encoder}|adapt={path}'"
    )


def _check_sizes(workers: int | None, scheduler: str, resolution: int | None = None) -> None:
    """--workers and --resolution within their bounds, before any data is read (the
    extraction checks them again; this answers before a dataset is listed)."""
    from ilias.indexing.limits import check_resolution, check_workers

    check_workers(workers, scheduler)
    check_resolution(resolution)


def parse_where(where: list[str] | None) -> dict[str, Any] | None:
    """``--where`` options as a filter (ilias.query.where, imported when a command runs)."""
    from ilias.query.where import parse_where as parse

    return parse(where)


def parse_bbox(bbox: str | None) -> list[int] | None:
    """``--bbox 'x,y,w,h'`` (ilias.query.where, imported when a command runs)."""
    from ilias.query.where import parse_bbox as parse

    return parse(bbox)


def _open_store(spec: str):  # -> ilias.indexing.Store, imported only when a command runs
    """The store named by ``--store``; the engine is imported here, never by ``--help``."""
    from ilias.indexing import open_store

    return open_store(spec)


def _print_scores(run, name: str, collection: str) -> None:
    scores = run.scores
    console.print(
        f"[bold]{name}[/]: {run.n_queries} queries vs {collection}: "
        f"[bold green]mAP@{scores.k} = {scores.map:.2f}[/]  oracle@{scores.k} = "
        f"{scores.oracle:.2f}"
    )
    per_query_ms = 1000 * run.search_seconds / max(1, run.n_queries)
    searched = (
        "exact search"
        if run.search == "exact"
        else f"approximate search, recall@{scores.k} {run.recall:.3f} against exact "
        f"({run.recall_queries} queries)"
    )
    console.print(
        f"query encoding {run.encode_seconds:.2f} s, {searched} {run.search_seconds:.3f} s "
        f"({per_query_ms:.1f} ms per top-{scores.k} query)"
    )
    if run.stage_seconds:
        stages = ", ".join(
            f"{name} {1000 * t / max(1, run.n_queries):.1f}"
            for name, t in run.stage_seconds.items()
        )
        console.print(f"per query, ms: {stages}")


def _staged(bar):  # -> progress(stage, done, total): each stage its own bar
    from ilias.cli_progress import staged

    return staged(bar)


@contextmanager
def _progress():
    """Bars on a terminal, a line every few seconds elsewhere (ilias.cli_progress, imported
    when a command runs: rich's progress module is not needed by ``ilias --help``)."""
    from ilias.cli_progress import progress_display

    with progress_display(console) as bar:
        yield bar


def main() -> None:
    """Console entry point: user-fixable errors print one line and exit 1, no traceback."""
    try:
        app()
    except IliasError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(error))}")
        sys.exit(1)


if __name__ == "__main__":  # python -m ilias.cli, as python -m ilias
    main()


# ------------------------------------------------------------------ ilias serve
# The HTTP query service and web page (ilias.serve), imported only when the command runs.


@app.command()
def serve(
    store: StoreOption = _defaults.store,
    collection: CollectionOption = _defaults.collection,
    runs: Annotated[
        Path | None,
        typer.Option(
            "--runs",
            help="Folder of `ilias eval run` results folders to explore; default: "
            "$ILIAS_HOME/runs (~/.local/share/ilias/runs) where it exists, where the example "
            "run files write.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            envvar="ILIAS_CORS_ORIGINS",
            help="Allow browser calls from this origin (repeatable); none by default.",
        ),
    ] = None,
    max_upload_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-upload-bytes",
            envvar="ILIAS_MAX_UPLOAD_BYTES",
            help="Largest query image accepted (default 20 MiB).",
        ),
    ] = None,
    writes: Annotated[
        bool,
        typer.Option(
            "--writes",
            help="Allow adding and deleting points through the API (off by default; set "
            "ILIAS_API_KEY so that only key holders can write).",
        ),
    ] = False,
) -> None:
    """Serve search, images and evaluation runs over HTTP, with a web page at /.

    One process owns an Edge store; to scale out, use a Qdrant server store and several
    service processes. The API key, if any, is read from ILIAS_API_KEY.
    """
    import dataclasses

    import uvicorn

    from ilias.serve import ServeSettings, create_app

    if not 1 <= port <= 65535:
        raise IliasError(f"--port {port}: give a TCP port from 1 to 65535")
    if runs is not None and not runs.is_dir():
        raise IliasError(f"--runs {runs}: no such folder; give the folder holding run folders")
    if runs is None and (data_home() / "runs").is_dir():
        runs = data_home() / "runs"
    if max_upload_bytes is not None and max_upload_bytes < 1:
        raise IliasError("--max-upload-bytes: give a positive number of bytes")
    settings = ServeSettings(store=store, collection=collection, runs=runs)
    if cors_origin:
        origins = tuple(o.strip() for value in cors_origin for o in value.split(",") if o.strip())
        settings = dataclasses.replace(settings, cors_origins=origins)
    if max_upload_bytes is not None:
        settings = dataclasses.replace(settings, max_upload_bytes=max_upload_bytes)
    if writes:
        settings = dataclasses.replace(settings, writes=True)
    console.print(
        f"[bold]ilias serve[/] {escape(store)} on http://{host}:{port} (docs at /docs)"
        + (f"; runs from {escape(str(runs))}" if runs is not None else "")
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


# ------------------------------------------------------------------ ilias delete
# Removing points from a collection (takedowns, expired products, privacy requests).


@app.command()
def delete(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Dataset ids of the points to delete.")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from", help="A text file of dataset ids to delete, one a line."),
    ] = None,
    where: WhereOption = None,
    delete_all: Annotated[
        bool,
        typer.Option("--all", help="Allow a --where or an id list that names every point."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    collection: CollectionOption = _defaults.collection,
    store: StoreOption = _defaults.store,
) -> None:
    """Delete points by id, by a file of ids, or by a payload filter (asks first).

    A deleted point's image still in the folder a load reads comes back with the next load
    of that folder; remove the file too (then 'ilias load --sync' keeps it out).
    """
    from ilias.indexing.lifecycle import plan_delete, read_id_file

    wanted = list(ids or []) + (read_id_file(from_file) if from_file is not None else [])
    search_filter = parse_where(where)
    if search_filter and (ids or from_file is not None):
        raise IliasError("delete: give ids (arguments or --from FILE) or --where, not both")
    if not search_filter and not (ids or from_file is not None):
        raise IliasError("delete: name the points: ids, --from FILE or --where key=value")
    with _open_store(store) as backend:
        plan = plan_delete(
            backend, collection, ids=None if search_filter else wanted, filter=search_filter,
            allow_all=delete_all,
        )  # fmt: skip
        if plan.missing:
            shown = ", ".join(plan.missing[:5])
            console.print(f"{len(plan.missing)} ids are not in {collection} (skipped): {shown}")
        if not yes and not typer.confirm(
            f"delete {plan.matched} of the {plan.total} points of {collection} "
            f"({backend.location})?"
        ):
            raise IliasError("nothing was deleted (pass --yes to skip the question)")
        deleted = plan.apply(backend)
        left = backend.count(collection)
    console.print(f"deleted {deleted} points from [bold]{collection}[/]; {left} left")


# ------------------------------------------------------------------ ilias load --sync
# The library does the work (ilias.indexing.sync); these check, call and print.


def _check_sync_options(sync: bool, sync_all: bool, versioned: bool, features: bool) -> None:
    if sync_all and not sync:
        raise IliasError("--sync-all only applies with --sync")
    if sync and versioned:
        raise IliasError(
            "--sync updates a collection in place; a --versioned load starts a new version "
            "from the source (nothing to remove): use one or the other"
        )
    if sync and features:
        raise IliasError("--sync follows image files; --features loads feature files as they are")


def _sync(source, backend, collection, options, progress, shard_progress, upload, storage, index,
          sync_all):  # fmt: skip
    """``load --sync``: the load, then the removal of points whose source is gone."""
    from ilias.indexing.sync import sync_collection

    return sync_collection(
        source, backend, collection, options, metadata=source.metadata, progress=progress,
        upload=cast("Upload", upload), shard_progress=shard_progress, storage=storage,
        index=index, allow_all=sync_all,
    )  # fmt: skip


def _print_sync(synced) -> None:
    console.print(
        f"sync: {synced.added} added, {synced.changed} changed (extracted again), "
        f"{synced.removed} removed"
    )
    if synced.kept_stale:
        console.print(
            f"[yellow]{synced.kept_stale} points whose source is not in the listing were kept[/]: "
            f"the listing is partial ({'; '.join(synced.partial)}); run the sync again once it "
            "reads whole"
        )


@contextmanager
def _held_by_service(collection: str):
    """A load refused because another process holds the collection says what to do, the
    service (ilias serve) being the usual holder of an embedded collection."""
    try:
        yield
    except CollectionBusy as error:
        raise CollectionBusy(
            f"{error}. If 'ilias serve' holds it, change the collection through the service "
            f"(ilias serve --writes: POST /api/collections/{collection}/images, DELETE "
            f"/api/collections/{collection}/points/ID) or stop the service, then load"
        ) from error
