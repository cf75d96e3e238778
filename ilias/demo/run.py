"""``ilias demo``: the main job end to end, offline, on a benchmark generated from real photos.

Builds a small ILIAS-format benchmark (``ilias.demo.generate``: clip art or scikit-image
objects as queries on clean backgrounds, harder views pasted into real photos as positives,
many distractors), loads it into an embedded Qdrant Edge collection through the Dask
pipeline, runs the image queries and reports mAP@1k and the oracle. The benchmark is
generated from real images and is **not** ILIAS; its numbers say the pipeline works, not how
a model ranks on ILIAS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ilias.config import DEFAULT_ENCODER
from ilias.demo.generate import DemoBenchmark, build_demo_benchmark
from ilias.indexing import ExtractionOptions, LoadReport, load_collection, open_store
from ilias.indexing.devices import check_device, check_precision
from ilias.loader import ilias_metadata, read_ilias
from ilias.query import BenchmarkRun, Evaluation, evaluate_collection
from ilias.types import SearchParams

DEMO_COLLECTION = "ilias-demo"


@dataclass(frozen=True)
class DemoResult:
    benchmark: DemoBenchmark
    load: LoadReport
    generate_seconds: float
    store_location: str
    collection: str
    evaluation: Evaluation

    @property
    def run(self) -> BenchmarkRun:
        """The image queries' run: rankings, scores, timings."""
        return self.evaluation.runs["image"]


def run_demo(
    workdir: Path,
    *,
    n_instances: int = 24,
    positives_per_instance: int = 4,
    n_distractors: int = 1000,
    seed: int = 0,
    encoder: str = DEFAULT_ENCODER,
    scheduler: str = "local",
    n_workers: int | None = None,
    params: SearchParams | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    device: str = "auto",
    precision: str = "auto",
) -> DemoResult:
    """Generate (or reuse) the demo benchmark, load it, then query and score it through
    ``ilias.query.evaluate_collection``, the runner every evaluation uses. ``device`` /
    ``precision``: where the images and queries are encoded (``ilias.indexing.devices``)."""

    def report(stage: str) -> Callable[[int, int | None], None] | None:
        return (lambda done, total: progress(stage, done, total or done)) if progress else None

    check_device(device)  # before minutes of generation, not after
    check_precision(precision)
    began = time.perf_counter()
    demo = build_demo_benchmark(
        workdir / "data",
        n_instances=n_instances,
        positives_per_instance=positives_per_instance,
        n_distractors=n_distractors,
        seed=seed,
        progress=report("generate"),
    )
    generate_seconds = time.perf_counter() - began
    benchmark = read_ilias(demo.core_dir, demo.distractor_dir)

    store_spec = f"edge:{workdir / 'qdrant'}"
    # One collection per benchmark shape: a demo with other parameters never mixes with it.
    collection = f"{DEMO_COLLECTION}-{demo.n_instances}x{demo.n_positives}-{demo.n_distractors}"
    with open_store(store_spec) as store:
        if store.collection_exists(collection):
            meta = store.collection_config(collection).metadata
            if meta.get("encoder") != encoder:
                store.drop(collection)
        options = ExtractionOptions(
            encoder=encoder,
            scheduler=scheduler,
            n_workers=n_workers,
            device=device,
            precision=precision,
        )
        metadata = ilias_metadata(demo.core_dir, demo.distractor_dir)
        load = load_collection(
            benchmark.database, store, collection, options, metadata=metadata,
            progress=report("extract"),
        )  # fmt: skip
        evaluation = evaluate_collection(
            store, collection, benchmark, k=1000, params=params, progress=progress,
            device=device, precision=precision,
        )  # fmt: skip
        location = str(store.info(collection).location)
    return DemoResult(demo, load, generate_seconds, location, collection, evaluation)
