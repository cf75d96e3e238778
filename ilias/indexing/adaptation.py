"""Linear adaptation: ``Linear(d_in, d_out)`` then L2 normalisation, on frozen descriptors.

The ILIAS paper's finding: a linear layer learned with multi-domain class supervision (a
class is a (class, domain) pair) on top of a frozen backbone improves instance retrieval
for most models. The layer is trained here on descriptors, not pixels, so training is
seconds even on a CPU, and it is saved with the reference's keys (``layer.weight``,
``layer.bias``) so published layers load too.

Training recipe, by default exactly the reference's (``linear_adaptation/src/lin_adapt.py``):
every (class, domain) label is trained on (no hold-out); the layer is ``nn.Linear``
re-initialised Xavier-uniform with a zero bias; the cosine classifier is a bias-free
``nn.Linear`` with PyTorch's default init; loss: cross-entropy over 16 x (cosine - margin 0);
Adam lr 1e-3, weight decay 1e-6; batches of 128 drawn by ``RandomSampler`` with
``drop_last=True``; 5 epochs; output 512-d. Given the same seed, the same arrays and the same
label order, the trained layer is bit-identical to the reference's on the CPU.

ilias's earlier recipe stays available as options: ``heldout_*`` arrays for a retrieval
check on unseen labels, ``init="xavier"`` (Xavier-initialised classifier) and
``drop_last=False``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, RandomSampler

from ilias.errors import AdaptationError, EncoderSpecError
from ilias.indexing.checkpoints import check_checkpoint

logger = logging.getLogger(__name__)


class LinearAdaptation(nn.Module):
    """The adaptation layer; ``forward`` returns unit vectors.

    Built as the reference builds it (``nn.Linear``'s own init, then Xavier-uniform weights
    and a zero bias), so that the random stream, and with it training, matches the reference.
    """

    def __init__(self, d_in: int, d_out: int = 512):
        super().__init__()
        self.layer = nn.Linear(d_in, d_out)
        nn.init.xavier_uniform_(self.layer.weight)
        nn.init.zeros_(self.layer.bias)

    @property
    def d_in(self) -> int:
        return self.layer.in_features

    @property
    def d_out(self) -> int:
        return self.layer.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layer(x), dim=-1)

    @torch.inference_mode()
    def apply_numpy(self, x: np.ndarray) -> np.ndarray:
        return self(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def save_adaptation(layer: LinearAdaptation, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in layer.state_dict().items()}, path)
    return path


def load_adaptation(path: Path | str) -> LinearAdaptation:
    """Load a layer saved by ilias or by the ILIAS reference (``layer.weight``/``layer.bias``)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EncoderSpecError(
            f"adaptation layer {path} does not exist; train one: ilias adapt train"
        )
    check_checkpoint(path, "a linear adaptation layer (|adapt=)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else "unreadable"
        raise EncoderSpecError(f"{path} is not a torch checkpoint ({first})") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "layer.weight" not in state:
        keys = ", ".join(list(state)[:5]) if isinstance(state, dict) else type(state).__name__
        raise EncoderSpecError(
            f"{path} is not a linear adaptation layer: expected keys 'layer.weight' and "
            f"'layer.bias', found {keys}"
        )
    d_out, d_in = state["layer.weight"].shape
    layer = LinearAdaptation(d_in, d_out)
    layer.load_state_dict(state)
    return layer.eval()


@dataclass
class EpochReport:
    """Loss over the epoch's batches, and the held-out check (NaN when nothing is held out)."""

    epoch: int
    loss: float
    recall_at_1: float
    map: float


@dataclass
class TrainingResult:
    layer: LinearAdaptation
    before: EpochReport  # the held-out check on the raw descriptors (epoch 0)
    epochs: list[EpochReport] = field(default_factory=list)


Init = Literal["reference", "xavier"]
NOT_CHECKED = float("nan")


def train_adaptation(
    train_x: np.ndarray,
    train_labels: Sequence[int] | np.ndarray,
    heldout_x: np.ndarray | None = None,
    heldout_labels: Sequence[int] | np.ndarray | None = None,
    *,
    d_out: int = 512,
    epochs: int = 5,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    batch_size: int = 128,
    scale: float = 16.0,
    margin: float = 0.0,
    seed: int = 0,
    init: Init = "reference",
    drop_last: bool = True,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainingResult:
    """Train the layer with a cosine classifier, the reference's recipe by default.

    Labels are integers 0..C-1 for (class, domain) pairs. The classifier's class weights are
    learned with the layer and thrown away afterwards: only the layer is kept. Held-out
    arrays (labels never trained on) add a retrieval check after each epoch; without them
    the reports carry NaN for R@1 and mAP. ``init="xavier"`` initialises the classifier
    Xavier-uniform instead of PyTorch's default (ilias's earlier recipe); ``drop_last=False``
    also trains on each epoch's last, partial batch. ``on_epoch`` gets each report as it is
    made: the untrained baseline (epoch 0) first, then one per epoch.

    The caller's random state is left as it was: the seed alone decides the initialisation
    and the batches (``torch.manual_seed(seed)`` before the reference's
    ``train_lin_adapt_layer`` gives the same layer).
    """
    if init not in ("reference", "xavier"):
        raise AdaptationError(f"init must be 'reference' or 'xavier', not {init!r}")
    x = torch.from_numpy(np.ascontiguousarray(train_x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    if len(x) == 0:
        raise AdaptationError("no training descriptors: give labelled images to train on")
    n_classes = int(y.max()) + 1
    if drop_last and len(x) < batch_size:
        # The reference would take no step at all and return the random layer.
        logger.warning(
            "%d descriptors make no full batch of %d: training on one batch of %d per epoch",
            len(x),
            batch_size,
            len(x),
        )
        batch_size = len(x)
    checked = heldout_x is not None and heldout_labels is not None and len(heldout_x) > 0

    def check(features: np.ndarray | None) -> tuple[float, float]:
        if not checked or features is None or heldout_labels is None:
            return NOT_CHECKED, NOT_CHECKED
        return heldout_retrieval(features, heldout_labels)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = LinearAdaptation(x.shape[1], d_out)
        classifier = nn.Linear(d_out, n_classes, bias=False)
        if init == "xavier":
            nn.init.xavier_uniform_(classifier.weight)
        optimizer = torch.optim.Adam(
            [*layer.parameters(), *classifier.parameters()], lr=lr, weight_decay=weight_decay
        )
        sampler = BatchSampler(RandomSampler(range(len(x))), batch_size, drop_last=drop_last)
        result = TrainingResult(layer, EpochReport(0, NOT_CHECKED, *check(heldout_x)))
        if on_epoch:
            on_epoch(result.before)
        for epoch in range(1, epochs + 1):
            layer.train()
            total, seen = 0.0, 0
            for batch in sampler:
                # normalised twice, as the reference's network does: bit-identical training
                embedded = F.normalize(layer(x[batch]), dim=-1)
                cosine = embedded @ F.normalize(classifier.weight, dim=1).T
                target = F.one_hot(y[batch], n_classes).float()
                loss = F.cross_entropy(scale * (cosine - margin * target), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
                seen += len(batch)
            layer.eval()
            adapted = layer.apply_numpy(heldout_x) if checked and heldout_x is not None else None
            report = EpochReport(epoch, total / seen, *check(adapted))
            result.epochs.append(report)
            if on_epoch:
                on_epoch(report)
    return result


def heldout_retrieval(x: np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Leave-one-out retrieval among held-out items: R@1 and mAP (x100), full ranking.

    Each item queries all others; relevant = same (class, domain) label. Items whose label
    has no other member are not queries (nothing to find).
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :-1]  # drop self (ranked last)
    relevant = labels[order] == labels[:, None]
    n_relevant = relevant.sum(axis=1)
    queries = n_relevant > 0
    if not queries.any():
        return 0.0, 0.0
    relevant, n_relevant = relevant[queries], n_relevant[queries]
    hits = np.cumsum(relevant, axis=1)
    ranks = np.arange(1, relevant.shape[1] + 1)
    ap = ((hits / ranks) * relevant).sum(axis=1) / n_relevant
    return 100.0 * float(relevant[:, 0].mean()), 100.0 * float(ap.mean())


def split_by_label(
    labels: Sequence[int] | np.ndarray, heldout_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out items; held-out labels are never seen in training.

    Holding out whole classes (not images of seen classes) checks what instance retrieval
    needs: that the layer generalises to objects it was not trained on.
    """
    labels = np.asarray(labels)
    unique = np.unique(labels)
    rng = np.random.default_rng(seed)
    n_heldout = max(1, round(heldout_fraction * len(unique))) if heldout_fraction > 0 else 0
    if n_heldout >= len(unique):
        raise AdaptationError(
            f"{len(unique)} labels cannot give {n_heldout} held-out labels; lower the held-out "
            "fraction"
        )
    heldout_labels = rng.choice(unique, size=n_heldout, replace=False)
    heldout = np.isin(labels, heldout_labels)
    return np.flatnonzero(~heldout), np.flatnonzero(heldout)
