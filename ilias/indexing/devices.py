"""Where encoders run (``--device``) and in which arithmetic (``--precision``).

Devices: ``auto`` (the first CUDA GPU when torch sees one, else the CPU), ``cpu``, ``cuda``
(the current CUDA device, normally the first visible one) or ``cuda:N``. Precisions:
``auto`` (fp16 autocast on CUDA, as the ILIAS reference extracts; fp32 on the CPU), ``fp32``,
``fp16`` or ``bf16`` (``torch.autocast`` with that type; descriptors always leave as
float32). On the CPU, fp16 autocast works but is slow (measured 10x slower than fp32 for
EfficientNet-Lite0 here), so ``auto`` never picks it there; bf16 is the fast reduced
precision on CPUs.

Several GPUs on one machine: the local Dask cluster gets one worker process per visible GPU
(``local_worker_devices``) and each worker is pinned to its own ``cuda:i``. Workers of a
remote scheduler use ``cuda``, i.e. the first GPU in their own ``CUDA_VISIBLE_DEVICES``
(start one worker per GPU with that variable set, as dask-cuda does), unless
``ILIAS_WORKER_DEVICE`` in a worker's environment names its device (``cuda:1``).

The syntax checks (``check_device``, ``check_precision``) import nothing heavy, so options
can be refused before any model or cluster starts; ``resolve_device`` asks torch what this
process can see, which is why it runs where the encoder runs (a driver without a GPU may
drive workers that have one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ilias.errors import DeviceError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
WORKER_DEVICE_ENV = "ILIAS_WORKER_DEVICE"
LOCAL_DEVICES_ENV = "ILIAS_LOCAL_DEVICES"
_DEVICE = re.compile(r"^(auto|cpu|cuda)$|^cuda:(\d+)$")


def check_device(device: str) -> str:
    """``device`` unchanged when it is one of auto, cpu, cuda, cuda:N (no torch import)."""
    if not isinstance(device, str) or not _DEVICE.match(device):
        raise DeviceError(f"--device {device!r} is not known: use {DEVICE_CHOICES}")
    return device


def check_precision(precision: str) -> str:
    """``precision`` unchanged when it is one of auto, fp32, fp16, bf16."""
    if precision not in PRECISIONS:
        raise DeviceError(f"--precision {precision!r} is not known: use {', '.join(PRECISIONS)}")
    return precision


def gpu_count() -> int:
    """CUDA GPUs torch sees in this process (0 on a CPU-only build or machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device ``device`` names here, with an explicit index for CUDA.

    ``cuda`` without a visible GPU, or ``cuda:N`` beyond the GPUs visible, is one line that
    says what is there and what to pass instead.
    """
    import torch

    check_device(device)
    if device == "cpu":
        return torch.device("cpu")
    count = gpu_count()
    if device == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if count else torch.device("cpu")
    if not count:
        build = f"torch {torch.__version__}" + (
            "" if torch.version.cuda else ", a build without CUDA"
        )
        raise DeviceError(
            f"--device {device}: torch sees no CUDA GPU here ({build}); "
            "use --device cpu or --device auto"
        )
    index = torch.cuda.current_device() if device == "cuda" else int(device.split(":")[1])
    if index >= count:
        visible = ", ".join(f"cuda:{i}" for i in range(count))
        raise DeviceError(
            f"--device {device}: only {count} CUDA GPU{'s' if count > 1 else ''} visible "
            f"({visible}); pick one of them, or --device cuda"
        )
    return torch.device("cuda", index)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` made concrete for ``device``: fp16 on CUDA (the reference's), fp32 on the CPU."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "fp16" if device.type == "cuda" else "fp32"


def local_worker_devices(
    device: str, n_gpus: int, n_workers: int | None = None
) -> list[str] | None:
    """The device of each worker of a local cluster, or None when the workers use the CPU.

    ``cuda`` (or ``auto`` on a machine with GPUs): one worker per GPU by default, worker i on
    ``cuda:i``; asking for more workers deals them out over the GPUs in turn. ``cuda:N``:
    every worker on that one GPU (one worker by default). ``cpu``, or ``auto`` without a
    GPU: None (CPU workers, as many as the cores allow). A GPU that is not there is refused.
    """
    check_device(device)
    if device == "cpu" or (device == "auto" and n_gpus == 0):
        return None
    if n_gpus == 0:
        raise DeviceError(f"--device {device}: no CUDA GPU is visible; use --device cpu or auto")
    if device in ("cuda", "auto"):
        count = n_workers or n_gpus
        return [f"cuda:{i % n_gpus}" for i in range(count)]
    index = int(device.split(":")[1])
    if index >= n_gpus:
        raise DeviceError(
            f"--device {device}: only {n_gpus} CUDA GPU{'s' if n_gpus > 1 else ''} visible; "
            f"use cuda:0 to cuda:{n_gpus - 1}, or --device cuda for all of them"
        )
    return [device] * (n_workers or 1)


def worker_device(requested: str, pinned: str | None = None) -> str:
    """The device one worker process uses: its pinned GPU when the run asked for ``cuda`` or
    ``auto`` and the worker has one (``pinned_device``); otherwise what the run asked for.
    ``cpu`` and an explicit ``cuda:N`` always win."""
    if pinned and requested in ("auto", "cuda"):
        return pinned
    return requested


def pinned_device(environ: Mapping[str, str], worker_name: object) -> str | None:
    """The device a worker process is pinned to, from its environment, or None.

    ``ILIAS_WORKER_DEVICE`` names it outright (whoever starts a remote worker may set it).
    Workers of ilias's local cluster share one list, ``ILIAS_LOCAL_DEVICES`` (set by
    ``local_cluster``), and worker ``i`` (LocalCluster names its workers 0, 1, ...; a
    restarted worker keeps its name) takes entry ``i`` modulo its length.
    """
    explicit = environ.get(WORKER_DEVICE_ENV)
    if explicit:
        try:
            return check_device(explicit)
        except DeviceError:
            raise DeviceError(
                f"{WORKER_DEVICE_ENV}={explicit!r} on a Dask worker is not a device: "
                f"use {DEVICE_CHOICES}"
            ) from None
    plan = environ.get(LOCAL_DEVICES_ENV)
    if plan and isinstance(worker_name, int):
        devices = plan.split(",")
        return devices[worker_name % len(devices)]
    return None
