"""Extraction throughput: the Dask pipeline vs a plain torch loop vs forward-only, one run.

Same model, same images, same resolution and batch size, measured back to back:

  dask        ilias.indexing.extract on a LocalCluster (decode + resize + forward in workers)
  torch loop  one process, all cores to torch: decode, preprocess, forward, batch by batch
  forward     the network alone on tensors decoded and preprocessed beforehand

Run:  python bench/extract.py [--images 256] [--workers 2] [--resolution 384]
The images are the database of the offline demo benchmark (generated from real photos).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from ilias.config import data_home
from ilias.demo import build_demo_benchmark
from ilias.indexing import DEFAULT_ENCODER, ExtractionOptions, build_encoder, extract
from ilias.indexing.encoders import group_by_shape
from ilias.indexing.extract import local_cluster
from ilias.loader import decode_image, read_ilias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    args = parser.parse_args()

    demo = build_demo_benchmark(args.workdir / "data")
    records = read_ilias(demo.core_dir, demo.distractor_dir).database[: args.images]
    n = len(records)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    encoder = build_encoder(args.encoder, args.resolution)
    print(
        f"{n} images, {args.encoder} at {encoder.resolution}px, batch {args.batch_size}, "
        f"{cores} cores, torch {torch.__version__}"
    )

    # Warm-up so no contestant pays for first-call allocations.
    encoder.encode_images([decode_image(records[0].id, records[0].source)])

    began = time.perf_counter()
    tensors = [encoder.preprocess(decode_image(r.id, r.source)) for r in records]
    loop_decode = time.perf_counter() - began
    began = time.perf_counter()
    encoder.encode_preprocessed(tensors, args.batch_size)
    forward = time.perf_counter() - began
    torch_loop = loop_decode + forward

    batches = group_by_shape([t.shape for t in tensors], args.batch_size)
    with local_cluster(args.workers) as cluster:
        options = ExtractionOptions(
            encoder=args.encoder,
            resolution=encoder.resolution,
            batch_size=args.batch_size,
            scheduler=cluster.scheduler_address,
            partition_size=max(8, n // (4 * args.workers)),
        )
        began = time.perf_counter()
        warm = ExtractionOptions(**{**options.__dict__, "partition_size": 1})
        for _ in extract(records[: args.workers * 2], warm):  # workers import torch, load model
            pass
        startup = time.perf_counter() - began
        began = time.perf_counter()
        extracted = sum(len(part.ids) for part in extract(records, options))
        dask_total = time.perf_counter() - began
    assert extracted == n, f"dask extracted {extracted} of {n}"

    rows = [
        ("dask pipeline (warm workers)", dask_total),
        ("torch loop (decode+preprocess+forward)", torch_loop),
        ("forward only (pre-decoded tensors)", forward),
    ]
    print(f"\n{'contestant':42s} {'seconds':>8s} {'images/s':>9s}")
    for name, seconds in rows:
        print(f"{name:42s} {seconds:8.2f} {n / seconds:9.1f}")
    print(
        f"({len(batches)} batches; decode+preprocess alone: {n / loop_decode:.1f} images/s; "
        f"worker start + model load, paid once per run: {startup:.1f} s)"
    )
    print(
        f"\nsummary: dask/torch-loop = {torch_loop / dask_total:.2f}x, "
        f"dask/forward-only = {forward / dask_total:.2f}x, "
        f"torch-loop/forward-only = {forward / torch_loop:.2f}x (throughput ratios)"
    )


if __name__ == "__main__":
    main()
