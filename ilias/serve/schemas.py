"""Request and response models: the OpenAPI document at /openapi.json is built from these."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ilias.serve.settings import MAX_K
from ilias.types import MAX_HNSW_EF, MAX_OVERSAMPLING

# Lengths no real request comes near; they bound the work a request can ask for.
MAX_ID_CHARS = 1024  # a dataset id is a relative path (ILIAS: ~40 characters)
MAX_TEXT_CHARS = 2000
MAX_CLAUSE_CHARS = 1000
MAX_CLAUSES = 32
MAX_STEPS = 8


def clean_text(value: str) -> str:
    """A string the store, the file system and a tokenizer can all take: valid Unicode
    (no lone surrogate such as ``\\ud800``) and no NUL character."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate); send UTF-8 text") from None
    if "\0" in value:
        raise ValueError("holds a NUL character; remove it")
    return value


NO_NUL = r"^[^\x00]*$"  # in the schema too, so that a client's generator knows
IdText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_CHARS, pattern=NO_NUL),
    AfterValidator(clean_text),
]
QueryText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_TEXT_CHARS, pattern=NO_NUL),
    AfterValidator(clean_text),
]
Clause = Annotated[
    str,
    Field(min_length=1, max_length=MAX_CLAUSE_CHARS, pattern=NO_NUL),
    AfterValidator(clean_text),
]


_Corner = Annotated[int, Field(ge=0, le=1_000_000)]
_Side = Annotated[int, Field(ge=1, le=1_000_000)]
Box = tuple[_Corner, _Corner, _Side, _Side]  # [x, y, w, h]: the corner inside, an area


class SearchParamsModel(BaseModel):
    """How Qdrant searches (the CLI's --exact, --hnsw-ef, --oversampling, --rescore)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    exact: bool = False
    hnsw_ef: int | None = Field(default=None, ge=1, le=MAX_HNSW_EF)
    oversampling: float | None = Field(default=None, ge=1.0, le=MAX_OVERSAMPLING)
    rescore: bool = True


class SearchRequest(BaseModel):
    """A search by a stored point's id ("more like this", its stored vector), by text, or
    both (hybrid). Uploading an image instead: ``POST .../search/image`` with this model as
    the ``query`` form field."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: IdText | None = Field(
        default=None, description="dataset id of a stored point: search with its vector"
    )
    text: QueryText | None = Field(
        default=None, description="text query (needs a vision-language encoder)"
    )
    weight: float = Field(default=0.5, ge=0.0, le=1.0, description="text share of a hybrid score")
    k: int = Field(default=10, ge=1, le=MAX_K)
    where: list[Clause] = Field(
        default_factory=list,
        max_length=MAX_CLAUSES,
        description="clauses as --where takes them: role=positive, scale>=0.1",
    )
    filter: dict[str, Any] | None = Field(
        None,
        description="structured filter: {key: value | [values] | {gte, lte, gt, lt}}; "
        "ANDed with the where clauses",
    )
    params: SearchParamsModel = Field(default_factory=SearchParamsModel)
    rerank: list[Clause] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="re-ranking steps, as --rerank takes them: aqe, cs, sp",
    )
    bbox: Box | None = Field(
        default=None,
        description="search with this region of the query image only, [x, y, w, h] in its "
        "pixels (the crop of the CLI's --bbox); with an id, the stored image's region",
    )


class HitModel(BaseModel):
    rank: int
    id: str
    score: float
    payload: dict[str, Any]
    thumbnail: str
    image: str


class SearchResponse(BaseModel):
    collection: str
    query: str
    k: int
    hits: list[HitModel]
    timings_ms: dict[str, float] = Field(description="milliseconds per stage")


class CollectionModel(BaseModel):
    name: str
    aliases: list[str]
    points: int
    indexed_vectors: int
    status: str | None
    dim: int
    local_dim: int | None
    encoder: str | None
    resolution: int | None
    metadata: dict[str, Any]


class CollectionsResponse(BaseModel):
    store: str
    default: str
    collections: list[CollectionModel]
    aliases: dict[str, str]


class RunSummary(BaseModel):
    name: str
    map: float | None
    oracle: float | None
    n_queries: int
    k: int
    collection: str | None
    encoder: str | None
    created: str | None


class QueryAP(BaseModel):
    query_id: str
    instance: str
    kind: str
    ap: float
    oracle: float
    n_positives: int


class RunDetail(BaseModel):
    run: RunSummary
    queries: list[QueryAP] = Field(description="image queries, lowest AP first")


class RankedHit(BaseModel):
    rank: int
    id: str
    score: float
    positive: bool
    thumbnail: str


class MissedPositive(BaseModel):
    id: str
    rank: int | None = Field(description="rank in the stored ranking; None: not in the top k")
    thumbnail: str


class QueryDetail(BaseModel):
    run: str
    query_id: str
    instance: str
    ap: float | None
    n_positives: int
    image: str
    hits: list[RankedHit]
    missed: list[MissedPositive]


class ComparedQuery(BaseModel):
    query_id: str
    ap_a: float
    ap_b: float
    delta: float


class RunComparison(BaseModel):
    a: RunSummary
    b: RunSummary
    queries: list[ComparedQuery] = Field(description="largest |B - A| first")
