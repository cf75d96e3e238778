from .generate import (
    DemoBenchmark as DemoBenchmark,
    build_demo_benchmark as build_demo_benchmark,
)
from .run import (
    DEMO_COLLECTION as DEMO_COLLECTION,
    DemoResult as DemoResult,
    run_demo as run_demo,
)
