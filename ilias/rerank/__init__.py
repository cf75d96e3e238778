"""rerank: refinement of the top-1k shortlist (alpha-QE, Chamfer, spatial verification, AMES)."""

from ilias.rerank.ames import Ames, combine, load_ames
from ilias.rerank.aqe import expand_query
from ilias.rerank.chamfer import chamfer_rank, chamfer_similarity
from ilias.rerank.pipeline import (
    AlphaQueryExpansion,
    AmesRerank,
    ChamferRerank,
    Reranker,
    RerankQuery,
    SearchScope,
    SpatialRerank,
    apply_rerankers,
    parse_rerankers,
)
from ilias.rerank.spatial import Verification, mutual_nearest_neighbours, ransac, verify

__all__ = [
    "AlphaQueryExpansion",
    "Ames",
    "AmesRerank",
    "ChamferRerank",
    "RerankQuery",
    "Reranker",
    "SearchScope",
    "SpatialRerank",
    "Verification",
    "apply_rerankers",
    "chamfer_rank",
    "chamfer_similarity",
    "combine",
    "expand_query",
    "load_ames",
    "mutual_nearest_neighbours",
    "parse_rerankers",
    "ransac",
    "verify",
]
