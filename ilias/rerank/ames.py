"""AMES (Asymmetric and Memory-Efficient Similarity): a learned local-descriptor matcher.

The published design: local descriptors of both images are remapped to 128-d; a match
token joins the query's tokens; a stack of decoder layers lets the query side attend to
itself (self-attention) and to the database image's tokens (cross-attention); a linear
classifier on the match token gives a logit that the two images show the same object.
The final score blends it with the global similarity:
``s = lambda * global + (1 - lambda) * sigmoid(gamma * logit)``.

No AMES weights exist offline: ``load_ames`` takes a user-supplied state dict for this
module layout; the tests check shapes, loading and the combination rule on a randomly
initialised model, which ranks nothing meaningfully.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ilias.errors import IliasError


class AmesLayer(nn.Module):
    """Pre-norm decoder layer: self-attention, cross-attention to the other image, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.norm_memory = nn.LayerNorm(dim)
        self.cross_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        x_padding: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.norm_self(x)
        x = x + self.self_attention(h, h, h, key_padding_mask=x_padding, need_weights=False)[0]
        h, m = self.norm_cross(x), self.norm_memory(memory)
        x = (
            x
            + self.cross_attention(h, m, m, key_padding_mask=memory_padding, need_weights=False)[0]
        )
        return x + self.mlp(self.norm_mlp(x))


class Ames(nn.Module):
    """Pairwise matcher over local descriptors; ``forward`` returns one logit per pair."""

    def __init__(self, local_dim: int, dim: int = 128, layers: int = 5, heads: int = 4):
        super().__init__()
        self.local_dim = local_dim
        self.remap = nn.Linear(local_dim, dim)
        self.side = nn.Embedding(2, dim)  # 0: query tokens, 1: database tokens
        self.match_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.layers = nn.ModuleList(AmesLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, 1)
        nn.init.normal_(self.match_token, std=0.02)

    def forward(
        self,
        query: torch.Tensor,
        database: torch.Tensor,
        query_padding: torch.Tensor | None = None,
        database_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``query`` (B, Nq, D) and ``database`` (B, Nd, D) local descriptors -> (B,) logits."""
        batch = query.shape[0]
        q = self.remap(query) + self.side.weight[0]
        d = self.remap(database) + self.side.weight[1]
        x = torch.cat([self.match_token.expand(batch, -1, -1), q], dim=1)
        if query_padding is not None:
            keep_token = torch.zeros(batch, 1, dtype=torch.bool, device=query.device)
            query_padding = torch.cat([keep_token, query_padding], dim=1)
        for layer in self.layers:
            x = layer(x, d, query_padding, database_padding)
        return self.classifier(self.norm(x[:, 0])).squeeze(-1)

    @torch.inference_mode()
    def score_pairs(self, query: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
        """Logits of one query's local set against each candidate's (padded into a batch)."""
        if not candidates:
            return np.empty(0, dtype=np.float32)
        longest = max(len(c) for c in candidates)
        database = torch.zeros(len(candidates), longest, self.local_dim)
        padding = torch.ones(len(candidates), longest, dtype=torch.bool)
        for row, candidate in enumerate(candidates):
            database[row, : len(candidate)] = torch.from_numpy(candidate)
            padding[row, : len(candidate)] = False
        queries = torch.from_numpy(query).unsqueeze(0).expand(len(candidates), -1, -1)
        return self(queries, database, None, padding).numpy()


def combine(global_scores: np.ndarray, logits: np.ndarray, lam: float, gamma: float) -> np.ndarray:
    """``lambda * global + (1 - lambda) * sigmoid(gamma * logit)``."""
    return lam * np.asarray(global_scores) + (1.0 - lam) / (
        1.0 + np.exp(-gamma * np.asarray(logits))
    )


def load_ames(path: Path | str, local_dim: int) -> Ames:
    """An AMES model with user-supplied weights (state dict of this module layout)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise IliasError(f"AMES weights {path} do not exist; pass --ames-weights FILE")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    width = state["remap.weight"].shape if "remap.weight" in state else None
    if width is None or width[1] != local_dim:
        raise IliasError(
            f"{path} is not an AMES state dict for {local_dim}-d local descriptors "
            f"(remap.weight shape: {width}); train or convert weights for this backbone"
        )
    layers = len({key.split(".")[1] for key in state if key.startswith("layers.")})
    model = Ames(local_dim, dim=width[0], layers=layers)
    model.load_state_dict(state)
    return model.eval()
