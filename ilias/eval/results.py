"""ILIAS-compatible similarity files, and scoring them exactly as the reference does.

The reference pipeline (ilias-vrg/ilias) passes results between programs as files: its
``knn_search`` writes them and ``evaluation/evaluate.py`` scores them. ilias writes the same
files, so that a number from ilias can be checked by the reference tool, and reads them, so
that a reference file can be scored (and broken down) by ilias.

JSON: ``{query_id: {db_id: score, ...}, ...}``, each query's results in descending score.

Pickle: a dict with ``query_ids`` (list of n_q ids), ``db_ids`` (array of the database ids
the ranks point into), ``sims`` (float ``[n_q, m]``) and ``ranks`` (int ``[n_q, m]``,
indices into ``db_ids``). ``evaluate.py`` passes the dict's keys to ``ILIAS.evaluate`` as
keyword arguments, so the scores must be stored under the name that function takes: ``sims``
since the reference's commit 91be844 (2025-09-01), which is also what its ``knn_search``
writes; ``similarities`` before it. ilias writes ``sims`` and reads both
(``scores_key="similarities"`` writes the pre-September 2025 spelling). Rows of different
lengths (queries with fewer results) are stored as lists of 1-d arrays, which the
reference's loop reads the same way.

Fewer than k results (a collection smaller than k): the reference's faiss search fills
the rest of each row with the lowest float32 score (``NO_RESULT_SCORE``) and label -1,
which its pickle writer turns into the database's last id; its evaluator then computes
the oracle as ``hits / len(row) * k / positives``, which is ilias's ``hits / positives``
only for rows of k entries. Given ``k``, ilias pads its pickles the same way (with a
database id that cannot be a positive of the query), so the reference's evaluator gives
ilias's oracle on them, and drops such entries when it reads a file. A JSON file cannot
repeat an id and the reference's search cannot write one for such a collection (its
writer fails on label -1): there, the reference's evaluator reports the oracle of a short
row multiplied by ``k / len(row)`` (above 100 where every positive is found), and
``write_similarities_json`` says so in a warning.

Which queries count: as in the reference, only the queries present in a file (a query the
file lacks is skipped and reported, not scored 0); image and text queries are scored
separately (as ILIAS reports them), and together as ``all``, the number ``evaluate.py`` prints
for a file that holds both. Two deliberate differences, both stricter: ties are ranked
stably (the reference's ``np.argsort`` leaves the order of tied results undefined, which
matters only where a tie straddles rank k), and a query id the dataset does not know is
refused instead of skipped.

This module reads and writes files and depends on numpy only.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import pickle
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ilias.errors import DatasetError
from ilias.eval.breakdowns import Breakdowns, compute_breakdowns
from ilias.eval.metrics import RetrievalScores, evaluate_rankings

Ranking = Sequence[tuple[str, float]]
Rankings = Mapping[str, Ranking]

#: The pickle key the current ``evaluate.py`` reads and ``knn_search`` writes.
SCORES_KEY = "sims"
#: The key ``evaluate.py`` read before 2025-09-01 (reference commit 91be844).
LEGACY_SCORES_KEY = "similarities"
_SHOWN = 5  # unknown ids quoted in an error message
#: The score faiss gives an empty slot of a top-k row (fewer than k database vectors).
NO_RESULT_SCORE = float(np.finfo(np.float32).min)
#: The id a padded row points at when every id of the file belongs to the query's instance.
NO_RESULT_ID = ""

logger = logging.getLogger(__name__)


class UnknownIdsError(DatasetError):
    """A similarity file names queries or database images that the dataset does not hold."""


# ----------------------------------------------------------------------------- writing


def write_similarities(
    path: Path | str, rankings: Rankings, *, scores_key: str = SCORES_KEY, k: int | None = None
) -> Path:
    """Write ``rankings`` (``{query_id: [(db_id, score), ...]}``) as ``.json`` or ``.pkl``.

    ``k``: the search's k; rows with fewer results are padded as the reference's search pads
    them (pickle), or a warning says how the reference's oracle differs (JSON)."""
    path = Path(path)
    if path.suffix == ".json":
        return write_similarities_json(path, rankings, k=k)
    if path.suffix in (".pkl", ".pickle"):
        return write_similarities_pickle(path, rankings, scores_key=scores_key, k=k)
    raise DatasetError(f"{path}: similarity files end in .json or .pkl, as the reference's do")


def write_similarities_json(path: Path | str, rankings: Rankings, *, k: int | None = None) -> Path:
    """The reference JSON form; each query's results in descending score (ties keep order).

    With ``k``, queries with fewer than k results are reported in a warning: the
    reference's evaluator scales their oracle by ``k / results`` (see the module's notes)."""
    path = Path(path)
    short = [q for q, ranking in rankings.items() if k is not None and len(ranking) < k]
    if short:
        logger.warning(
            "%s: %d of %d queries have fewer than k=%d results (the collection is smaller "
            "than k); the reference's evaluate.py computes their oracle as hits / results "
            "x k / positives (above 100 when all are found), ilias as hits / positives; "
            "mAP is the same. The .pkl form is padded as the reference's search pads it",
            path,
            len(short),
            len(rankings),
            k,
        )
    document = {}
    for query_id, ranking in rankings.items():
        ids, scores = _sorted_ranking(query_id, ranking)
        document[query_id] = dict(zip(ids, scores.tolist(), strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        json.dump(document, out)
    return path


def write_similarities_pickle(
    path: Path | str, rankings: Rankings, *, scores_key: str = SCORES_KEY, k: int | None = None
) -> Path:
    """The reference pickle form; ``scores_key="similarities"`` writes the spelling that the
    reference's ``evaluate.py`` read before 2025-09-01, for older checkouts of it.

    With ``k``, a row of fewer than k results is filled up to k as the reference's faiss
    search fills it: score ``NO_RESULT_SCORE``, pointing at the file's last database id
    outside the query's instance (the reference's points at its database's last id, a
    distractor), so that the reference's evaluator computes ilias's oracle."""
    if scores_key not in (SCORES_KEY, LEGACY_SCORES_KEY):
        raise ValueError(f"scores_key must be {SCORES_KEY!r} or {LEGACY_SCORES_KEY!r}")
    path = Path(path)
    query_ids = list(rankings)
    rows = [_sorted_ranking(q, rankings[q]) for q in query_ids]
    if k is not None:
        rows = _padded_rows(query_ids, rows, k)
    db_ids = np.array(sorted({db_id for ids, _ in rows for db_id in ids}), dtype=str)
    position = {db_id: i for i, db_id in enumerate(db_ids.tolist())}
    ranks = [np.array([position[i] for i in ids], dtype=np.int64) for ids, _ in rows]
    scores = [_compact_floats(s) for _, s in rows]
    if len({len(r) for r in ranks}) <= 1 and ranks:
        sims_out: np.ndarray | list = np.stack(scores)
        ranks_out: np.ndarray | list = np.stack(ranks)
    else:  # ragged: the reference iterates rows, so a list of arrays reads the same
        sims_out, ranks_out = scores, ranks
    document = {"query_ids": query_ids, "db_ids": db_ids, scores_key: sims_out, "ranks": ranks_out}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        pickle.dump(document, out, protocol=4)
    return path


def _padded_rows(
    query_ids: Sequence[str], rows: list[tuple[list[str], np.ndarray]], k: int
) -> list[tuple[list[str], np.ndarray]]:
    """Rows shorter than k filled up to k with ``NO_RESULT_SCORE`` entries, each pointing at
    an id that cannot be a positive of its query (another instance's), else ``NO_RESULT_ID``."""
    if all(len(ids) >= k for ids, _ in rows):
        return rows
    known = sorted({db_id for ids, _ in rows for db_id in ids})
    last = known[-1] if known else NO_RESULT_ID
    other = next((d for d in reversed(known) if instance_of(d) != instance_of(last)), None)
    padded = []
    for query_id, (ids, scores) in zip(query_ids, rows, strict=True):
        missing = k - len(ids)
        if missing <= 0:
            padded.append((ids, scores))
            continue
        instance = instance_of(query_id)
        filler = last if instance_of(last) != instance else (other or NO_RESULT_ID)
        padded.append(
            (ids + [filler] * missing, np.concatenate([scores, np.full(missing, NO_RESULT_SCORE)]))
        )
    return padded


def _sorted_ranking(query_id: str, ranking: Ranking) -> tuple[list[str], np.ndarray]:
    ids = [db_id for db_id, _ in ranking]
    if len(set(ids)) != len(ids):
        raise DatasetError(
            f"the ranking of {query_id!r} lists a database id twice; a similarity file holds "
            "one score per (query, image): deduplicate the ranking first"
        )
    scores = np.fromiter((score for _, score in ranking), dtype=np.float64, count=len(ids))
    if not np.isfinite(scores).all():
        raise DatasetError(f"the ranking of {query_id!r} holds NaN or infinite scores")
    order = np.argsort(-scores, kind="stable")
    return [ids[i] for i in order], scores[order]


def _compact_floats(scores: np.ndarray) -> np.ndarray:
    """float32 (as FAISS and Qdrant give them) when that loses nothing, else float64."""
    single = scores.astype(np.float32)
    return single if np.array_equal(single.astype(np.float64), scores) else scores


# ----------------------------------------------------------------------------- reading


def read_similarities(path: Path | str) -> dict[str, list[tuple[str, float]]]:
    """Read a reference ``.json`` or ``.pkl`` similarity file into ``{query: [(db, score)]}``.

    The order of each ranking is the file's; scoring sorts by score (stably) anyway. Entries
    with faiss's empty-slot score (``NO_RESULT_SCORE``: fewer database vectors than k) are
    not results and are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} does not exist; pass a similarity file (.json or .pkl)")
    if path.suffix == ".json":
        return _read_json(path)
    if path.suffix in (".pkl", ".pickle"):
        return _read_pickle(path)
    raise DatasetError(f"{path}: similarity files end in .json or .pkl, as the reference's do")


def _read_json(path: Path) -> dict[str, list[tuple[str, float]]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(
            f"{path} is not valid JSON ({error}); is it a similarity file?"
        ) from error
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise DatasetError(
            f"{path}: expected {{query_id: {{db_id: score}}}}, as the reference writes"
        )
    rankings = {}
    for query_id, results in document.items():
        try:
            pairs = [(str(d), float(s)) for d, s in results.items()]
        except (TypeError, ValueError) as error:
            raise DatasetError(f"{path}: a score of {query_id!r} is not a number") from error
        rankings[str(query_id)] = [(d, s) for d, s in pairs if s > NO_RESULT_SCORE]
    return rankings


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, and nothing else.

    A pickle can run any code while it loads; a similarity file needs none, so a file that
    asks for anything but numpy's array machinery is refused instead of trusted.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("numpy._core.numeric", "_frombuffer"),
            ("collections", "OrderedDict"),
            ("collections", "defaultdict"),
            ("builtins", "dict"),
            ("builtins", "list"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a similarity file")


def _read_pickle(path: Path) -> dict[str, list[tuple[str, float]]]:
    try:
        document = _ArraysOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as error:
        raise DatasetError(
            f"cannot read {path} as a similarity pickle ({error}); it must hold only the "
            "reference's query_ids, db_ids, sims (or similarities) and ranks arrays"
        ) from error
    if not isinstance(document, Mapping):
        raise DatasetError(f"{path}: expected a dict with query_ids, db_ids, sims, ranks")
    scores_key = next((key for key in (SCORES_KEY, LEGACY_SCORES_KEY) if key in document), None)
    missing = [key for key in ("query_ids", "db_ids", "ranks") if key not in document]
    if missing or scores_key is None:
        missing += [] if scores_key else [SCORES_KEY]
        raise DatasetError(f"{path}: the pickle lacks {', '.join(missing)} (the reference's keys)")
    query_ids = [str(q) for q in np.asarray(document["query_ids"]).reshape(-1).tolist()]
    db_ids = [str(d) for d in np.asarray(document["db_ids"]).reshape(-1).tolist()]
    scores, ranks = document[scores_key], document["ranks"]
    if len(scores) != len(query_ids) or len(ranks) != len(query_ids):
        raise DatasetError(
            f"{path}: {len(query_ids)} query ids but {len(scores)} rows of scores and "
            f"{len(ranks)} rows of ranks; each query needs one row of each"
        )
    rankings: dict[str, list[tuple[str, float]]] = {}
    for query_id, row_scores, row_ranks in zip(query_ids, scores, ranks, strict=True):
        row_scores = np.asarray(row_scores, dtype=np.float64).reshape(-1)
        row_ranks = np.asarray(row_ranks, dtype=np.int64).reshape(-1)
        if row_scores.shape != row_ranks.shape:
            raise DatasetError(
                f"{path}: {query_id!r} has {len(row_scores)} scores but {len(row_ranks)} ranks"
            )
        if len(row_ranks) and (row_ranks.min() < 0 or row_ranks.max() >= len(db_ids)):
            raise DatasetError(
                f"{path}: ranks of {query_id!r} point outside db_ids (0..{len(db_ids) - 1}); "
                "ranks index db_ids, and -1 (no result) is not allowed"
            )
        rankings[query_id] = [
            (db_ids[r], s)
            for r, s in zip(row_ranks.tolist(), row_scores.tolist(), strict=True)
            if s > NO_RESULT_SCORE  # faiss's empty slots: no result
        ]
    return rankings


# --------------------------------------------------------------- the dataset's ids


@dataclass(frozen=True)
class IliasIds:
    """What the reference reads from a dataset's ``image_ids/`` folder to score a file.

    ``positive_info`` maps each positive to ``(scale, clutter)`` (None where unknown);
    ``distractor_ids`` is None unless loaded (the reference loads them for ``--check_ids``).
    The instance of any id is its first path component, the ILIAS convention.
    """

    image_query_ids: tuple[str, ...]
    text_query_ids: tuple[str, ...]
    positive_info: Mapping[str, tuple[float, int] | None]
    distractor_ids: frozenset[str] | None = None
    ground_truth: Mapping[str, frozenset[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        truth: dict[str, set[str]] = {instance_of(q): set() for q in self.query_ids}
        for positive in self.positive_info:
            truth.setdefault(instance_of(positive), set()).add(positive)
        object.__setattr__(self, "ground_truth", {i: frozenset(p) for i, p in truth.items()})

    @property
    def query_ids(self) -> tuple[str, ...]:
        return self.image_query_ids + self.text_query_ids

    @property
    def database_ids(self) -> frozenset[str] | None:
        """Positives and distractors, or None when the distractor list was not loaded."""
        if self.distractor_ids is None:
            return None
        return frozenset(self.positive_info) | self.distractor_ids


def instance_of(dataset_id: str) -> str:
    """ILIAS convention (and the reference's ``q.split("/")[0]``): the first path component."""
    return dataset_id.split("/", 1)[0]


def read_ilias_ids(dataset_dir: Path | str, *, distractors: bool = False) -> IliasIds:
    """Read ``<dataset>/image_ids/`` as the reference does (distractors only if asked)."""
    folder = Path(dataset_dir) / "image_ids"
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} does not exist; the reference keeps the id lists there "
            "(evaluation/download_ids.sh fetches them for the real ILIAS)"
        )
    image_queries = [line.split(",")[0] for line in _lines(folder / "image_query_ids.txt")]
    text_queries = _lines(folder / "text_query_ids.txt", required=False)
    positive_info: dict[str, tuple[float, int] | None] = {}
    for number, line in enumerate(_lines(folder / "positive_ids.txt"), start=1):
        parts = line.split(",")
        try:
            positive_info[parts[0]] = (float(parts[1]), int(float(parts[2])))
        except (IndexError, ValueError) as error:
            raise DatasetError(
                f"{folder / 'positive_ids.txt'}:{number}: expected 'id,scale,clutter', got {line!r}"
            ) from error
    distractor_ids = None
    if distractors:
        gz, plain = folder / "distractor_ids.txt.gz", folder / "distractor_ids.txt"
        source = gz if gz.is_file() else plain
        if not source.is_file():
            raise DatasetError(
                f"checking database ids needs {gz} (or {plain.name}); download it with the "
                "reference's download_ids.sh, or score without the database id check"
            )
        distractor_ids = frozenset(_lines(source))
    return IliasIds(
        tuple(sorted(image_queries)), tuple(sorted(text_queries)), positive_info, distractor_ids
    )


def _lines(path: Path, required: bool = True) -> list[str]:
    if not path.is_file():
        if required:
            raise DatasetError(f"{path} does not exist; the dataset's id lists are incomplete")
        return []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        return [line.strip() for line in lines if line.strip()]


def check_ids(
    rankings: Rankings,
    known_queries: Collection[str],
    known_database: Collection[str] | None = None,
) -> None:
    """Refuse query ids (and, if ``known_database`` is given, db ids) the dataset lacks.

    This is the reference's ``--check_ids`` test, with an error that says what is wrong.
    """
    known_queries = (
        known_queries if isinstance(known_queries, set | frozenset) else set(known_queries)
    )
    unknown = sorted(q for q in rankings if q not in known_queries)
    if unknown:
        raise UnknownIdsError(
            f"{len(unknown)} query id(s) are not queries of this dataset, e.g. "
            f"{_quote(unknown)}; the file was made for another dataset (or version): score it "
            "against the dataset it was made for"
        )
    if known_database is None:
        return
    known_database = (
        known_database if isinstance(known_database, set | frozenset) else set(known_database)
    )
    unknown_db = sorted(
        {db for ranking in rankings.values() for db, _ in ranking if db not in known_database}
    )
    if unknown_db:
        raise UnknownIdsError(
            f"{len(unknown_db)} database id(s) are neither positives nor distractors of this "
            f"dataset, e.g. {_quote(unknown_db)}; search a collection that holds this dataset's "
            "images only (or score with the matching distractor list)"
        )


def _quote(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_SHOWN])
    return shown + (", ..." if len(ids) > _SHOWN else "")


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class FileScores:
    """A similarity file scored: image and text queries apart, and all together.

    ``all`` is what the reference's ``evaluate.py`` prints for the same file. ``missing``
    lists the dataset's queries that the file lacks (skipped, as the reference skips them).
    """

    all: RetrievalScores
    image: RetrievalScores | None
    text: RetrievalScores | None
    missing: tuple[str, ...]
    image_breakdowns: Breakdowns | None = None
    text_breakdowns: Breakdowns | None = None
    missing_text: tuple[str, ...] = ()  # those of ``missing`` that are text queries


def score_rankings(
    rankings: Rankings,
    ids: IliasIds,
    *,
    k: int = 1000,
    check_database: bool = False,
    breakdowns: bool = False,
    taxonomy: Mapping[str, tuple[str, str]] | None = None,
) -> FileScores:
    """Score rankings (of a file, or of a run) against the dataset's ids.

    ``check_database`` also refuses unknown database ids (needs ``ids.distractor_ids``).
    ``breakdowns`` adds the scale / clutter (and, with a taxonomy, category) breakdowns.
    """
    if not rankings:
        raise DatasetError("the similarity file holds no query; nothing to score")
    known_database = None
    if check_database:
        known_database = ids.database_ids
        if known_database is None:
            raise DatasetError(
                "checking database ids needs the distractor id list: read the ids with "
                "read_ilias_ids(..., distractors=True)"
            )
    check_ids(rankings, set(ids.query_ids), known_database)
    present = [q for q in ids.query_ids if q in rankings]
    missing = tuple(q for q in ids.query_ids if q not in rankings)

    def score(queries: Sequence[str]) -> RetrievalScores | None:
        if not queries:
            return None
        truth = {q: ids.ground_truth.get(instance_of(q), frozenset()) for q in queries}
        return evaluate_rankings({q: rankings[q] for q in queries}, truth, k)

    def breakdown(queries: Sequence[str], scores: RetrievalScores | None) -> Breakdowns | None:
        if not breakdowns or scores is None:
            return None
        return compute_breakdowns(
            {q: rankings[q] for q in queries},
            ids.ground_truth,
            {q: instance_of(q) for q in queries},
            positive_info=ids.positive_info,
            taxonomy=taxonomy,
            per_query_ap=scores.per_query_ap,
            k=k,
        )

    image_set = set(ids.image_query_ids)
    image_queries = [q for q in present if q in image_set]
    text_queries = [q for q in present if q not in image_set]
    image, text = score(image_queries), score(text_queries)
    return FileScores(
        _combined([s for s in (image, text) if s is not None], k),
        image,
        text,
        missing,
        breakdown(image_queries, image),
        breakdown(text_queries, text),
        tuple(q for q in missing if q not in image_set),
    )


def _combined(parts: Sequence[RetrievalScores], k: int) -> RetrievalScores:
    """All queries in one mean, as ``evaluate.py`` averages a file holding both kinds."""
    aps = {q: ap for part in parts for q, ap in part.per_query_ap.items()}
    oracles = {q: o for part in parts for q, o in part.per_query_oracle.items()}
    return RetrievalScores.of_queries(aps, oracles, k)


def score_similarity_file(
    path: Path | str,
    dataset_dir: Path | str,
    *,
    k: int = 1000,
    check_ids: bool = False,
    breakdowns: bool = False,
    taxonomy: Mapping[str, tuple[str, str]] | None = None,
) -> FileScores:
    """Score a reference (or ilias) similarity file against an ILIAS dataset's id lists.

    The ilias counterpart of ``evaluate.py --similarity_file PATH --dataset_dir DIR``;
    ``check_ids`` is its ``--check_ids`` (it needs ``image_ids/distractor_ids.txt.gz``).
    """
    ids = read_ilias_ids(dataset_dir, distractors=check_ids)
    return score_rankings(
        read_similarities(path),
        ids,
        k=k,
        check_database=check_ids,
        breakdowns=breakdowns,
        taxonomy=taxonomy,
    )
