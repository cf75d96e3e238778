from .ames import (
    AMES_DEFAULTS as AMES_DEFAULTS,
    Ames as Ames,
    AmesWeightsError as AmesWeightsError,
    combine as combine,
    load_ames as load_ames,
)
from .aqe import (
    expand_query as expand_query,
)
from .chamfer import (
    chamfer_rank as chamfer_rank,
    chamfer_similarity as chamfer_similarity,
)
from .pipeline import (
    AlphaQueryExpansion as AlphaQueryExpansion,
    AmesRerank as AmesRerank,
    ChamferRerank as ChamferRerank,
    Reranker as Reranker,
    RerankQuery as RerankQuery,
    SearchScope as SearchScope,
    SpatialRerank as SpatialRerank,
    apply_rerankers as apply_rerankers,
    parse_rerankers as parse_rerankers,
)
from .spatial import (
    Verification as Verification,
    mutual_nearest_neighbours as mutual_nearest_neighbours,
    ransac as ransac,
    ransac_inliers as ransac_inliers,
    verify as verify,
    verify_shortlist as verify_shortlist,
)
