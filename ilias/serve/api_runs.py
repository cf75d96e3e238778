"""Evaluation runs (``ilias eval run`` results folders under ``--runs DIR``): the runs, the
per-query AP of one, one query's ranking with its positives marked and the positives it
missed, and two runs side by side.

Everything is read from the folder's own files (``metrics.json``, ``per_query.parquet``,
``similarities.json``) and the dataset's id lists, so what the page shows is what the run
wrote; a run is named by its folder name, and only folders listed under ``--runs`` exist.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from pydantic import AfterValidator

from ilias.serve.api_search import image_urls
from ilias.serve.errors import NotFound, error_responses
from ilias.serve.files import contained_path, file_response
from ilias.serve.schemas import (
    MAX_ID_CHARS,
    NO_NUL,
    ComparedQuery,
    MissedPositive,
    QueryAP,
    QueryDetail,
    RankedHit,
    RunComparison,
    RunDetail,
    RunSummary,
    clean_text,
)
from ilias.serve.settings import MAX_K
from ilias.serve.state import ServiceState

router = APIRouter(
    prefix="/api/runs", tags=["evaluation runs"], responses=error_responses(400, 401, 404, 422)
)
QueryId = Annotated[
    str,
    Query(
        description="the query id, e.g. cat/query/Q000.jpg",
        min_length=1,
        max_length=MAX_ID_CHARS,
        pattern=NO_NUL,
    ),
    AfterValidator(clean_text),
]
# What a run's query image may be: a picture, never a text or list file of the dataset.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def _folders(state: ServiceState) -> dict[str, Path]:
    root = state.settings.runs
    if root is None or not root.is_dir():
        return {}
    candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    return {p.name: p for p in candidates if (p / "metrics.json").is_file()}


def _folder(state: ServiceState, run: str) -> Path:
    folders = _folders(state)
    if run not in folders:
        known = ", ".join(folders) or "none (start the service with --runs DIR)"
        raise NotFound(f"no run {run!r}; known: {known}")
    return folders[run]


def _metrics(folder: Path) -> dict[str, Any]:
    from ilias.eval.report import read_metrics

    return read_metrics(folder)


def _summary(name: str, metrics: dict[str, Any]) -> RunSummary:
    return RunSummary(
        name=name,
        map=metrics.get("map"),
        oracle=metrics.get("oracle"),
        n_queries=metrics.get("n_queries", 0),
        k=metrics.get("k", 1000),
        collection=(metrics.get("store") or {}).get("collection"),
        encoder=(metrics.get("encoder") or {}).get("spec"),
        created=metrics.get("created"),
    )


def _image_rows(folder: Path) -> list[QueryAP]:
    from ilias.eval.report import PER_QUERY_FILE, read_per_query

    rows = read_per_query(folder / PER_QUERY_FILE)
    return [
        QueryAP(
            query_id=r.query_id,
            instance=r.instance,
            kind=r.kind,
            ap=r.ap,
            oracle=r.oracle,
            n_positives=r.n_positives,
        )
        for r in rows
        if r.kind == "image"
    ]


@lru_cache(maxsize=8)
def _rankings(path: str, mtime_ns: int) -> dict[str, list[tuple[str, float]]]:
    """A run's image rankings, best first (read once per file version)."""
    from ilias.eval import read_similarities

    return {
        query: sorted(ranking, key=lambda pair: -pair[1])
        for query, ranking in read_similarities(path).items()
    }


@lru_cache(maxsize=8)
def _positives(dataset: str) -> dict[str, frozenset[str]]:
    """Instance -> its positive database ids, from the dataset's id lists."""
    from ilias.eval.results import instance_of, read_ilias_ids

    by_instance: dict[str, set[str]] = {}
    for db_id in read_ilias_ids(dataset).positive_info:
        by_instance.setdefault(instance_of(db_id), set()).add(db_id)
    return {k: frozenset(v) for k, v in by_instance.items()}


@router.get("", response_model=list[RunSummary])
def list_runs(request: Request) -> list[RunSummary]:
    """The runs under --runs, with their mAP."""
    state: ServiceState = request.app.state.service
    return [_summary(name, _metrics(folder)) for name, folder in _folders(state).items()]


@router.get("/compare", response_model=RunComparison)
def compare(
    request: Request,
    a: Annotated[str, Query(description="run A")],
    b: Annotated[str, Query(description="run B")],
) -> RunComparison:
    """Per-query AP of two runs on the queries they share, largest difference first."""
    state: ServiceState = request.app.state.service
    folder_a, folder_b = _folder(state, a), _folder(state, b)
    ap_a = {r.query_id: r.ap for r in _image_rows(folder_a)}
    ap_b = {r.query_id: r.ap for r in _image_rows(folder_b)}
    shared = [q for q in ap_a if q in ap_b]
    rows = [
        ComparedQuery(query_id=q, ap_a=ap_a[q], ap_b=ap_b[q], delta=ap_b[q] - ap_a[q])
        for q in shared
    ]
    rows.sort(key=lambda row: (-abs(row.delta), row.query_id))
    return RunComparison(
        a=_summary(a, _metrics(folder_a)), b=_summary(b, _metrics(folder_b)), queries=rows
    )


@router.get("/{run}", response_model=RunDetail)
def run_detail(run: str, request: Request) -> RunDetail:
    """One run: its numbers and the AP of every image query, lowest first."""
    state: ServiceState = request.app.state.service
    folder = _folder(state, run)
    rows = sorted(_image_rows(folder), key=lambda r: (r.ap, r.query_id))
    return RunDetail(run=_summary(run, _metrics(folder)), queries=rows)


@router.get("/{run}/query", response_model=QueryDetail)
def query_detail(
    run: str,
    request: Request,
    id: QueryId,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many ranks to show")] = 50,
) -> QueryDetail:
    """One query of a run: its top k with positives marked, and the positives it missed
    (not in the top k shown) with their rank in the stored ranking, if any."""
    from ilias.eval.results import instance_of
    from ilias.query.report import SIMILARITY_STEMS

    state: ServiceState = request.app.state.service
    folder = _folder(state, run)
    metrics = _metrics(folder)
    similarities = folder / f"{SIMILARITY_STEMS['image']}.json"
    if not similarities.is_file():
        raise NotFound(
            f"run {run!r} wrote no {similarities.name}; add json to [output] similarities"
        )
    rankings = _rankings(str(similarities), similarities.stat().st_mtime_ns)
    if id not in rankings:
        raise NotFound(f"no image query {id!r} in run {run!r}")
    instance = instance_of(id)
    dataset = (metrics.get("dataset") or {}).get("path")
    positives = _positives(str(dataset)).get(instance, frozenset()) if dataset else frozenset()
    collection = (metrics.get("store") or {}).get("collection") or state.settings.collection
    ranking = rankings[id]
    hits = [
        RankedHit(
            rank=rank,
            id=db_id,
            score=score,
            positive=db_id in positives,
            thumbnail=image_urls(collection, db_id)[0],
        )
        for rank, (db_id, score) in enumerate(ranking[:k], start=1)
    ]
    rank_of = {db_id: rank for rank, (db_id, _) in enumerate(ranking, start=1)}
    missed = sorted(
        (
            MissedPositive(id=p, rank=rank_of.get(p), thumbnail=image_urls(collection, p)[0])
            for p in positives
            if rank_of.get(p, k + 1) > k
        ),
        key=lambda m: (m.rank is None, m.rank or 0, m.id),
    )
    ap = next((r.ap for r in _image_rows(folder) if r.query_id == id), None)
    return QueryDetail(
        run=run,
        query_id=id,
        instance=instance,
        ap=ap,
        n_positives=len(positives),
        image=f"/api/runs/{quote(run, safe='')}/query-image?id={quote(id, safe='')}",
        hits=hits,
        missed=missed,
    )


@router.get(
    "/{run}/query-image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "the query image"}},
)
def query_image(run: str, request: Request, id: QueryId) -> Response:
    """A query's image: only a query the run lists, only a picture, and only from inside a
    dataset folder that a collection of this store records (a run folder's own word for
    where its dataset is does not open any other folder)."""
    state: ServiceState = request.app.state.service
    folder = _folder(state, run)
    missing = NotFound(f"no query image {id!r} in run {run!r}")
    if Path(id).suffix.lower() not in IMAGE_SUFFIXES:
        raise missing
    if id not in {row.query_id for row in _image_rows(folder)}:
        raise missing
    dataset = (_metrics(folder).get("dataset") or {}).get("path")
    if not dataset:
        raise NotFound(f"run {run!r} records no dataset folder")
    if not _served_root(state, str(dataset)):
        raise NotFound(
            f"run {run!r} records dataset {str(dataset)[:200]!r}, which no collection of "
            "this store was loaded from; its query images are not served"
        )
    return file_response(request, contained_path(id, [dataset], f"query {id!r}"))


def _served_root(state: ServiceState, dataset: str) -> bool:
    """Whether ``dataset`` is (resolved) a folder a collection of the store records."""
    try:
        wanted = Path(dataset).resolve()
    except (OSError, ValueError):
        return False
    return any(Path(root).resolve() == wanted for root in state.served_roots())
