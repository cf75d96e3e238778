from .evaluation import (
    EXACT as EXACT,
    QUERY_KINDS as QUERY_KINDS,
    BenchmarkRun as BenchmarkRun,
    Evaluation as Evaluation,
    QueryKind as QueryKind,
    evaluate_collection as evaluate_collection,
    ilias_ids_of as ilias_ids_of,
    recall_at_k as recall_at_k,
    rerankers_for_collection as rerankers_for_collection,
    run_image_queries as run_image_queries,
    run_queries as run_queries,
    skip_reason as skip_reason,
)
from .export import (
    FeatureExport as FeatureExport,
    export_features as export_features,
)
from .mining import (
    DEFAULT_TEMPLATES as DEFAULT_TEMPLATES,
    MiningResult as MiningResult,
    Prompt as Prompt,
    class_names as class_names,
    make_prompts as make_prompts,
    mine_distractors as mine_distractors,
    write_mining_stats as write_mining_stats,
    write_selection as write_selection,
)
from .protocols import (
    ProtocolRun as ProtocolRun,
    evaluate_gpr1200 as evaluate_gpr1200,
    evaluate_uned as evaluate_uned,
)
from .report import (
    HitRow as HitRow,
    evaluation_summary as evaluation_summary,
    hits_json as hits_json,
    hits_table_rows as hits_table_rows,
    per_query_rows as per_query_rows,
    plot_evaluation as plot_evaluation,
    run_summary_json as run_summary_json,
    write_similarity_files as write_similarity_files,
)
from .retriever import (
    QueryImage as QueryImage,
    Retriever as Retriever,
    query_images_of as query_images_of,
)
from .where import (
    WhereError as WhereError,
    parse_bbox as parse_bbox,
    parse_where as parse_where,
)
