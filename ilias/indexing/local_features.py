"""Local descriptors for re-ranking: the strongest patches of a backbone feature map.

A ViT's patch tokens (DINOv2-with-registers style) or a CNN's stride-16 feature map are
cut to the top-k positions by a weight: a learned detector's score where one is loaded
(AMES's published detector also supplies the descriptors it scores), else the token's L2
norm (strong activations mark object parts, weak ones flat
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


class AmesDetector(torch.nn.Module):
    """The detector AMES publishes (``extract/spatial_attention_2d.py``): a 1x1 conv and
    batch norm whose output, L2-normalised per position, *replaces* the backbone's tokens as
    the local descriptors, and a ReLU + 1x1 conv + softplus that scores each position. Its
    parameter names are the published ones (``conv1``, ``bn``, ``conv2``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 1, 1)
        self.bn = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, 1, 1, 1)
        self.in_features = channels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) -> normalised descriptors (B, C, H, W) and scores (B, 1, H, W)."""
        x = self.bn(self.conv1(x))
        descriptors = F.normalize(x, p=2, dim=1, eps=1e-15)
        return descriptors, F.softplus(self.conv2(F.relu(x)), beta=1, threshold=20)


@functools.lru_cache(maxsize=4)
def load_detector(path: str) -> torch.nn.Module:
    """A learned detector, in one of two forms:

    - AMES's published detector checkpoint, ``{"state": {conv1.*, bn.*, conv2.*}}`` (as its
      ``extract_descriptors.py`` loads it, ``strict=True``): an ``AmesDetector``;
    - a state dict ``{"weight": (1, C) or (C,), "bias": (1,)}`` of a linear patch scorer on
      frozen tokens. Higher score = more likely a patch of the object.
    """
    from ilias.errors import EncoderSpecError

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state"), dict):
        published = state["state"]
        if "conv1.weight" not in published:
            raise EncoderSpecError(f"{path} holds a 'state' without conv1.weight: no detector")
        detector = AmesDetector(published["conv1.weight"].shape[0])
        try:
            detector.load_state_dict(published, strict=True)
        except RuntimeError as error:
            raise EncoderSpecError(
                f"{path} does not match AMES's detector layout: {str(error).splitlines()[-1]}"
            ) from None
        return detector.eval()
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
            if isinstance(detector, AmesDetector):  # its descriptors replace the tokens
                described, scores = detector(feature_map[None].float())
                tokens = described[0].reshape(channels, height * width).T
                weights = scores.reshape(-1)
            else:
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
        descriptors=chosen.cpu().numpy().astype(np.float32),  # from a GPU map too
        xy=xy.cpu().numpy().astype(np.float32),
        weights=weights[order].cpu().numpy().astype(np.float32),
    )


__all__ = ["AmesDetector", "LocalConfig", "LocalFeatures", "load_detector", "select_local"]
