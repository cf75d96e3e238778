"""Re-ranking the shortlist: composable steps over a retriever's hits.

Each step takes the current ranking and returns a new one (and possibly a new query
vector, for query expansion), so steps compose in any order: ``cs,aqe`` re-scores the
shortlist by Chamfer similarity, then expands the query with the new top results.
Local descriptors live in the collection (the ``local`` multivector and ``local_xy``
payload), so Chamfer runs inside Qdrant (MAX_SIM) and the others fetch what they need.

Steps see the collection through ``CollectionView``, the few calls they need (a search,
stored vectors, stored local descriptors, an engine re-scoring), so this package depends
on neither the retriever that calls it nor an engine: ``ilias.indexing.store.Collection``
is the view a retriever passes in.
"""

from __future__ import annotations

import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ilias.errors import IliasError
from ilias.rerank.aqe import expand_query
from ilias.rerank.chamfer import max_sim_to_chamfer
from ilias.rerank.spatial import verify_shortlist
from ilias.types import Filter, Hit, LocalFeatures, SearchParams

if TYPE_CHECKING:
    from ilias.rerank.ames import Ames


class CollectionView(Protocol):
    """What re-rankers need from a collection (``ilias.indexing.store.Collection``)."""

    def search(
        self,
        vectors: np.ndarray,
        k: int,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]: ...

    def retrieve_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...

    def retrieve_local(self, ids: Sequence[str]) -> dict[str, LocalFeatures]: ...

    def rescore_local(self, query_local: np.ndarray, ids: Sequence[str]) -> list[Hit]: ...


@dataclass(frozen=True)
class RerankQuery:
    """What re-rankers know about a query: its global vector and, if extracted, its patches."""

    vector: np.ndarray
    local: LocalFeatures | None = None


@dataclass(frozen=True)
class SearchScope:
    k: int = 1000
    filter: Filter | None = None
    params: SearchParams | None = None


class Reranker(ABC):
    name: str
    needs_local: bool = False

    @abstractmethod
    def rerank(
        self, collection: CollectionView, query: RerankQuery, hits: list[Hit], scope: SearchScope
    ) -> tuple[list[Hit], RerankQuery]: ...


@dataclass
class AlphaQueryExpansion(Reranker):
    """New search with ``q' = normalize(q + sum_{i<=n} (q.x_i)^alpha x_i)``."""

    n: int = 1
    alpha: float = 1.0
    name: str = field(default="aqe", init=False)

    def rerank(self, collection, query, hits, scope):
        top = [h.id for h in hits[: self.n]]
        stored = collection.retrieve_vectors(top)
        neighbours = np.stack([stored[i] for i in top if i in stored]) if stored else None
        if neighbours is None:
            return hits, query
        expanded = expand_query(query.vector, neighbours, self.alpha)
        new_hits = collection.search(expanded[None], scope.k, scope.filter, scope.params)[0]
        return new_hits, replace(query, vector=expanded)


@dataclass
class ChamferRerank(Reranker):
    """Chamfer similarity of the query's patches to each candidate's, computed by Qdrant."""

    name: str = field(default="cs", init=False)
    needs_local: bool = field(default=True, init=False)

    def rerank(self, collection, query, hits, scope):
        rescored = collection.rescore_local(query.local.descriptors, [h.id for h in hits])
        seen = {h.id for h in rescored}
        ranked = max_sim_to_chamfer(rescored, len(query.local.descriptors))
        floor = min((h.score for h in ranked), default=0.0)
        # Candidates without local descriptors keep their order, below every re-scored one.
        rest = [replace(h, score=floor - 1.0) for h in hits if h.id not in seen]
        return ranked + rest, query


@dataclass
class SpatialRerank(Reranker):
    """RANSAC inliers of mutual-NN patch matches, added to the current score of the top N."""

    top: int = 100
    model: str = "similarity"
    threshold: float = 24.0
    weight: float = 1.0
    cap: int = 20
    seed: int = 0
    name: str = field(default="sp", init=False)
    needs_local: bool = field(default=True, init=False)

    def rerank(self, collection, query, hits, scope):
        head, tail = hits[: self.top], hits[self.top :]
        local = collection.retrieve_local([h.id for h in head])
        found = [h for h in head if h.id in local]
        checked = verify_shortlist(
            query.local.descriptors, query.local.xy,
            [(local[h.id].descriptors, local[h.id].xy) for h in found],
            model=self.model, threshold=self.threshold, seed=self.seed,
        )  # fmt: skip
        counts = {h.id: v.inliers for h, v in zip(found, checked, strict=True)}
        rescored = []
        for hit in head:
            inliers = counts.get(hit.id, 0)
            bonus = self.weight * min(inliers, self.cap) / self.cap
            rescored.append(replace(hit, score=hit.score + bonus))
        rescored.sort(key=lambda h: -h.score)
        return rescored + tail, query


@dataclass
class AmesRerank(Reranker):
    """``lambda * global + (1 - lambda) * sigmoid(gamma * AMES logit)`` over the top N;
    lambda / gamma default to the published values of the model's variant."""

    model: Ames
    top: int = 100
    lam: float | None = None
    gamma: float | None = None
    name: str = field(default="ames", init=False)
    needs_local: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        from ilias.rerank.ames import AMES_DEFAULTS

        lam, gamma = AMES_DEFAULTS[self.model.variant]
        self.lam = lam if self.lam is None else self.lam
        self.gamma = gamma if self.gamma is None else self.gamma

    def rerank(self, collection, query, hits, scope):
        head, tail = hits[: self.top], hits[self.top :]
        local = collection.retrieve_local([h.id for h in head])
        usable = [h for h in head if h.id in local]
        logits = self.model.score_pairs(
            query.local.descriptors, [local[h.id].descriptors for h in usable]
        )
        from ilias.rerank.ames import combine

        assert self.lam is not None and self.gamma is not None
        scores = combine(np.array([h.score for h in usable]), logits, self.lam, self.gamma)
        rescored = [replace(h, score=float(s)) for h, s in zip(usable, scores, strict=True)]
        rescored.sort(key=lambda h: -h.score)
        floor = min((h.score for h in rescored), default=0.0)
        missing = [replace(h, score=floor - 1.0) for h in head if h.id not in local]
        return rescored + missing + tail, query


# What each step's options may be: (type, lowest, highest) for numbers, the choices for text.
# The ranges keep every value meaningful and every vector finite: an alpha of 1e308 or NaN
# would put inf/NaN into the expanded query (which the engine cannot search), a float n
# cannot slice a ranking, a huge top or cap only costs memory.
_OPTIONS: dict[str, dict[str, tuple[type, float, float] | tuple[str, ...]]] = {
    "aqe": {"n": (int, 1, 1000), "alpha": (float, 0.0, 100.0)},
    "cs": {},
    "sp": {
        "top": (int, 1, 10_000),
        "model": ("similarity", "affine"),
        "threshold": (float, 0.0, 1e6),
        "weight": (float, -1e6, 1e6),
        "cap": (int, 1, 10_000),
        "seed": (int, 0, 2**32 - 1),
    },
    "ames": {
        "top": (int, 1, 10_000),
        "lam": (float, 0.0, 1.0),
        "gamma": (float, 0.0, 1e6),
    },
}


def parse_rerankers(
    steps: Sequence[str], *, ames_weights: str | None = None, local_dim: int | None = None
) -> list[Reranker]:
    """``["cs", "aqe:n=2:alpha=3", "sp:top=50"]`` -> re-rankers, applied in that order.

    Every option is checked against ``_OPTIONS`` (its type and range) before any step is
    built, so a bad spec is one line naming the step and the option, from the CLI and from
    the service alike.
    """
    out: list[Reranker] = []
    for step in steps:
        name, *options = step.strip().split(":")
        if name not in _OPTIONS:
            raise IliasError(f"unknown re-ranker {name!r}: aqe, cs, sp or ames")
        kwargs = {key: value for key, value in (_option(step, name, o) for o in options)}
        if name == "aqe":
            out.append(AlphaQueryExpansion(**kwargs))
        elif name == "cs":
            out.append(ChamferRerank(**kwargs))
        elif name == "sp":
            out.append(SpatialRerank(**kwargs))
        else:
            if not ames_weights or local_dim is None:
                raise IliasError("--rerank ames needs --ames-weights FILE (no weights ship)")
            from ilias.rerank.ames import load_ames  # torch: only when AMES is asked for

            out.append(AmesRerank(load_ames(ames_weights, local_dim), **kwargs))
    return out


def _option(step: str, name: str, option: str) -> tuple[str, Any]:
    """One ``key=value`` of a step, typed and range-checked (one-line ``IliasError``)."""
    key, sep, text = option.partition("=")
    key, text = key.strip(), text.strip()
    if not sep:
        raise IliasError(f"re-ranker option {option!r} in {step!r}: use key=value")
    known = _OPTIONS[name]
    if key not in known:
        takes = ", ".join(known) or "no options"
        raise IliasError(f"re-ranker {step!r}: {name} has no option {key!r} (it takes {takes})")
    spec = known[key]
    if isinstance(spec[0], str):  # a choice among names
        if text not in spec:
            raise IliasError(f"re-ranker {step!r}: {key} is one of {', '.join(map(str, spec))}")
        return key, text
    kind, low, high = spec
    value = _typed(text, kind)
    if value is None or not low <= value <= high:
        what = "a whole number" if kind is int else "a number"
        raise IliasError(
            f"re-ranker {step!r}: {key}={text!r}: give {what} from {low:g} to {high:g}"
        )
    return key, value


def _typed(text: str, kind: type) -> int | float | None:
    """``text`` as an int (digits only) or a finite float; None if it is not one."""
    if kind is int:
        return int(text) if re.fullmatch(r"[+-]?[0-9]{1,20}", text) else None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def apply_rerankers(
    collection: CollectionView,
    query: RerankQuery,
    hits: list[Hit],
    steps: Sequence[Reranker],
    scope: SearchScope,
    timings: dict[str, float] | None = None,
) -> list[Hit]:
    """Run the steps in order; ``timings[name]`` accumulates each step's seconds."""
    for step in steps:
        if step.needs_local and query.local is None:
            raise IliasError(
                f"re-ranker {step.name!r} needs local descriptors: load the collection with "
                "--local (and query with an encoder that gives them)"
            )
        began = time.perf_counter()
        hits, query = step.rerank(collection, query, hits, scope)
        if timings is not None:
            timings[step.name] = timings.get(step.name, 0.0) + time.perf_counter() - began
    return hits
