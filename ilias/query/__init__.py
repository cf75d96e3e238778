"""query: image-to-image search for applications, the CLI and benchmark runs."""

from ilias.query.benchmark import BenchmarkRun, QueryKind, run_image_queries, run_queries
from ilias.query.retriever import QueryImage, Retriever, query_images_of

__all__ = [
    "BenchmarkRun",
    "QueryImage",
    "QueryKind",
    "Retriever",
    "query_images_of",
    "run_image_queries",
    "run_queries",
]
