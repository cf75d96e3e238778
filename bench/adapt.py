"""Linear adaptation on real offline images: held-out retrieval and demo mAP@1k, before/after.

Labelled multi-domain set: the Open Clip Art Library (Debian openclipart-png), domain = its
top-level folder (animals, food, computer, ...), class = the sub-folder inside it; a
training class is the (class, domain) pair, as in UnED. The demo benchmark's instance
drawings are excluded from training.

Reported, for the reference recipe (5 epochs, lr 1e-3, batch 128 with drop_last, PyTorch's
default classifier init: what `ilias adapt train` does) on all labels, and on 80 % of the
labels with 20 % held out (never trained on: held-out R@1/mAP measure transfer), plus a
longer schedule and ilias's earlier recipe (xavier classifier, no drop_last): the demo
benchmark's mAP@1k with the base descriptors and with each layer (exact float32 ranking
over the demo collection's stored vectors).

Run:  python bench/adapt.py   (needs openclipart-png and `ilias demo` to have run)
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np

from ilias.config import data_home
from ilias.eval import evaluate_rankings
from ilias.indexing import DEFAULT_ENCODER, EdgeStore
from ilias.indexing.adaptation import Init, split_by_label, train_adaptation
from ilias.indexing.extract import ExtractionOptions, extract
from ilias.loader import Record, read_ilias
from ilias.query import Retriever, query_images_of

CLIPART = Path("/usr/share/openclipart/png")


def labelled_clipart(exclude: set[str], per_class: int, min_per_class: int) -> list[Record]:
    records = []
    for domain in sorted(p for p in CLIPART.iterdir() if p.is_dir() and p.name != "unsorted"):
        for class_dir in sorted(p for p in domain.iterdir() if p.is_dir()):
            files = [p for p in sorted(class_dir.rglob("*.png")) if str(p) not in exclude]
            if len(files) < min_per_class:
                continue
            for path in files[:per_class]:
                records.append(
                    Record(str(path), path, {"class": class_dir.name, "domain": domain.name})
                )
    return records


def demo_map(layer, bench, store, collection, retriever) -> float:
    ids = [r.id for r in bench.database]
    stored = store.retrieve_vectors(collection, ids)
    ids = list(stored)
    database = np.stack([stored[i] for i in ids])
    queries = retriever.encode_images(query_images_of(bench.image_queries))
    if layer is not None:
        database, queries = layer.apply_numpy(database), layer.apply_numpy(queries)
    sims = queries @ database.T
    rankings = {}
    for q, row in zip(bench.image_queries, sims, strict=True):
        top = np.argsort(-row, kind="stable")[:1000]
        rankings[q.id] = [(ids[j], float(row[j])) for j in top]
    truth = {q.id: bench.positives_for(q.id) for q in bench.image_queries}
    return evaluate_rankings(rankings, truth).map


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--min-per-class", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    args = parser.parse_args()

    store = EdgeStore(args.workdir / "qdrant")
    collection = next(c for c in store.list_collections() if c.startswith("ilias-demo"))
    meta = store.collection_config(collection).metadata
    bench = read_ilias(meta["dataset"], meta["distractors"])
    readme = (Path(meta["dataset"]) / "README.txt").read_text()
    exclude = {str(CLIPART / m) for m in re.findall(r"openclipart:(\S+\.png)", readme)}

    records = labelled_clipart(exclude, args.per_class, args.min_per_class)
    began = time.perf_counter()
    options = ExtractionOptions(encoder=DEFAULT_ENCODER, resolution=meta["resolution"])
    ids, parts = [], []
    for part in extract(records, options):
        ids += part.ids
        parts.append(part.vectors)
    x = np.concatenate(parts)
    label_of = {r.id: (r.payload["class"], r.payload["domain"]) for r in records}
    names = sorted({label_of[i] for i in ids})
    labels = np.array([names.index(label_of[i]) for i in ids])
    print(
        f"{len(ids)} clip arts, {len(names)} (class, domain) labels in "
        f"{len({d for _, d in names})} domains, extracted in {time.perf_counter() - began:.0f} s "
        f"({len(exclude)} demo instance drawings excluded)"
    )
    train, heldout = split_by_label(labels, 0.2, seed=0)
    _, dense = np.unique(labels[train], return_inverse=True)
    print(f"train {len(train)} images / held-out {len(heldout)} images of unseen labels\n")

    retriever = Retriever(store, collection)
    base = demo_map(None, bench, store, collection, retriever)
    # (name, trained on all labels, epochs, init, drop_last)
    schedules: list[tuple[str, bool, int, Init, bool]] = [
        ("reference recipe, all labels", True, 5, "reference", True),
        ("reference recipe, 80% labels", False, 5, "reference", True),
        ("50 epochs, 80% labels", False, 50, "reference", True),
        ("earlier recipe, 80% labels", False, 5, "xavier", False),
    ]
    _, every = np.unique(labels, return_inverse=True)
    rows = []
    for name, all_labels, epochs, init, drop_last in schedules:
        if all_labels:  # nothing is held out: no transfer numbers
            result = train_adaptation(x, every, epochs=epochs, init=init, drop_last=drop_last)
        else:
            result = train_adaptation(
                x[train], dense, x[heldout], labels[heldout], epochs=epochs, init=init,
                drop_last=drop_last,
            )  # fmt: skip
        last = result.epochs[-1]
        rows.append(
            (name, result.before, last, demo_map(result.layer, bench, store, collection, retriever))
        )
    print(f"{'schedule':28s} {'held-out R@1':>13s} {'held-out mAP':>13s} {'demo mAP@1k':>12s}")
    before = rows[1][1]
    print(
        f"{'no adaptation (1280-d)':28s} {before.recall_at_1:13.2f} {before.map:13.2f} {base:12.2f}"
    )
    for name, _, last, demo in rows:
        print(f"{name:28s} {last.recall_at_1:13.2f} {last.map:13.2f} {demo:12.2f}")
    print("(nan: trained on every label, none held out)")
    best = max(rows, key=lambda row: row[3])
    print(f"\nsummary: demo mAP@1k x{best[3] / base:.2f} ({best[0]}) vs no adaptation")
    store.close()


if __name__ == "__main__":
    main()
