"""Extraction throughput: the Dask pipeline vs a plain torch loop vs forward-only, one run,
for each device, precision and number of decode threads asked.

Same model, same images, same resolution and batch size, measured back to back:

  dask         ilias.indexing.extract on a LocalCluster (decode + resize + forward in workers),
               once per (device, precision, decode threads)
  torch loop   one process, all cores to torch: decode, preprocess, forward, batch by batch,
               once per (device, precision)
  forward      the network alone on tensors decoded and preprocessed beforehand
  decode       decoding + preprocessing alone in one process, per decode threads and with
               the JPEG draft on and off

Run:  python bench/extract.py [--images 256] [--workers 2] [--resolution 384]
          [--device cpu --device cuda] [--precision fp32 --precision bf16]
          [--decode-threads 1 --decode-threads 2] [--large 3000]
The images are the database of the offline demo benchmark (generated from real photos);
``--large PX`` re-saves them as JPEGs whose larger side is PX (camera-sized files), where
decoding costs more than the forward pass and the draft applies.
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from ilias.config import data_home
from ilias.demo import build_demo_benchmark
from ilias.indexing import DEFAULT_ENCODER, ExtractionOptions, build_encoder, extract
from ilias.indexing.devices import gpu_count, local_worker_devices
from ilias.indexing.extract import local_cluster
from ilias.loader import Record, decode_image, read_ilias


def enlarged(records: list[Record], side: int, folder: Path) -> list[Record]:
    """The records' images as JPEGs with the larger side ``side`` (made once, then reused)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index, record in enumerate(records):
        path = folder / f"{index:05d}.jpg"
        if not path.exists():
            image = decode_image(record.id, record.source)
            assert isinstance(image, Image.Image)
            factor = side / max(image.size)
            size = (round(image.width * factor), round(image.height * factor))
            buffer = io.BytesIO()
            image.resize(size, Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
            path.write_bytes(buffer.getvalue())
        out.append(Record(record.id, path, record.payload))
    return out


def decode_rate(records: list[Record], encoder, threads: int, draft: bool) -> float:
    """Images/s of decode + preprocess alone (what each worker does before the forward)."""

    def one(record: Record):
        target = encoder.resolution if draft else None
        return encoder.preprocess(decode_image(record.id, record.source, draft_to=target))

    began = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:  # as the workers do, one thread included
        list(pool.map(one, records))
    return len(records) / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="default: cores, or GPUs")
    parser.add_argument("--resolution", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--device", action="append", help="repeatable (default: auto)")
    parser.add_argument("--precision", action="append", help="repeatable (default: auto)")
    parser.add_argument("--decode-threads", type=int, action="append", help="repeatable")
    parser.add_argument("--large", type=int, default=None, help="re-save as PX-sided JPEGs")
    parser.add_argument("--no-draft", action="store_true", help="the pipeline decodes fully")
    parser.add_argument("--workdir", type=Path, default=data_home() / "demo")
    args = parser.parse_args()
    devices = args.device or ["auto"]
    precisions = args.precision or ["auto"]
    thread_counts = args.decode_threads or [1]

    demo = build_demo_benchmark(args.workdir / "data")
    records = read_ilias(demo.core_dir, demo.distractor_dir).database[: args.images]
    if args.large:
        records = enlarged(records, args.large, args.workdir / f"bench-large-{args.large}")
    n = len(records)
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    print(
        f"{n} images{f' ({args.large} px JPEGs)' if args.large else ''}, {args.encoder}, "
        f"batch {args.batch_size}, {cores} cores, {gpu_count()} GPUs, torch {torch.__version__}"
    )

    rows: list[tuple[str, float]] = []
    probe = build_encoder(args.encoder, args.resolution, device="cpu", precision="fp32")
    resolution = probe.resolution
    decode_rate(records, probe, 1, False)  # file cache and first-call costs, unmeasured
    for threads, draft in itertools.product(thread_counts, (True, False)):
        rate = decode_rate(records, probe, threads, draft)
        state = "on" if draft else "off"
        rows.append((f"decode+preprocess, {threads} threads, draft {state}", rate))

    for device, precision in itertools.product(devices, precisions):
        encoder = build_encoder(args.encoder, resolution, device=device, precision=precision)
        label = f"{encoder.device.type} {encoder.precision}"
        warm = decode_image(records[0].id, records[0].source)
        assert isinstance(warm, Image.Image)
        encoder.encode_images([warm])  # no contestant pays for first-call allocations
        began = time.perf_counter()
        tensors = [encoder.preprocess(decode_image(r.id, r.source)) for r in records]  # type: ignore[arg-type]
        loop_decode = time.perf_counter() - began
        began = time.perf_counter()
        encoder.encode_preprocessed(tensors, args.batch_size)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        forward = time.perf_counter() - began
        rows.append((f"torch loop, {label}", n / (loop_decode + forward)))
        rows.append((f"forward only, {label}", n / forward))
        del encoder, tensors

        plan = local_worker_devices(device, gpu_count(), args.workers)
        workers = len(plan) if plan else (args.workers or cores)
        with local_cluster(workers, plan) as cluster:
            for threads in thread_counts:
                options = ExtractionOptions(
                    encoder=args.encoder,
                    resolution=resolution,
                    batch_size=args.batch_size,
                    scheduler=cluster.scheduler_address,
                    partition_size=max(8, n // (4 * workers)),
                    device=device,
                    precision=precision,
                    decode_threads=threads,
                    draft=not args.no_draft,
                )
                warm_options = ExtractionOptions(**{**options.__dict__, "partition_size": 1})
                began = time.perf_counter()
                for _ in extract(records[: workers * 2], warm_options):  # import torch, load
                    pass
                startup = time.perf_counter() - began
                began = time.perf_counter()
                extracted = sum(len(part.ids) for part in extract(records, options))
                seconds = time.perf_counter() - began
                assert extracted == n, f"dask extracted {extracted} of {n}"
                rows.append(
                    (f"dask, {workers} workers, {label}, {threads} decode threads", n / seconds)
                )
                print(f"  (warm-up of {label}, {threads} threads: {startup:.1f} s)")

    print(f"\n{'contestant':58s} {'images/s':>9s}")
    for name, rate in rows:
        print(f"{name:58s} {rate:9.1f}")
    dask_rows = [(name, rate) for name, rate in rows if name.startswith("dask")]
    loops = [rate for name, rate in rows if name.startswith("torch loop")]
    decodes = [rate for name, rate in rows if name.startswith("decode")]
    base = dask_rows[0][1]
    ratios = ", ".join(f"{name.split(', ', 2)[2]} {rate / base:.2f}x" for name, rate in dask_rows)
    print(
        f"\nsummary at {resolution}px: dask vs its first row: {ratios}; best dask / best torch "
        f"loop = {max(r for _, r in dask_rows) / max(loops):.2f}x; decode threads and draft: "
        f"best / first decode row = {max(decodes) / decodes[0]:.2f}x (throughput ratios)"
    )


if __name__ == "__main__":
    main()
