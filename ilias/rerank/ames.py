"""AMES (Asymmetric and Memory-Efficient Similarity), as published (pavelsuma/ames).

The published matcher, so a published checkpoint loads with ``strict=True``: both images'
local descriptors are L2-normalised and remapped to ``model_dim`` (128) by ``remap_local``
(``Linear`` + ``LayerNorm``; in the binarised variant an ITQ binarisation layer, a 768 x 128
projection ``W`` followed by ``sign``, comes first and the ``Linear`` is 128 x 128); a learned
match token ``mtc_token`` is prepended to the query's and the database image's tokens, and
one sequence of all three goes through ``decoder``: post-norm layers, each with a
self-attention restricted to tokens of the same image, a cross-attention restricted to
tokens of the other image (the match token sees both in both), and a ReLU MLP (1024). A
linear ``classifier`` on the match token gives the logit. In evaluation the full-precision
variant rounds database tokens through float16 after the remap, as published (its database
descriptors are stored in half precision).

The final score is the published one, ``lambda * global + (1 - lambda) * sigmoid(gamma *
logit)``, with the published lambda / gamma per variant (DINOv2: 0.55 / 0.30 full
precision, 0.35 / 0.10 binarised; the README's table), 600 query and 100 database
descriptors. No published weights exist offline: the tests check the layout, loading,
masking and determinism with random values, never ranking quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ilias.errors import IliasError

#: The published (lambda, gamma) for DINOv2 local descriptors, per variant.
AMES_DEFAULTS = {"fp": (0.55, 0.30), "binarized": (0.35, 0.10)}
QUERY_LOCAL, DATABASE_LOCAL = 600, 100  # descriptors per image, as in the ILIAS paper


class AmesWeightsError(IliasError):
    """A weights file that is not a published-layout AMES checkpoint for these descriptors."""


class Binarization(nn.Module):
    """The ITQ layer of the binarised variant: normalise, project by ``W``, take the sign."""

    def __init__(self, dims: int, bits: int):
        super().__init__()
        self.W = nn.Parameter(torch.zeros(dims, bits), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(F.normalize(x, dim=-1) @ self.W)


class AmesLayer(nn.Module):
    """One post-norm layer: masked self-attention, masked cross-attention, ReLU MLP."""

    def __init__(self, dim: int, heads: int, feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.linear1 = nn.Linear(dim, feedforward)
        self.linear2 = nn.Linear(feedforward, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, same: torch.Tensor, other: torch.Tensor, padding: torch.Tensor
    ) -> torch.Tensor:
        """``same`` / ``other``: (L, L) True where attention is not allowed; ``padding``
        (B, L) True for padded tokens."""
        attended = self.self_attn(x, x, x, attn_mask=same, key_padding_mask=padding)[0]
        x = self.norm1(x + attended)
        attended = self.cross_attn(x, x, x, attn_mask=other, key_padding_mask=padding)[0]
        x = self.norm2(x + attended)
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class AmesDecoder(nn.Module):
    def __init__(self, dim: int, heads: int, feedforward: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(AmesLayer(dim, heads, feedforward) for _ in range(layers))


class Ames(nn.Module):
    """The published AMES matcher; ``forward`` returns one logit per (query, database) pair."""

    def __init__(
        self,
        local_dim: int = 768,
        model_dim: int = 128,
        heads: int = 2,
        layers: int = 5,
        feedforward: int = 1024,
        binarized: bool = False,
    ):
        super().__init__()
        self.local_dim = local_dim
        self.binarized = binarized
        self.mtc_token = nn.Parameter(torch.zeros(model_dim))
        if binarized:
            self.remap_local = nn.Sequential(
                Binarization(local_dim, model_dim),
                nn.Linear(model_dim, model_dim),
                nn.LayerNorm(model_dim),
            )
        else:
            self.remap_local = nn.Sequential(
                nn.Linear(local_dim, model_dim), nn.LayerNorm(model_dim)
            )
        self.decoder = AmesDecoder(model_dim, heads, feedforward, layers)
        self.classifier = nn.Linear(model_dim, 1)

    @property
    def variant(self) -> str:
        return "binarized" if self.binarized else "fp"

    def forward(
        self,
        query: torch.Tensor,
        query_padding: torch.Tensor,
        database: torch.Tensor,
        database_padding: torch.Tensor,
    ) -> torch.Tensor:
        """``query`` (B, Q, D), ``database`` (B, T, D) and their (B, Q) / (B, T) padding
        flags (True: padded) -> (B,) logits."""
        q = self.remap_local(F.normalize(query, dim=-1))
        d = self.remap_local(F.normalize(database, dim=-1))
        if not self.training and not self.binarized:
            d = d.half().float()
        batch, n_q, n_d = q.shape[0], q.shape[1], d.shape[1]
        token = self.mtc_token.expand(batch, 1, -1)
        x = torch.cat([token, q, d], dim=1)
        padding = torch.cat(
            [query_padding.new_zeros(batch, 1), query_padding, database_padding], dim=1
        ).bool()
        side = torch.cat([torch.zeros(1), torch.ones(n_q), 2 * torch.ones(n_d)]).to(x.device)
        tokens = side > 0
        pairs = tokens[:, None] & tokens[None, :]
        same_side = side[:, None] == side[None, :]
        other = pairs & same_side  # cross-attention: not to tokens of the same image
        same = pairs & ~same_side  # self-attention: not to tokens of the other image
        for layer in self.decoder.layers:
            x = layer(x, same, other, padding)
        return self.classifier(x[:, 0]).view(-1)

    @torch.inference_mode()
    def score_pairs(self, query: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        """Logits of one query's local set against each candidate's (padded into a batch)."""
        if not candidates:
            return np.empty(0, dtype=np.float32)
        longest = max(len(c) for c in candidates)
        database = torch.zeros(len(candidates), longest, self.local_dim)
        database_padding = torch.ones(len(candidates), longest, dtype=torch.bool)
        for row, candidate in enumerate(candidates):
            database[row, : len(candidate)] = torch.from_numpy(np.asarray(candidate))
            database_padding[row, : len(candidate)] = False
        queries = torch.from_numpy(np.asarray(query)).float()[None].expand(len(candidates), -1, -1)
        query_padding = torch.zeros(queries.shape[:2], dtype=torch.bool)
        return self(queries, query_padding, database, database_padding).numpy()


def combine(global_scores: np.ndarray, logits: np.ndarray, lam: float, gamma: float) -> np.ndarray:
    """``lambda * global + (1 - lambda) * sigmoid(gamma * logit)``."""
    return lam * np.asarray(global_scores) + (1.0 - lam) / (
        1.0 + np.exp(-gamma * np.asarray(logits))
    )


def ames_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of a published checkpoint (``{"state": ...}``, as ``src/evaluate.py``
    reads it) or of a bare state dict."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AmesWeightsError(f"AMES weights {path} do not exist; pass --ames-weights FILE")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling refusal, a truncated file
        raise AmesWeightsError(f"{path} cannot be read as a torch checkpoint: {error}") from None
    state = checkpoint.get("state", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "mtc_token" not in state:
        raise AmesWeightsError(
            f"{path} is not an AMES checkpoint (no 'mtc_token'); use a published pavelsuma/ames "
            "network file"
        )
    return state


def load_ames(path: Path | str, local_dim: int | None = None) -> Ames:
    """A published-layout AMES checkpoint, loaded with ``strict=True``; the variant, widths
    and depth come from its tensors (heads: the published 2). ``local_dim`` checks that the
    collection's local descriptors are what the checkpoint takes."""
    state = ames_state_dict(path)
    binarized = "remap_local.0.W" in state
    if binarized:
        takes, model_dim = state["remap_local.0.W"].shape
    else:
        model_dim, takes = state["remap_local.0.weight"].shape
    if local_dim is not None and takes != local_dim:
        raise AmesWeightsError(
            f"{path} is an AMES checkpoint for {takes}-d local descriptors, the collection has "
            f"{local_dim}-d ones; use weights trained for this backbone"
        )
    layers = len({k.split(".")[2] for k in state if k.startswith("decoder.layers.")})
    feedforward = state["decoder.layers.0.linear1.weight"].shape[0]
    model = Ames(takes, model_dim, 2, layers, feedforward, binarized)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise AmesWeightsError(
            f"{path} does not match the published AMES layout: {first}"
        ) from None
    return model.eval()


__all__ = [
    "AMES_DEFAULTS",
    "DATABASE_LOCAL",
    "QUERY_LOCAL",
    "Ames",
    "AmesWeightsError",
    "ames_state_dict",
    "combine",
    "load_ames",
]
