"""Parallel descriptor extraction as a Dask bag: one encoder per worker process.

The records are split into partitions; each partition is decoded, resized and encoded inside
a worker (``encode_partition``), which builds its encoder once per process
(``cached_encoder``). Finished partitions are yielded to the caller as they complete, so an
embedded store (one process owns the shard) can upsert while the workers keep going.

Schedulers: ``"local"`` (a ``dask.distributed.LocalCluster`` of worker processes on this
machine), ``"sync"`` (everything in this process: tests, debugging, tiny jobs), or the
address of a running ``dask.distributed`` scheduler (``tcp://host:8786``); the same bag
runs unchanged on all three.

With a store that other processes can write (a Qdrant server), pass ``upload=WorkerUpload``:
each worker then upserts its own partition and hands back only ids and failures, so the
vectors never travel through the driver, which would otherwise be the bottleneck of a
cluster (every descriptor crossing one network link and one Python process).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

import dask
import dask.bag as db
import numpy as np
from PIL import Image

from ilias.errors import ExtractionError, IliasError
from ilias.indexing.devices import (
    LOCAL_DEVICES_ENV,
    check_device,
    check_precision,
    gpu_count,
    local_worker_devices,
    pinned_device,
    worker_device,
)
from ilias.indexing.encoders import Encoder, cached_encoder
from ilias.indexing.limits import check_batch_size, check_resolution, check_workers
from ilias.indexing.local_features import LocalConfig, LocalFeatures
from ilias.loader import DecodeFailure, Record, ShardReport, crop_to_box, decode_image
from ilias.loader.images import original_size
from ilias.loader.sources import Shard, chunks

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractionOptions:
    """How to extract: the encoder, its resolution, and how the work is cut and spread.

    ``device`` / ``precision``: where and in which arithmetic the encoder runs
    (``ilias.indexing.devices``; auto: CUDA in fp16 where a GPU is visible, else the CPU in
    fp32). With GPUs and the local scheduler there is one worker per GPU, each on its own.
    ``decode_threads``: threads decoding and preprocessing a partition inside each worker
    (Pillow releases the GIL while it decodes and resizes); None picks 1 on the CPU, where
    the forward pass already uses the worker's cores, and up to 8 for a GPU, which needs
    many decoders to stay busy. ``draft``: decode large JPEGs at a reduced size where the
    resolution allows (``ilias.loader.images.draft_scale``); False decodes every pixel.
    """

    encoder: str
    resolution: int | None = None
    batch_size: int = 16
    partition_size: int = 64
    scheduler: str = "local"
    n_workers: int | None = None
    crop_to_bbox: bool = False  # ILIAS crops image queries to their box, never the database
    local: LocalConfig | None = None  # also extract local descriptors for re-ranking
    device: str = "auto"
    precision: str = "auto"
    decode_threads: int | None = None
    draft: bool = True

    def __post_init__(self) -> None:
        check_device(self.device)  # spelling only: the GPUs are counted where they are
        check_precision(self.precision)
        if self.decode_threads is not None and self.decode_threads < 1:
            raise IliasError(f"--decode-threads {self.decode_threads}: use 1 or more")
        check_workers(self.n_workers, self.scheduler)  # before any process or pixel
        check_batch_size(self.batch_size)
        check_resolution(self.resolution)

    def workers(self) -> int:
        return self.n_workers or max(1, min(os.cpu_count() or 1, 8))


@dataclass
class ExtractedPartition:
    """One finished partition: descriptors for the records that decoded, and the failures."""

    ids: list[str]
    vectors: np.ndarray
    payloads: list[dict]
    dim: int
    resolution: int
    failures: list[DecodeFailure] = field(default_factory=list)
    seconds: float = 0.0
    uploaded: bool = False  # a worker already wrote it; vectors and payloads were dropped
    local: list[LocalFeatures] | None = None  # one set per id, with ExtractionOptions.local
    local_dim: int | None = None
    shard: str | None = None  # the source shard this partition is (see ilias.loader.sources)
    report: ShardReport | None = None  # what reading the shard skipped, and why it ended

    @property
    def n_records(self) -> int:
        return len(self.ids) + len(self.failures)


def _joined(parts: Sequence[ExtractedPartition], dim: int, resolution: int) -> ExtractedPartition:
    """Batches of one shard as one partition (order kept)."""
    local = [f for p in parts for f in p.local or []] if any(p.local for p in parts) else None
    return ExtractedPartition(
        ids=[i for p in parts for i in p.ids],
        vectors=np.concatenate([p.vectors for p in parts])
        if parts
        else np.empty((0, dim), np.float32),
        payloads=[x for p in parts for x in p.payloads],
        dim=dim,
        resolution=resolution,
        failures=[f for p in parts for f in p.failures],
        uploaded=any(p.uploaded for p in parts),
        local=local,
        local_dim=next((p.local_dim for p in parts if p.local_dim), None),
    )


@dataclass(frozen=True)
class WorkerUpload:
    """Where workers write their own partitions: a store spec every worker can open.

    Only the spec travels in the task graph (never a client or an API key: workers read
    ``QDRANT_API_KEY`` from their own environment).
    """

    spec: str
    collection: str


# One store per spec per worker process, opened at its first partition and kept: a Qdrant
# client holds a connection pool that later partitions reuse.
_WORKER_STORES: dict[str, object] = {}


def _worker_store(spec: str):
    from ilias.indexing.store import open_store

    store = _WORKER_STORES.get(spec)
    if store is None:
        store = _WORKER_STORES[spec] = open_store(spec)
    return store


def probe_encoder(options: ExtractionOptions) -> tuple[int, int, int | None]:
    """``(dim, resolution, local_dim)`` of the encoder, built where it runs (and cached there).

    A load whose workers upload must create the collection before the first partition is
    written, and the dimension is only known once a model exists; building it on a worker
    warms that worker's cache instead of loading a model in the driver for nothing.
    """
    encoder = _worker_encoder(options)
    return encoder.dim, encoder.resolution, local_dim_of(encoder, options.local)


def _worker_encoder(options: ExtractionOptions) -> Encoder:
    """This process's encoder on this worker's device (its pinned GPU, if it has one)."""
    device = worker_device(options.device, pinned_device(os.environ, _worker_name()))
    return cached_encoder(
        options.encoder, options.resolution, device=device, precision=options.precision
    )


def local_dim_of(encoder, config: LocalConfig | None) -> int | None:
    """Width of the encoder's local descriptors (one tiny forward pass), None without local."""
    if config is None:
        return None
    _, local = encoder.encode_with_local([Image.new("RGB", (64, 64))], top_k=1, config=config)
    return int(local[0].descriptors.shape[1])


def _worker_name() -> object:
    """This Dask worker's name (an int in a LocalCluster), None outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):  # the sync scheduler, or a plain call
        return None


def load_image_for(
    record: Record, crop_to_bbox: bool, *, draft_to: int | None = None
) -> Image.Image | DecodeFailure:
    """Decode a record's image, cropped to its ``bbox`` payload where asked (ILIAS queries).

    The box is clipped to the image; a box with no pixel inside the image is a failure that
    says so (cropping it would give an empty or all-black picture). ``draft_to``: decode a
    large JPEG at reduced size for that larger side (``decode_image``); never for a crop,
    whose box is in full-size pixels and whose detail is what the crop is for."""
    bbox = record.payload.get("bbox") if crop_to_bbox else None
    image = decode_image(record.id, record.source, draft_to=None if bbox else draft_to)
    if bbox and not isinstance(image, DecodeFailure):
        return crop_to_box(record.id, image, bbox)
    return image


def decode_threads_for(options: ExtractionOptions, encoder: Encoder, torch_threads: int) -> int:
    """Decode threads per worker: as asked, else 1 on the CPU (the forward pass already
    holds the worker's cores; more decoders would only contend with it) and, for a GPU,
    the worker's share of the cores between 2 and 8 (a GPU encodes far faster than one
    thread decodes)."""
    if options.decode_threads is not None:
        return options.decode_threads
    if encoder.device.type == "cpu":
        return 1
    return max(2, min(8, torch_threads))


Decoded = tuple[Record, "torch.Tensor", tuple[int, int]]


def _decode_and_preprocess(
    record: Record, options: ExtractionOptions, encoder: Encoder
) -> Decoded | DecodeFailure:
    """One record to its preprocessed CPU tensor and full-decode size, or why not."""
    draft_to = encoder.resolution if options.draft else None
    image = load_image_for(record, options.crop_to_bbox, draft_to=draft_to)
    if isinstance(image, DecodeFailure):
        return image
    try:
        tensor = encoder.preprocess(image)
    except (OSError, ValueError) as error:  # e.g. a 1x1 image some models cannot take
        return DecodeFailure(record.id, f"preprocessing failed: {error}")
    return record, tensor, original_size(image)


def encode_partition(
    records: Sequence[Record],
    options: ExtractionOptions,
    torch_threads: int,
    upload: WorkerUpload | None = None,
) -> ExtractedPartition:
    """Decode, preprocess and encode one partition inside a worker; bad images are counted.

    With ``upload``, the worker writes the partition into the store itself and returns it
    without vectors and payloads: the driver only needs ids and failures to count.
    """
    import torch

    started = time.perf_counter()
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    encoder = _worker_encoder(options)
    kept: list[Record] = []
    failures: list[DecodeFailure] = []
    # Even one decode thread is a thread of its own: it decodes the next images while this
    # one runs the forward pass, and its small torch ops (normalising, padding) do not go
    # through this thread's pool of torch threads, which made them 3x slower here.
    with ThreadPoolExecutor(decode_threads_for(options, encoder, torch_threads)) as pool:
        decoded = pool.map(_decode_and_preprocess, records, repeat(options), repeat(encoder))
        # Results arrive in input order; a batch is encoded as soon as it is full, while
        # the decode threads carry on with the rest of the partition.
        batches = _ShapeBatches(encoder, options)
        for result in decoded:
            if isinstance(result, DecodeFailure):
                logger.warning("skipped %s: %s", result.id, result.reason)
                failures.append(result)
                continue
            kept.append(result[0])
            batches.add(result[1], result[2])
    vectors, local = batches.finish()
    part = ExtractedPartition(
        ids=[r.id for r in kept],
        vectors=vectors,
        payloads=[r.payload for r in kept],
        dim=encoder.dim,
        resolution=encoder.resolution,
        failures=failures,
        local=local,
        local_dim=local[0].descriptors.shape[1] if local else None,
    )
    if upload is not None:
        if part.ids:
            _worker_store(upload.spec).upsert(
                upload.collection, part.ids, vectors, part.payloads, local=local
            )
        part.vectors = np.empty((0, encoder.dim), dtype=np.float32)
        part.payloads = []
        part.local = None
        part.uploaded = True
    part.seconds = time.perf_counter() - started
    return part


def encode_shard(
    shards: Sequence[tuple[Shard, frozenset[str]]],
    options: ExtractionOptions,
    torch_threads: int,
    upload: WorkerUpload | None = None,
) -> ExtractedPartition:
    """Read one shard where it is encoded and encode it in batches (one Dask partition).

    The shard's records stream through: at most ``partition_size`` images are decoded at
    a time, so a 100K-image tar never sits in memory. Records whose ids are in the
    shard's ``skip`` set (already stored: a resumed shard) are dropped before decoding.
    """
    ((shard, skip),) = shards  # the bag has one shard per partition
    report = ShardReport(shard.name)
    parts: list[ExtractedPartition] = []
    batch: list[Record] = []
    for record in shard.read(report):
        if record.id in skip:
            continue
        batch.append(record)
        if len(batch) == options.partition_size:
            parts.append(encode_partition(batch, options, torch_threads, upload))
            batch = []
    if batch or not parts:
        parts.append(encode_partition(batch, options, torch_threads, upload))
    part = _joined(parts, parts[0].dim, parts[0].resolution)
    part.shard, part.report = shard.name, report
    part.seconds = sum(p.seconds for p in parts)
    return part


class _ShapeBatches:
    """Tensors in, descriptors out in arrival order: a shape's batch is encoded when it
    holds ``batch_size`` tensors and the rest at ``finish``. The batches are exactly those of
    ``group_by_shape`` over the whole partition (same members, same order), so the
    descriptors are bit for bit those of encoding the partition at once, while the forward
    pass of one batch overlaps the decoding of the next."""

    def __init__(self, encoder: Encoder, options: ExtractionOptions):
        self.encoder = encoder
        self.options = options
        self.pending: dict[tuple[int, ...], list[tuple[int, Any, tuple[int, int]]]] = {}
        self.vectors: list[np.ndarray] = []
        self.local: list[LocalFeatures] = []
        self._order: list[int] = []  # arrival index of each encoded row
        self.count = 0

    def add(self, tensor: Any, size: tuple[int, int]) -> None:  # a torch.Tensor
        group = self.pending.setdefault(tuple(tensor.shape), [])
        group.append((self.count, tensor, size))
        self.count += 1
        if len(group) == self.options.batch_size:
            self._encode(group)
            group.clear()

    def _encode(self, group: list[tuple[int, Any, tuple[int, int]]]) -> None:
        tensors = [tensor for _, tensor, _ in group]
        local_config = self.options.local
        if local_config is None:
            rows = self.encoder.encode_preprocessed(tensors, len(tensors))
        else:
            top_k = (
                local_config.top_k_query
                if self.options.crop_to_bbox
                else local_config.top_k_database
            )
            rows, features = self.encoder.encode_preprocessed_with_local(
                tensors, [size for _, _, size in group], top_k, local_config, len(tensors)
            )
            self.local.extend(features)
        self.vectors.append(rows)
        self._order.extend(index for index, _, _ in group)

    def finish(self) -> tuple[np.ndarray, list[LocalFeatures] | None]:
        for group in self.pending.values():
            if group:
                self._encode(group)
        if not self.vectors:
            return np.empty((0, self.encoder.dim), dtype=np.float32), None
        order = np.argsort(np.asarray(self._order))  # encoding order -> arrival order
        vectors = np.concatenate(self.vectors)[order]
        local = [self.local[i] for i in order] if self.options.local is not None else None
        return vectors, local


def extract(
    records: Sequence[Record],
    options: ExtractionOptions,
    upload: WorkerUpload | None = None,
    prepare: Callable[[int, int, int | None], None] | None = None,
) -> Iterator[ExtractedPartition]:
    """Extract records known in the driver: ``extract_shards`` over fixed-size chunks."""
    yield from extract_shards(
        [(c, frozenset()) for c in chunks(records, options.partition_size)],
        options,
        upload,
        prepare,
    )


def extract_shards(
    shards: Sequence[tuple[Shard, frozenset[str]]],
    options: ExtractionOptions,
    upload: WorkerUpload | None = None,
    prepare: Callable[[int, int, int | None], None] | None = None,
    started: Callable[[], None] | None = None,
) -> Iterator[ExtractedPartition]:
    """Yield one extracted partition per ``(shard, ids to skip)``, in completion order.

    One shard is one Dask partition: the worker that encodes a tar shard reads it itself.
    ``upload``: workers write their partitions into that store themselves (yielded
    partitions are then ``uploaded`` and carry no vectors). ``prepare(dim, resolution,
    local_dim)`` runs in this process before any partition is encoded, with the encoder's
    dimension learnt from one worker: it is where the caller creates the collection the
    workers write to. ``started()`` runs once the workers are up, right before the first
    partition is handed to them: the start of the extraction's clock (a load's images/s),
    after the cluster's start-up.
    """
    if not shards:
        return
    bag = db.from_sequence(shards, partition_size=1)
    if options.scheduler == "sync":
        threads = os.cpu_count() or 1
        if prepare is not None:
            prepare(*probe_encoder(options))
        parts = bag.map_partitions(encode_shard, options, threads, upload).to_delayed()
        if started is not None:
            started()
        for part in parts:
            yield part.compute(scheduler="sync")
        return
    with _client(options) as client:
        threads = _threads_per_worker(client)
        if prepare is not None:
            prepare(*client.submit(probe_encoder, options, pure=False).result())
        parts = bag.map_partitions(encode_shard, options, threads, upload).to_delayed()
        from dask.distributed import as_completed

        if started is not None:
            started()
        futures = client.compute(parts)
        for future in as_completed(futures):
            yield _partition_result(future)
            future.release()


def _partition_result(future: Any) -> ExtractedPartition:
    """A finished partition; a partition that kept killing its workers is one clear error.

    Dask retries a partition on a fresh worker when its worker dies (out of memory, a
    crashing decoder) and gives up after ``distributed.scheduler.allowed-failures`` deaths.
    Every partition stored before that is kept: the load resumes where it stopped.
    """
    from distributed import KilledWorker

    try:
        result: ExtractedPartition = future.result()
    except KilledWorker as error:
        allowed = dask.config.get("distributed.scheduler.allowed-failures")
        raise ExtractionError(
            f"a partition killed {allowed + 1} Dask workers in a row (out of memory, or a "
            "decoder that crashes the process?); what was stored is kept, so run the load "
            "again to resume, with fewer --workers or a smaller --batch-size"
        ) from error
    return result


# dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 so they hand memory back to
# the OS; a CNN forward allocates and frees large activations every batch, and that setting
# turns each one into mmap/munmap churn (measured: 13.6 -> 19.9 images/s per worker without
# it, bench/extract.py). The BLAS thread caps stay: each worker sets torch's threads itself.
_WORKER_ENVIRON = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}


@contextmanager
def local_cluster(n_workers: int, devices: Sequence[str] | None = None):
    """Worker processes on this machine, one thread each (torch threads are set per task).

    ``devices``: worker ``i`` runs its encoder on ``devices[i % len(devices)]`` when the run
    asks for ``cuda`` or ``auto`` (``ilias.indexing.devices.pinned_device``): one worker
    per GPU, each on its own. Each worker process ends without the interpreter's teardown
    once its worker has closed (``ilias.indexing.worker_exit``): no "Worker process still
    alive after 4.0 seconds, killing" at the end of a load.
    """
    from dask.distributed import LocalCluster

    from ilias.indexing.worker_exit import ExitWithoutTeardown

    # Set in the worker processes only: the nanny copies its pre-spawn variables into this
    # process's own environment too, where they would outlive the cluster.
    worker_env = {LOCAL_DEVICES_ENV: ",".join(devices)} if devices else {}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _WORKER_ENVIRON}):
        cluster = LocalCluster(
            n_workers=n_workers,
            env=worker_env,
            threads_per_worker=1,
            processes=True,
            # No dashboard: with None, distributed still serves its HTTP routes on port
            # 8787 and warns when another cluster holds it; a free local port is silent.
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
            plugins=(ExitWithoutTeardown(),),  # kept by the nanny: restarted workers too
        )
    try:
        yield cluster
    finally:
        # A worker restarting after a crash can make closing fail ("can only join a started
        # process"); that must not replace the load's own result or error.
        try:
            cluster.close()
        except Exception as error:
            logger.warning("closing the local Dask cluster: %s", error)


@contextmanager
def _client(options: ExtractionOptions):
    """A distributed client: a LocalCluster we own, or a connection to a running scheduler."""
    from dask.distributed import Client

    if options.scheduler == "local":
        # Counted here, where the local workers will run: one worker per GPU by default.
        devices = local_worker_devices(options.device, gpu_count(), options.n_workers)
        workers = len(devices) if devices else options.workers()
        with local_cluster(workers, devices) as cluster, Client(cluster) as client:
            yield client
    elif "://" in options.scheduler:
        with Client(options.scheduler) as client:
            yield client
    else:
        raise IliasError(
            f"unknown scheduler {options.scheduler!r}: use 'local', 'sync' or a "
            "dask.distributed address such as tcp://host:8786"
        )


def _threads_per_worker(client) -> int:
    """Torch threads per worker: each host's cores shared by the workers on it (min over hosts).

    Workers run one task thread each; giving torch the host's spare cores keeps a one-worker
    machine fast and stops several workers on one machine from oversubscribing it.
    """
    cores = client.run(os.cpu_count)  # {worker address: cores of its host}
    hosts = {address: info["host"] for address, info in client.scheduler_info()["workers"].items()}
    per_host: dict[str, list[int]] = {}
    for address, count in cores.items():
        per_host.setdefault(hosts.get(address, address), []).append(count or 1)
    return max(1, min((counts[0] // len(counts) for counts in per_host.values()), default=1))
