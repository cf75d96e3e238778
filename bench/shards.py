"""Loading from WebDataset tar shards vs the same images as files, and a rerun over shards.

The demo database images (real photos and clip art) are written once as JPEG files and
once as tar shards of the same bytes; both are loaded through `ilias.indexing.load_collection`
(Dask LocalCluster, driver upserts into Qdrant Edge) into fresh collections, back to back:

  files    a folder of JPEGs: the driver lists paths, chunks of `partition_size` per task
  shards   one task per tar shard: the worker streams the tar itself
  rerun    the shard load again over the complete collection: the ledger skips every shard

Run:  python bench/shards.py [--images 600] [--shards 6] [--workers 2]
Goal (issue 10): shards within 5% of files; the rerun takes seconds.
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image

from ilias.config import data_home
from ilias.demo import build_demo_benchmark
from ilias.indexing import DEFAULT_ENCODER, EdgeStore, ExtractionOptions, load_collection
from ilias.loader import open_dataset, read_ilias


def jpeg_bytes(path: Path) -> bytes:
    out = io.BytesIO()
    Image.open(path).convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    args = parser.parse_args()

    demo = build_demo_benchmark(args.workdir / "data")
    sources = [r.source for r in read_ilias(demo.core_dir, demo.distractor_dir).database]
    sources = [Path(s) for s in sources if isinstance(s, str | Path)][: args.images]
    print(
        f"{len(sources)} images in {args.shards} shards, {args.encoder} at {args.resolution}px, "
        f"{args.workers} workers, {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files, shards = root / "files", root / "shards"
        files.mkdir()
        shards.mkdir()
        per_shard = -(-len(sources) // args.shards)
        for index in range(args.shards):
            with tarfile.open(shards / f"{index:05d}.tar", "w") as tar:
                for slot, path in enumerate(sources[index * per_shard : (index + 1) * per_shard]):
                    data = jpeg_bytes(path)
                    (files / f"{index:05d}_{slot:06d}.jpg").write_bytes(data)
                    info = tarfile.TarInfo(f"{slot:06d}.jpg")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        options = ExtractionOptions(
            encoder=args.encoder, resolution=args.resolution, n_workers=args.workers,
            partition_size=per_shard,
        )  # fmt: skip
        rows = []
        with EdgeStore(root / "qdrant") as store:
            for name, spec in (("files", files), ("shards", shards), ("rerun", shards)):
                began = time.perf_counter()
                report = load_collection(
                    open_dataset(str(spec)), store, name.replace("rerun", "shards"), options
                )
                seconds = time.perf_counter() - began
                rate = report.loaded / report.extract_seconds if report.loaded else 0.0
                rows.append((name, report.loaded, report.shards_skipped, seconds, rate))
    print(f"{'load':8} {'loaded':>7} {'skipped shards':>15} {'total s':>8} {'images/s':>9}")
    for name, loaded, skipped, seconds, rate in rows:
        print(f"{name:8} {loaded:7d} {skipped:15d} {seconds:8.1f} {rate:9.1f}")
    files_rate, shards_rate = rows[0][4], rows[1][4]
    print(
        f"summary: shards/files throughput {shards_rate / files_rate:.3f} "
        f"(goal >= 0.95); rerun over {args.shards} loaded shards {rows[2][3]:.1f} s"
    )


if __name__ == "__main__":
    main()
