"""eval: metrics exactly as the references compute them. Depends on numpy only."""

from ilias.eval.metrics import (
    RetrievalScores,
    average_precision_at_k,
    evaluate_rankings,
    oracle_at_k,
)

__all__ = ["RetrievalScores", "average_precision_at_k", "evaluate_rankings", "oracle_at_k"]
