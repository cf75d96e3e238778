from .benchmark import (
    BenchmarkRun as BenchmarkRun,
    QueryKind as QueryKind,
    run_image_queries as run_image_queries,
    run_queries as run_queries,
)
from .retriever import (
    QueryImage as QueryImage,
    Retriever as Retriever,
    query_images_of as query_images_of,
)
from .where import (
    WhereError as WhereError,
    parse_where as parse_where,
)
