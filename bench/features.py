"""Loading reference HDF5 features vs the engine's raw upsert rate, same vectors, one run.

N unit vectors are written in the ILIAS reference's layout (float16 ``features``, ASCII
``index``: a positives file of ILIAS-form ids and the rest over numbered distractor files
of ``<shard>.tar/<key>`` ids), then loaded into fresh Qdrant Edge collections of one
store, in this order:

  raw     create a collection, then Store.upsert of the same rows (already float32, in
          memory) with the same payloads (already built), in chunks of the import's size
  import  ilias.indexing.import_features on the files (what `ilias load --features` runs):
          inspect, read ids, read + convert each chunk, build payloads, upsert; then its
          index build (HNSW + int8), timed apart
  raw     again, into another collection

The raw rate is the mean of the two raw runs around the import, so drift in what else the
machine runs, and the cost of a store's first collection, do not favour either side. The
goal: the import's upsert phase at >= 80% of the raw rate.

Run:  python bench/features.py [--n 200000] [--dim 512] [--files 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ilias.indexing import EdgeStore, import_features, read_features, write_features
from ilias.indexing.features import CHUNK_ROWS, feature_file_name, role_of
from ilias.indexing.store import CollectionConfig

ENCODER = "timm:bench"  # recorded only: nothing is encoded here


def reference_files(folder: Path, n: int, dim: int, files: int) -> tuple[list[Path], list[str]]:
    """N random unit rows as the reference writes them; 5% positives, the rest split over
    ``files`` distractor files. Returns the paths and all ids in file order."""
    rng = np.random.default_rng(0)
    positives = max(1, n // 20)
    ids = [f"inst{i // 5:05d}/pos/P{i % 5:03d}.jpg" for i in range(positives)]
    ids += [f"{i // 100_000:05d}.tar/{i:09d}" for i in range(n - positives)]
    paths = [folder / feature_file_name("positives")]
    bounds = [0, positives, *np.linspace(positives, n, files + 1)[1:].astype(int)]
    paths += [folder / feature_file_name("distractors", k) for k in range(files)]
    for path, start, end in zip(paths, bounds[:-1], bounds[1:], strict=True):
        x = rng.standard_normal((end - start, dim)).astype(np.float32)
        write_features(path, ids[start:end], x / np.linalg.norm(x, axis=1, keepdims=True))
    return paths, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--files", type=int, default=4, help="distractor files")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        paths, ids = reference_files(folder, args.n, args.dim, args.files)
        print(f"wrote {args.n} x {args.dim} float16 in {len(paths)} files "
              f"({time.perf_counter() - began:.1f} s)")  # fmt: skip

        # The raw baseline's inputs, prepared outside its timing: float32 rows and payloads.
        rows = np.concatenate([read_features(p).features for p in paths])
        roles = [role_of(i) for i in ids]
        payloads = [
            {"id": i, "role": role.value, **({"instance": instance} if instance else {})}
            for i, (role, instance) in zip(ids, roles, strict=True)
        ]

        with EdgeStore(folder / "qdrant") as store:

            def raw(name: str) -> float:
                began = time.perf_counter()  # the import creates its collection too
                store.create_collection(name, CollectionConfig(dim=args.dim, metadata={}))
                for start in range(0, args.n, CHUNK_ROWS):
                    end = start + CHUNK_ROWS
                    store.upsert(name, ids[start:end], rows[start:end], payloads[start:end])
                return time.perf_counter() - began

            raw_s = [raw("raw-before")]
            marks: list[float] = []
            began = time.perf_counter()
            report = import_features(
                paths, store, "import", encoder=ENCODER,
                progress=lambda done, total: marks.append(time.perf_counter()),
            )  # fmt: skip
            import_build = time.perf_counter() - marks[-1]
            import_s = marks[-1] - began  # the last progress call: every row stored
            raw_s.append(raw("raw-after"))
            assert report.loaded == args.n == store.count("import") == store.count("raw-after")

    raw_rate = float(np.mean([args.n / s for s in raw_s]))
    import_rate = args.n / import_s
    print(f"\n{'path':42s} {'points/s':>10s} {'upsert s':>9s}")
    for label, seconds in zip(("raw Store.upsert, before", "raw Store.upsert, after"), raw_s,
                              strict=True):  # fmt: skip
        print(f"{label + ' (memory, float32)':42s} {args.n / seconds:10.0f} {seconds:9.1f}")
    print(f"{'import_features (HDF5 float16 files)':42s} {import_rate:10.0f} {import_s:9.1f}")
    print(f"(the import's index build, HNSW + int8: {import_build:.1f} s)")
    print(
        f"\nsummary: import {import_rate / raw_rate:.2f}x the raw upsert rate "
        f"({import_rate:.0f} vs {raw_rate:.0f} points/s, the mean of the two raw runs; "
        f"N={args.n}, d={args.dim}, goal >= 0.80)"
    )


if __name__ == "__main__":
    main()
