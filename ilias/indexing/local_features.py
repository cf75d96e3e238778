"""Local descriptors for re-ranking: the strongest patches of a backbone feature map.

A ViT's patch tokens (DINOv2-with-registers style) or a CNN's stride-16 feature map are
cut to the top-k positions by a weight: a learned detector's score where one is loaded,
else the token's L2 norm (strong activations mark object parts, weak ones flat
background). Each kept descriptor is L2-normalised, optionally binarised, and carries its
patch centre in the original image's pixels so spatial verification can fit a geometry.
Database images keep 100, queries 600 (the asymmetry the re-rankers are designed for).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ilias.types import LocalConfig, LocalFeatures


@functools.lru_cache(maxsize=4)
def load_detector(path: str) -> torch.nn.Module:
    """A learned detector: a state dict ``{"weight": (1, C) or (C,), "bias": (1,)}`` of a
    linear patch scorer, the form the DINOv2-based re-ranking pipelines train on top of
    frozen tokens. Higher score = more likely a patch of the object."""
    from ilias.errors import EncoderSpecError

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "weight" not in state:
        raise EncoderSpecError(f"{path} is not a detector state dict with a 'weight' tensor")
    weight = state["weight"].reshape(1, -1).float()
    scorer = torch.nn.Linear(weight.shape[1], 1)
    with torch.no_grad():
        scorer.weight.copy_(weight)
        scorer.bias.copy_(state.get("bias", torch.zeros(1)).reshape(1).float())
    return scorer.eval()


def select_local(
    feature_map: torch.Tensor,
    top_k: int,
    scale_x: float,
    scale_y: float,
    offset: tuple[float, float] = (0.0, 0.0),
    binarize: bool = False,
    detector: torch.nn.Module | None = None,
) -> LocalFeatures:
    """Top-k positions of one ``(C, H, W)`` map, as descriptors with original-image coordinates.

    ``scale_x/scale_y`` map feature-grid cells to original pixels (input stride divided by
    the resize factor); ``offset`` removes the padding added before the network.
    """
    channels, height, width = feature_map.shape
    tokens = feature_map.reshape(channels, height * width).T.float()  # (HW, C)
    if detector is not None:
        if detector.in_features != channels:
            raise ValueError(f"detector takes {detector.in_features}-d tokens, map has {channels}")
        with torch.no_grad():
            weights = detector(tokens).reshape(-1)
    else:
        weights = tokens.norm(dim=1)
    k = min(top_k, tokens.shape[0])
    order = torch.topk(weights, k).indices
    chosen = tokens[order]
    if binarize:
        chosen = torch.where(chosen >= 0, 1.0, -1.0)
    chosen = F.normalize(chosen, dim=1)
    rows, cols = order // width, order % width
    xy = torch.stack(
        [(cols.float() + 0.5) * scale_x - offset[0], (rows.float() + 0.5) * scale_y - offset[1]],
        dim=1,
    )
    return LocalFeatures(
        descriptors=chosen.numpy().astype(np.float32),
        xy=xy.numpy().astype(np.float32),
        weights=weights[order].numpy().astype(np.float32),
    )


__all__ = ["LocalConfig", "LocalFeatures", "load_detector", "select_local"]
