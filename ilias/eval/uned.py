"""UnED (the Universal Embedding Dataset, 8 domains): its merged-index protocol.

As the authors' evaluation (nikosips/Universal-Image-Embeddings, ``knn_utils.py``,
``run_merged_knn``):

- each domain has a query split and an index split, with labels; the **index is the union
  of every domain's index split** (in domain order), and every domain's queries search it;
- a result is correct when it has the query's label **and** the query's domain;
- when a domain's query and index splits are the same set, the first result (the query
  itself) is dropped, and ``n_q`` (the relevant index images) excludes the query;
- **R@1**: the first (remaining) result is correct;
- **mMP@5**: ``(#correct in the top min(n_q, 5)) / min(n_q, 5)``;
- per domain: the mean over its queries; the final number is the **unweighted mean over
  domains** (a small domain weighs as much as a large one).

Ties: lower index first, as ``jax.lax.top_k`` ranks them (a stable descending sort).
Differences, both where the reference cannot give a number: a query with ``n_q = 0`` (its
label has no other index image) is left out of its domain's mMP@5 (the reference divides
by zero) and counted in ``n_without_relevant``; and the reference's self-drop subtracts one
from the count of the first ``min(6, n_q + 1)`` results, which equals dropping the first
result whenever that result is correct (always, when it is the query itself). Numbers are
x100 (the reference prints 0-1, rounded to 3 decimals). Numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from ilias.errors import DatasetError

#: The eight UnED domains, in the order of the paper's tables.
UNED_DOMAINS = ("food2k", "cars", "sop", "inshop", "inat", "met", "gldv2", "rp2k")
_ROWS_PER_CHUNK = 1024


@dataclass(frozen=True)
class UnedDomain:
    """One domain's splits: query ids and labels, index ids and labels."""

    name: str
    query_ids: tuple[str, ...]
    query_labels: np.ndarray
    index_ids: tuple[str, ...]
    index_labels: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "query_ids", tuple(self.query_ids))
        object.__setattr__(self, "index_ids", tuple(self.index_ids))
        object.__setattr__(self, "query_labels", np.asarray(self.query_labels))
        object.__setattr__(self, "index_labels", np.asarray(self.index_labels))
        if len(self.query_ids) != len(self.query_labels):
            raise DatasetError(
                f"domain {self.name}: {len(self.query_ids)} queries, "
                f"{len(self.query_labels)} query labels"
            )
        if len(self.index_ids) != len(self.index_labels):
            raise DatasetError(
                f"domain {self.name}: {len(self.index_ids)} index images, "
                f"{len(self.index_labels)} index labels"
            )

    @property
    def shared(self) -> bool:
        """Query split == index split: each query finds itself first, which is dropped."""
        return set(self.query_ids) == set(self.index_ids)


@dataclass(frozen=True)
class MergedIndex:
    """The union of the domains' index splits: what every query searches."""

    ids: tuple[str, ...]
    labels: np.ndarray
    domains: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def merged_index(domains: Sequence[UnedDomain]) -> MergedIndex:
    """Concatenate the index splits in domain order (the columns of a similarity matrix)."""
    ids = tuple(i for d in domains for i in d.index_ids)
    if len(set(ids)) != len(ids):
        raise DatasetError("index ids repeat across domains; prefix them with the domain name")
    labels = np.concatenate([d.index_labels for d in domains]) if domains else np.array([])
    names = np.array([d.name for d in domains for _ in d.index_ids], dtype=object)
    return MergedIndex(ids, labels, names)


@dataclass(frozen=True)
class DomainScores:
    """R@1 and mMP@k x100 of one domain's queries."""

    r_at_1: float
    mmp: float
    n_queries: int
    n_without_relevant: int = 0


@dataclass(frozen=True)
class UnedScores:
    """Per-domain scores and their unweighted means (x100); ``k`` is mMP's cut-off (5)."""

    domains: dict[str, DomainScores]
    k: int = 5
    r_at_1: float = field(init=False)
    mmp: float = field(init=False)

    def __post_init__(self) -> None:
        values = list(self.domains.values())
        object.__setattr__(self, "r_at_1", float(np.mean([v.r_at_1 for v in values])))
        object.__setattr__(self, "mmp", float(np.mean([v.mmp for v in values])))

    def to_dict(self) -> dict:
        return {
            "r_at_1": self.r_at_1,
            f"mmp_at_{self.k}": self.mmp,
            "domains": {
                name: {
                    "r_at_1": s.r_at_1,
                    f"mmp_at_{self.k}": s.mmp,
                    "n_queries": s.n_queries,
                    "n_without_relevant": s.n_without_relevant,
                }
                for name, s in self.domains.items()
            },
        }


def _domain_scores(domain: UnedDomain, index: MergedIndex, top: np.ndarray, k: int) -> DomainScores:
    """Score one domain from its queries' top results (merged-index positions, rank order)."""
    drop = int(domain.shared)
    needed = min(k + drop, len(index))
    if top.shape[0] != len(domain.query_ids) or top.shape[1] < needed:
        raise DatasetError(
            f"domain {domain.name}: need the top {needed} results of each of its "
            f"{len(domain.query_ids)} queries, got {top.shape}"
        )
    kept = top[:, drop : drop + k]
    correct = (index.labels[kept] == domain.query_labels[:, None]) & (
        index.domains[kept] == domain.name
    )
    same_domain = index.labels[index.domains == domain.name]
    counts: dict = {}
    for label in same_domain.tolist():
        counts[label] = counts.get(label, 0) + 1
    n_relevant = np.array([counts.get(q, 0) - drop for q in domain.query_labels.tolist()])
    cutoff = np.minimum(n_relevant, k)
    has_relevant = cutoff > 0
    within = np.arange(kept.shape[1]) < cutoff[:, None]
    precision = (correct & within).sum(axis=1)[has_relevant] / cutoff[has_relevant]
    r_at_1 = correct[:, 0] if kept.shape[1] else np.zeros(len(kept), dtype=bool)
    return DomainScores(
        r_at_1=100.0 * float(r_at_1.mean()) if len(r_at_1) else 0.0,
        mmp=100.0 * float(precision.mean()) if len(precision) else 0.0,
        n_queries=len(domain.query_ids),
        n_without_relevant=int((~has_relevant).sum()),
    )


def score_similarity(
    domains: Sequence[UnedDomain],
    similarity: Mapping[str, ArrayLike],
    *,
    k: int = 5,
) -> UnedScores:
    """Score ``{domain: [n_queries, n_index]}`` similarities against the merged index.

    Columns follow ``merged_index(domains)``; rows follow the domain's ``query_ids``.
    """
    index = merged_index(domains)
    scores = {}
    for domain in domains:
        matrix = np.asarray(similarity[domain.name])
        if matrix.shape != (len(domain.query_ids), len(index)):
            raise DatasetError(
                f"domain {domain.name}: similarity must be {len(domain.query_ids)} queries x "
                f"{len(index)} merged index images, got {matrix.shape}"
            )
        width = k + int(domain.shared)
        top = np.concatenate(
            [
                np.argsort(-matrix[s : s + _ROWS_PER_CHUNK], axis=1, kind="stable")[:, :width]
                for s in range(0, max(len(matrix), 1), _ROWS_PER_CHUNK)
            ]
        )
        scores[domain.name] = _domain_scores(domain, index, top, k)
    return UnedScores(scores, k)


def score_rankings(
    domains: Sequence[UnedDomain],
    rankings: Mapping[str, Sequence[str]],
    *,
    k: int = 5,
) -> UnedScores:
    """Score ``{query_id: [index ids in rank order]}``: the top k (k + 1 where the query is
    in the index) of every query of every domain, from any search engine."""
    index = merged_index(domains)
    position = {image_id: i for i, image_id in enumerate(index.ids)}
    scores = {}
    for domain in domains:
        top = _positions(domain, rankings, position, k + int(domain.shared))
        scores[domain.name] = _domain_scores(domain, index, top, k)
    return UnedScores(scores, k)


def score_top_positions(
    domains: Sequence[UnedDomain],
    top: Mapping[str, ArrayLike],
    *,
    k: int = 5,
) -> UnedScores:
    """Score ``{domain: [n_queries, >= k (+1)]}`` merged-index positions in rank order
    (what a top-k search over the merged index returns)."""
    index = merged_index(domains)
    scores = {
        d.name: _domain_scores(d, index, np.asarray(top[d.name], dtype=np.int64), k)
        for d in domains
    }
    return UnedScores(scores, k)


def _positions(
    domain: UnedDomain,
    rankings: Mapping[str, Sequence[str]],
    position: Mapping[str, int],
    width: int,
) -> np.ndarray:
    rows = []
    for query_id in domain.query_ids:
        if query_id not in rankings:
            raise DatasetError(f"domain {domain.name}: query {query_id!r} has no ranking")
        ranked = list(rankings[query_id])[:width]
        try:
            rows.append([position[i] for i in ranked])
        except KeyError as error:
            raise DatasetError(
                f"query {query_id!r} ranks {error.args[0]!r}, which is in no index split"
            ) from error
    if len({len(r) for r in rows}) > 1:
        raise DatasetError(
            f"domain {domain.name}: rankings are shorter than {width} for some queries"
        )
    return np.array(rows, dtype=np.int64).reshape(len(rows), -1)
