"""Local descriptors for re-ranking: the strongest patches of a backbone feature map.

A ViT's patch tokens (DINOv2-with-registers style) or a CNN's stride-16 feature map are
cut to the top-k positions by a weight: a learned detector's score where one is loaded,
else the token's L2 norm (strong activations mark object parts, weak ones flat
background). Each kept descriptor is L2-normalised, optionally binarised, and carries its
patch centre in the original image's pixels so spatial verification can fit a geometry.
Database images keep 100, queries 600 (the asymmetry the re-rankers are designed for).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LocalConfig:
    """How many local descriptors to keep, from which layer, and whether to binarise them."""

    top_k_database: int = 100
    top_k_query: int = 600
    layer: int | None = None  # feature index for forward_intermediates; None: model default
    binarize: bool = False

    def to_dict(self) -> dict:
        return {
            "top_k_database": self.top_k_database,
            "top_k_query": self.top_k_query,
            "layer": self.layer,
            "binarize": self.binarize,
        }


@dataclass(frozen=True)
class LocalFeatures:
    """``descriptors`` (k, d) unit rows, ``xy`` (k, 2) patch centres in original pixels."""

    descriptors: np.ndarray
    xy: np.ndarray
    weights: np.ndarray


def select_local(
    feature_map: torch.Tensor,
    top_k: int,
    scale_x: float,
    scale_y: float,
    offset: tuple[float, float] = (0.0, 0.0),
    binarize: bool = False,
    detector_weights: torch.Tensor | None = None,
) -> LocalFeatures:
    """Top-k positions of one ``(C, H, W)`` map, as descriptors with original-image coordinates.

    ``scale_x/scale_y`` map feature-grid cells to original pixels (input stride divided by
    the resize factor); ``offset`` removes the padding added before the network.
    """
    channels, height, width = feature_map.shape
    tokens = feature_map.reshape(channels, height * width).T.float()  # (HW, C)
    weights = detector_weights.reshape(-1) if detector_weights is not None else tokens.norm(dim=1)
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
