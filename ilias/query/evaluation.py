"""The evaluation runner: a benchmark's queries against a collection, scored once.

``evaluate_collection`` is the one place that orchestrates an evaluation: open the
collection, read its dataset (from the collection's metadata unless given), run each kind
of query (image, text, hybrid; image queries optionally re-ranked), score every kind once
exactly as the ILIAS reference does, and return rankings, scores and timings. ``ilias
eval``, ``ilias eval run`` (``ilias.runs``), ``ilias demo`` and the benches all call it;
what a caller writes from the result (similarity files, ``metrics.json``, per-query tables,
plots) is done by ``ilias.query.report`` from the returned ``Evaluation``.

``run_queries`` / ``run_image_queries`` are the same steps for one kind over a retriever
the caller already holds (the README's API).

Two defaults are the reference's, so that a number from here is the number its code gives:
the search is exact (a full scan of the stored float32 originals, ``EXACT``: the top k that
faiss' flat index returns, ties aside), and image queries are NOT cropped to their boxes
(the reference extracts them whole unless asked to crop them or to mask them outside their
boxes: both are options here too). Approximate search (the collection's
index: an int8 scan or HNSW) is an option; such a run then measures its recall@k against
exact search on a sample of queries (``RECALL_SAMPLE``) and reports it beside the scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ilias.errors import DatasetError, IliasError
from ilias.eval import Breakdowns, IliasIds, RetrievalScores, score_rankings
from ilias.loader import Benchmark, benchmark_for_collection
from ilias.types import Filter, Hit, SearchParams

if TYPE_CHECKING:  # the engines and models load when a query runs, not at import
    from ilias.indexing import CollectionConfig, Store
    from ilias.query.retriever import Retriever
    from ilias.rerank import Reranker

# A full scan of the float32 originals: exactly the reference's (faiss flat) top k.
EXACT = SearchParams(exact=True, ignore_quantization=True)
RECALL_SAMPLE = 50  # queries per kind whose approximate top k is checked against exact

QueryKind = Literal["image", "text", "hybrid"]
QUERY_KINDS: tuple[str, ...] = ("image", "text", "hybrid")
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class BenchmarkRun:
    """One kind of query, run and scored: rankings per query and where the time went."""

    scores: RetrievalScores
    rankings: dict[str, list[Hit]]
    encode_seconds: float
    search_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # search + each re-ranker
    kind: str = "image"
    breakdowns: Breakdowns | None = None  # scale / clutter / categories, where asked
    search: str = "exact"  # "exact" (the reference's ranking) or "approximate"
    recall: float | None = None  # approximate: mean recall@k against exact, on a sample
    recall_queries: int = 0  # how many queries that sample held

    @property
    def n_queries(self) -> int:
        return len(self.rankings)

    def __repr__(self) -> str:  # the rankings would print megabytes
        return (
            f"BenchmarkRun(kind={self.kind!r}, n_queries={self.n_queries}, "
            f"map@{self.scores.k}={self.scores.map:.2f}, oracle={self.scores.oracle:.2f}, "
            f"search={self.search!r})"
        )

    def pairs(self) -> dict[str, list[tuple[str, float]]]:
        """``{query_id: [(db_id, score), ...]}``: the rankings as similarity files hold them."""
        return {q: [(h.id, h.score) for h in hits] for q, hits in self.rankings.items()}


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_collection`` returns: one scored run per kind that ran, and why the
    others did not."""

    benchmark: Benchmark
    collection: str
    k: int
    runs: dict[str, BenchmarkRun]
    skipped: dict[str, str]  # kind -> the reason it did not run
    score_seconds: float
    resolution: int | None = None  # the encoder's test resolution

    def __repr__(self) -> str:  # one line: the benchmark and rankings would print megabytes
        runs = ", ".join(f"{kind}: {run!r}" for kind, run in self.runs.items())
        return (
            f"Evaluation(benchmark={self.benchmark.name!r}, collection={self.collection!r}, "
            f"k={self.k}, runs={{{runs}}}, skipped={self.skipped!r})"
        )

    def run(self, kind: str) -> BenchmarkRun:
        """The run of one kind; an error naming why, where it did not run."""
        if kind not in self.runs:
            reason = self.skipped.get(kind, "it was not asked for")
            raise IliasError(f"no {kind} queries were run: {reason}")
        return self.runs[kind]

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step: ``<kind>_encode_s``, ``<kind>_search_s``, each re-ranker, scoring."""
        out: dict[str, float] = {}
        for kind, run in self.runs.items():
            out[f"{kind}_encode_s"] = run.encode_seconds
            out[f"{kind}_search_s"] = run.search_seconds
            out.update({f"{kind}_stage_{name}_s": t for name, t in run.stage_seconds.items()})
        out["score_s"] = self.score_seconds
        return out


# ------------------------------------------------------------------------- the runner


def evaluate_collection(
    store: Store,
    collection: str,
    benchmark: Benchmark | None = None,
    *,
    kinds: Sequence[str] = ("image",),
    k: int = 1000,
    filter: Filter | None = None,
    params: SearchParams | None = None,
    rerank: Sequence[Reranker | str] = (),
    ames_weights: str | None = None,
    weight: float = 0.5,
    breakdowns: bool = False,
    taxonomy: Mapping[str, tuple[str, str]] | None = None,
    check_database: bool = False,
    progress: Progress | None = None,
    batch_size: int = 32,
    crop_queries: bool = False,
    mask_queries: bool = False,
    device: str = "auto",
    precision: str = "auto",
    query_features: str | Path | None = None,
) -> Evaluation:
    """Run the benchmark's queries of each kind against ``collection`` and score them once.

    ``store`` is an open ``Store`` (``open_store(spec)``); ``benchmark`` defaults to the ILIAS
    folder the collection was loaded from. ``rerank`` takes re-rankers or their specs
    (``"cs"``, ``"aqe:n=2"``), applied to image queries. A kind that cannot run (a text
    kind with an image-only encoder, a dataset without text queries) is listed in
    ``skipped`` with the reason, and the others still run. ``breakdowns`` adds the scale /
    clutter (and, with a taxonomy, category) breakdowns; ``check_database`` refuses ranked
    ids the dataset does not know (needs a benchmark read with its distractors).

    ``params`` None is exact search (``EXACT``); anything else is approximate, and each
    kind's recall@k against exact is measured on up to ``RECALL_SAMPLE`` of its queries.
    Image queries are whole by default, as the reference extracts them; ``crop_queries``
    crops them to the union of their boxes, ``mask_queries`` zeroes the encoder input
    outside their boxes (the reference's two options; one at a time). ``device`` /
    ``precision``: where the queries are encoded (``ilias.indexing.devices``), and where
    exact ranking runs (a CUDA device: torch; else numpy).

    Exact search of image and text queries (without re-rankers) is batched: every such
    query is encoded first, then all are ranked in one pass over the stored vectors
    (``ilias.query.exact``), streamed once from the collection; the pass's time is split
    over the kinds by their number of queries. ``query_features``: a folder holding the
    reference's ``features_image_queries.hdf5`` / ``features_text_queries.hdf5``, used
    instead of encoding the queries (no model, no images; ``query_vectors``).
    """
    from ilias.query.retriever import Retriever, query_region

    region = query_region(crop_queries, mask_queries)
    unknown = [kind for kind in kinds if kind not in QUERY_KINDS]
    if unknown:
        raise IliasError(f"query kind {unknown[0]!r}: use image, text or hybrid")
    if k < 1:
        raise IliasError(f"k = {k}: ask for at least one result per query")
    if benchmark is None:
        benchmark = benchmark_for_collection(store.collection_config(collection).metadata)
    steps = rerankers_for_collection(store, collection, rerank, ames_weights)
    params = params or EXACT
    retriever = Retriever(store, collection, params=params, device=device, precision=precision)
    ids = ilias_ids_of(benchmark)

    runs: dict[str, BenchmarkRun] = {}
    skipped: dict[str, str] = {}
    score_seconds = 0.0
    given = query_vectors(query_features, benchmark, store.collection_config(collection))
    batched = [
        kind for kind in kinds
        if params == EXACT and (kind == "text" or (kind == "image" and not steps))
        and (kind in given or skip_reason(benchmark, retriever, kind) is None)
    ]  # fmt: skip
    done = _run_batched(
        benchmark, retriever, batched, given, k=k, filter=filter, batch_size=batch_size,
        region=region, device=device, progress=progress,
    )  # fmt: skip
    for kind in kinds:
        reason = None if kind in done else skip_reason(benchmark, retriever, kind)
        if reason is not None:
            skipped[kind] = reason
            continue
        if kind in done:
            rankings, encode_s, search_s = done[kind]
            stages: dict[str, float] = {}
            recalls: list[float] = []
        else:
            if query_features is not None:
                raise IliasError(
                    f"{kind} queries: query features serve exact image and text search "
                    "without re-rankers; encode the queries for this run (drop --query-features)"
                )
            report = (lambda d, t, s=f"{kind} queries": progress(s, d, t)) if progress else None
            rankings, encode_s, search_s, stages, recalls = _run_kind(
                benchmark, retriever, kind, k=k, weight=weight, filter=filter, params=params,
                batch_size=batch_size, progress=report, rerank=steps if kind == "image" else (),
                region=region,
            )  # fmt: skip
        began = time.perf_counter()
        scores, breakdown = _score(
            rankings, ids, kind, k, breakdowns=breakdowns, taxonomy=taxonomy,
            check_database=check_database,
        )  # fmt: skip
        score_seconds += time.perf_counter() - began
        runs[kind] = BenchmarkRun(
            scores, rankings, encode_s, search_s, stages, kind=kind, breakdowns=breakdown,
            search="exact" if params == EXACT else "approximate",
            recall=sum(recalls) / len(recalls) if recalls else None,
            recall_queries=len(recalls),
        )  # fmt: skip
    resolution = (
        store.collection_config(collection).metadata.get("resolution")
        if query_features is not None
        else getattr(retriever.encoder, "resolution", None)
    )
    return Evaluation(benchmark, collection, k, runs, skipped, score_seconds, resolution)


def run_queries(
    benchmark: Benchmark,
    retriever: Retriever,
    kind: QueryKind = "image",
    *,
    k: int = 1000,
    weight: float = 0.5,
    filter: Filter | None = None,
    params: SearchParams | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    rerank: Sequence[Reranker] = (),
    crop_queries: bool = False,
    mask_queries: bool = False,
) -> BenchmarkRun:
    """Run one kind of query over the benchmark with ``retriever``; mAP@k and oracle@k.

    The search is the retriever's (``params``, else its own ``params``), with no recall
    check: ``evaluate_collection`` is the runner that defaults to exact search.
    ``image``: every image query, whole (``crop_queries``: cropped to its box;
    ``mask_queries``: masked outside its boxes). ``text``:
    every text query (the whole ``T*.txt``). ``hybrid``: every image query paired with its
    instance's text query, ranked by ``(1 - weight) * i2i + weight * t2i``. Image and text
    queries are scored separately, as in ILIAS. ``rerank`` re-ranks each image query's top
    k (image kind only).
    """
    if kind not in QUERY_KINDS:
        raise ValueError(f"unknown query kind {kind!r}: image, text or hybrid")
    if rerank and kind != "image":
        raise ValueError("re-rankers apply to image queries")
    from ilias.query.retriever import query_region

    region = query_region(crop_queries, mask_queries)
    rankings, encode_s, search_s, stages, _ = _run_kind(
        benchmark, retriever, kind, k=k, weight=weight, filter=filter, params=params,
        batch_size=batch_size, progress=progress, rerank=rerank, region=region,
        recall_sample=0,
    )  # fmt: skip
    scores, _ = _score(rankings, ilias_ids_of(benchmark), kind, k)
    return BenchmarkRun(scores, rankings, encode_s, search_s, stages, kind=kind)


def run_image_queries(benchmark: Benchmark, retriever: Retriever, **kwargs: Any) -> BenchmarkRun:
    """Image-to-image evaluation (see ``run_queries``)."""
    return run_queries(benchmark, retriever, "image", **kwargs)


# ------------------------------------------------------------------------- the parts


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


def skip_reason(benchmark: Benchmark, retriever: Retriever, kind: str) -> str | None:
    """Why ``kind`` cannot run on this benchmark with this retriever (None: it can)."""
    if kind == "image" and not benchmark.image_queries:
        return "the dataset has no image queries"
    if kind in ("text", "hybrid"):
        if not benchmark.text_queries:
            return "the dataset has no text queries"
        with_text = {t.instance for t in benchmark.text_queries}
        if kind == "hybrid" and not any(
            q.payload.get("instance") in with_text for q in benchmark.image_queries
        ):
            return "no image query has a text query of its instance"
        if not getattr(retriever.encoder, "has_text_tower", False):
            return (
                "the encoder has no text tower; load the collection with a vision-language "
                "encoder (open_clip:..., or a timm CLIP, SigLIP, EVA-CLIP or PE name)"
            )
    return None


def rerankers_for_collection(
    store: Store,
    collection: str,
    steps: Sequence[Reranker | str],
    ames_weights: str | None = None,
) -> list[Reranker]:
    """Re-rankers from specs (``"cs"``, ``"sp:top=100"``), checked against what the
    collection stores (local descriptors); re-ranker objects pass through."""
    if not steps:
        return []
    objects = [step for step in steps if not isinstance(step, str)]
    if len(objects) == len(steps):
        return objects
    from ilias.rerank import parse_rerankers

    specs = [step for step in steps if isinstance(step, str)]
    if len(specs) != len(steps):
        raise IliasError("give re-rankers either all as specs or all as objects")
    local_dim = store.collection_config(collection).local_dim
    return parse_rerankers(specs, ames_weights=ames_weights, local_dim=local_dim)


def _run_kind(
    benchmark: Benchmark,
    retriever: Retriever,
    kind: str,
    *,
    k: int,
    weight: float,
    filter: Filter | None,
    params: SearchParams | None,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
    rerank: Sequence[Reranker],
    region: str = "whole",
    recall_sample: int = RECALL_SAMPLE,
) -> tuple[dict[str, list[Hit]], float, float, dict[str, float], list[float]]:
    """Encode and search every query of one kind, in batches; rankings, timings, and (for
    approximate search) the recall@k of the first ``recall_sample`` queries' first-stage
    search against exact search of the same vectors."""
    from ilias.query.retriever import query_images_of
    from ilias.rerank import RerankQuery

    if kind == "image":
        queries: list = benchmark.image_queries
    elif kind == "text":
        queries = benchmark.text_queries
    else:
        texts = {t.instance: t.text for t in benchmark.text_queries}
        queries = [q for q in benchmark.image_queries if q.payload.get("instance") in texts]
    rankings: dict[str, list[Hit]] = {}
    encode_seconds = search_seconds = 0.0
    stages: dict[str, float] = {}
    needs_local = any(step.needs_local for step in rerank)
    measure = params is not None and params != EXACT
    recalls: list[float] = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        began = time.perf_counter()
        local: list = [None] * len(chunk)
        if kind == "text":
            vectors = retriever.encoder.encode_texts([q.text for q in chunk])
        elif needs_local:
            vectors, local = retriever.encode_with_local(query_images_of(chunk, region))
        else:
            vectors = retriever.encode_images(query_images_of(chunk, region))
        if kind == "hybrid":
            text_vectors = retriever.encoder.encode_texts(
                [texts[q.payload["instance"]] for q in chunk]
            )
        encode_seconds += time.perf_counter() - began
        began = time.perf_counter()
        if kind == "hybrid":
            results = retriever.hybrid_vectors(vectors, text_vectors, weight, k, filter, params)
        elif rerank:
            results = [
                retriever.rerank_query(RerankQuery(v, f), rerank, k, filter, params, stages)
                for v, f in zip(vectors, local, strict=True)
            ]
        else:
            results = retriever.search_vectors(vectors, k, filter, params)
        search_seconds += time.perf_counter() - began
        rankings.update({q.id: hits for q, hits in zip(chunk, results, strict=True)})
        sample = vectors[: max(0, recall_sample - len(recalls))] if measure else vectors[:0]
        if len(sample):
            recalls += recall_at_k(retriever, sample, k, filter, params)
        if progress:
            progress(start + len(chunk), len(queries))
    return rankings, encode_seconds, search_seconds, stages, recalls


def _run_batched(
    benchmark: Benchmark,
    retriever: Retriever,
    kinds: Sequence[str],
    given: Mapping[str, Any],
    *,
    k: int,
    filter: Filter | None,
    batch_size: int,
    region: str,
    device: str,
    progress: Progress | None,
) -> dict[str, tuple[dict[str, list[Hit]], float, float]]:
    """Exact search of whole kinds at once: encode (or take) every query of each kind,
    then rank them all in one pass over the stored vectors (``ilias.query.exact``).
    Per kind: rankings, encoding seconds, its share of the pass's seconds."""
    if not kinds:
        return {}
    import numpy as np

    from ilias.indexing.store import validate_vectors
    from ilias.indexing.store.stream import StreamMismatch
    from ilias.query.exact import block_rows, exact_top_k, hits_of_keys, torch_device_for
    from ilias.query.retriever import query_images_of

    vectors: dict[str, Any] = {}
    ids: dict[str, list[str]] = {}
    encode: dict[str, float] = {}
    for kind in kinds:
        queries: list = benchmark.image_queries if kind == "image" else benchmark.text_queries
        ids[kind] = [q.id for q in queries]
        began = time.perf_counter()
        if kind in given:
            vectors[kind] = given[kind]
        else:
            parts = []
            for start in range(0, len(queries), batch_size):
                chunk = queries[start : start + batch_size]
                if kind == "text":
                    parts.append(retriever.encoder.encode_texts([q.text for q in chunk]))
                else:
                    parts.append(retriever.encode_images(query_images_of(chunk, region)))
                if progress:
                    progress(f"{kind} queries", start + len(chunk), len(queries))
            vectors[kind] = np.concatenate(parts)
        encode[kind] = time.perf_counter() - began
        dim = retriever.store.collection_config(retriever.collection).dim
        validate_vectors(vectors[kind], dim, [f"{kind} query {i}" for i in ids[kind]])
    ranking_device = torch_device_for(device)
    store, collection = retriever.store, retriever.collection
    rows = block_rows(sum(len(v) for v in vectors.values()))
    began = time.perf_counter()
    for direct in (True, False):
        stream = store.stream_vectors(collection, filter, block=rows, direct=direct)
        report = (
            (lambda done, t=stream.total: progress("exact search", done, t)) if progress else None
        )
        result = exact_top_k(vectors, stream.blocks, k, device=ranking_device, progress=report)
        try:
            names = stream.names()
            break
        except StreamMismatch:
            continue
    seconds = time.perf_counter() - began
    total = sum(len(v) for v in vectors.values())
    out = {}
    for kind in kinds:
        hits = hits_of_keys(result.keys[kind], result.scores[kind], names)
        share = seconds * len(vectors[kind]) / max(1, total)
        out[kind] = (dict(zip(ids[kind], hits, strict=True)), encode[kind], share)
    return out


def query_vectors(
    folder: str | Path | None, benchmark: Benchmark, config: CollectionConfig
) -> dict[str, Any]:
    """Query descriptors from the reference's feature files in ``folder``
    (``features_image_queries.hdf5``, ``features_text_queries.hdf5``), per kind, in the
    order of the benchmark's queries; a kind whose file is absent is not given.

    The files must fit the collection: its dimension, and the encoder it records where a
    file records one (an ``encoder`` attribute). A collection whose encoder ends in
    ``|adapt=LAYER`` takes the frozen base encoder's features, as the reference's
    ``--lin_adapt_path`` does: the layer is applied here, as ``ilias load --features``
    applies it to the database. Every fault is one line naming the file.
    """
    if folder is None:
        return {}
    from ilias.indexing.features import adapt_features, feature_file_name, read_features

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--query-features {root}: not a folder (expected the folder of "
                           "features_image_queries.hdf5 / features_text_queries.hdf5)")  # fmt: skip
    out: dict[str, Any] = {}
    encoder = config.metadata.get("encoder")
    for kind, part, queries in (
        ("image", "image_queries", benchmark.image_queries),
        ("text", "text_queries", benchmark.text_queries),
    ):
        path = root / feature_file_name(part)
        if not path.is_file():
            continue
        found = read_features(path)
        if found.encoder and encoder and found.encoder != encoder:
            raise DatasetError(
                f"{path}: features of {found.encoder}, but the collection holds {encoder}; "
                "use the query features of the collection's encoder"
            )
        rows = adapt_features(found.features, encoder, path)
        if rows.shape[1] != config.dim:
            raise DatasetError(
                f"{path}: {rows.shape[1]}-d query features, but the collection holds "
                f"{config.dim}-d vectors; use the query features of its encoder ({encoder})"
            )
        by_id = {i: n for n, i in enumerate(found.ids)}
        missing = [q.id for q in queries if q.id not in by_id]
        if missing:
            raise DatasetError(
                f"{path}: no features for {len(missing)} of the dataset's {kind} queries "
                f"(e.g. {missing[0]}); use the query files of this dataset"
            )
        out[kind] = rows[[by_id[q.id] for q in queries]]
    if not out:
        raise DatasetError(
            f"--query-features {root}: neither {feature_file_name('image_queries')} nor "
            f"{feature_file_name('text_queries')} is there"
        )
    return out


def recall_at_k(
    retriever: Retriever,
    vectors: Any,
    k: int,
    filter: Filter | None,
    params: SearchParams | None,
) -> list[float]:
    """Per query: the share of the exact top k (float32 full scan) that ``params`` finds."""
    found = retriever.search_vectors(vectors, k, filter, params)
    truth = retriever.search_vectors(vectors, k, filter, EXACT)
    return [
        len({h.id for h in a} & {h.id for h in t}) / len(t) if t else 1.0
        for a, t in zip(found, truth, strict=True)
    ]


def _score(
    rankings: Mapping[str, list[Hit]],
    ids: IliasIds,
    kind: str,
    k: int,
    *,
    breakdowns: bool = False,
    taxonomy: Mapping[str, tuple[str, str]] | None = None,
    check_database: bool = False,
) -> tuple[RetrievalScores, Breakdowns | None]:
    """Score one kind's rankings once, as the reference does (hybrid queries are image ids)."""
    pairs = {q: [(h.id, h.score) for h in hits] for q, hits in rankings.items()}
    scored = score_rankings(
        pairs, ids, k=k, check_database=check_database, breakdowns=breakdowns, taxonomy=taxonomy
    )
    if kind == "text":
        assert scored.text is not None
        return scored.text, scored.text_breakdowns
    assert scored.image is not None
    return scored.image, scored.image_breakdowns


__all__ = [
    "QUERY_KINDS",
    "BenchmarkRun",
    "Evaluation",
    "QueryKind",
    "evaluate_collection",
    "ilias_ids_of",
    "rerankers_for_collection",
    "run_image_queries",
    "run_queries",
    "skip_reason",
]
