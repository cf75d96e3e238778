"""eval: metrics exactly as the references compute them, and the reference's file formats.

Numpy only at import. ``ilias.eval.plots`` (matplotlib) and the Parquet side of
``ilias.eval.report`` (pyarrow) are imported by the code that draws or writes them.
GPR1200 and UnED live in their own modules (``ilias.eval.gpr1200``, ``ilias.eval.uned``)
because their ``score_*`` functions share names.
"""

from ilias.eval.breakdowns import (
    CLUTTER_GROUPS,
    SCALE_GROUPS,
    Breakdowns,
    category_breakdown,
    compute_breakdowns,
    group_breakdown,
    parse_taxonomy,
    read_taxonomy,
)
from ilias.eval.metrics import (
    RetrievalScores,
    average_precision_at_k,
    average_precision_batch,
    evaluate_rankings,
    oracle_at_k,
)
from ilias.eval.results import (
    FileScores,
    IliasIds,
    UnknownIdsError,
    check_ids,
    read_ilias_ids,
    read_similarities,
    score_rankings,
    score_similarity_file,
    write_similarities,
    write_similarities_json,
    write_similarities_pickle,
)

__all__ = [
    "CLUTTER_GROUPS",
    "SCALE_GROUPS",
    "Breakdowns",
    "FileScores",
    "IliasIds",
    "RetrievalScores",
    "UnknownIdsError",
    "average_precision_at_k",
    "average_precision_batch",
    "category_breakdown",
    "check_ids",
    "compute_breakdowns",
    "evaluate_rankings",
    "group_breakdown",
    "oracle_at_k",
    "parse_taxonomy",
    "read_ilias_ids",
    "read_similarities",
    "read_taxonomy",
    "score_rankings",
    "score_similarity_file",
    "write_similarities",
    "write_similarities_json",
    "write_similarities_pickle",
]
