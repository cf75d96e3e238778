"""Re-ranking on the demo benchmark: mAP@1k for global, aQE, Chamfer, spatial verification.

Loads the demo benchmark's database (run `ilias demo` first) into a collection that also
holds local descriptors (EfficientNet-Lite0 stride-16 features, 112-d: top 100 per database
image, 600 per query, by token norm), then scores every setting on the same collection in
one run, with the oracle and the per-query time of each stage.

Image queries are whole images, as the reference extracts them; ``--crop-queries`` crops
them to their boxes first (global and local descriptors alike).

Run:  python bench/rerank.py [--workers 2] [--crop-queries]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ilias.config import data_home
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.indexing.local_features import LocalConfig
from ilias.loader import read_ilias
from ilias.query import evaluate_collection

SETTINGS = [
    ("global", []),
    ("aQE n=1 alpha=1", ["aqe:n=1:alpha=1"]),
    ("aQE n=2 alpha=1", ["aqe:n=2:alpha=1"]),
    ("aQE n=5 alpha=1", ["aqe:n=5:alpha=1"]),
    ("CS (in Qdrant)", ["cs"]),
    ("SP top 100", ["sp:top=100"]),
    ("CS then aQE n=1", ["cs", "aqe:n=1:alpha=1"]),
    ("CS then SP top 100", ["cs", "sp:top=100"]),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--crop-queries", action="store_true", help="crop queries to their box")
    args = parser.parse_args()

    store = EdgeStore(args.workdir / "qdrant")
    demo = next(c for c in store.list_collections() if c.startswith("ilias-demo-"))
    meta = store.collection_config(demo).metadata
    bench = read_ilias(meta["dataset"], meta["distractors"])
    collection = f"{demo}-local"
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=meta["resolution"], n_workers=args.workers,
        local=LocalConfig(),
    )  # fmt: skip
    report = load_collection(bench.database, store, collection, options, metadata=meta)
    if report.loaded:
        print(f"loaded {report.loaded} images with local descriptors in "
              f"{report.extract_seconds:.0f} s")  # fmt: skip
    form = "cropped to their box" if args.crop_queries else "whole"
    print(f"{len(bench.image_queries)} image queries ({form}), "
          f"{len(bench.database)} database images "
          "(demo benchmark: generated from real images, not ILIAS)\n")  # fmt: skip
    print(f"{'setting':22s} {'mAP@1k':>7s} {'oracle':>7s}   per-query ms by stage")
    base = None
    ratios: list[str] = []
    for name, steps in SETTINGS:
        run = evaluate_collection(
            store, collection, bench, rerank=steps, crop_queries=args.crop_queries
        ).run("image")
        per_query = {s: 1000 * t / run.n_queries for s, t in run.stage_seconds.items()}
        stages = ", ".join(f"{s} {t:.1f}" for s, t in per_query.items()) or (
            f"global {1000 * run.search_seconds / run.n_queries:.1f}"
        )
        base = base if base is not None else run.scores.map
        ratios.append(f"{name} {run.scores.map / base:.2f}x")
        print(f"{name:22s} {run.scores.map:7.2f} {run.scores.oracle:7.2f}   {stages}")
    store.close()
    print(f"\nsummary (mAP@1k vs global {base:.2f}): {'; '.join(ratios[1:])}")


if __name__ == "__main__":
    main()
