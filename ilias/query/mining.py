"""Hard-distractor mining: the distractors that text prompts of a benchmark's categories find.

mini-ILIAS (the ILIAS paper, section 3.3) keeps the 5M of the 100M YFCC100M distractors that
vision-language models find closest to the benchmark's own categories, so that a collection
twenty times smaller stays hard. ``mine_distractors`` does the same for any collection, inside
Qdrant, with a rule stated here so that its output can be checked:

1. **Prompts.** Class names times zero-shot templates. The names come from a taxonomy in the
   reference's ``misc/taxonomy.json`` shape (its category, sub-category and sub-sub-category
   names, first appearance first, ``other`` left out since it names nothing) or from a list;
   the templates default to ``DEFAULT_TEMPLATES``, eight of the 80 ImageNet prompt templates
   published with CLIP (Radford et al. 2021, the ``Prompt_Engineering_for_ImageNet``
   notebook), the ones that describe a photograph, not a drawing or a toy.
2. **One encoder.** A collection holds one encoder's vectors, so an ensemble is several
   collections of the same distractors. Each prompt's text vector (the collection's own
   encoder, text tower) retrieves its top ``M`` distractors (``per_prompt``) by cosine
   similarity: an exact search of the stored float32 originals with a ``role`` filter, in
   batched requests, so only hits leave the engine, never the vectors. A distractor's score
   for the encoder is its highest similarity among the prompts whose top ``M`` holds it;
   a distractor no prompt retrieved is not a candidate of that encoder.
   That score is the true maximum over all prompts (what the paper's full similarity
   matrix gives) wherever it is above ``complete_above``, the highest ``M``-th score of any
   prompt: a prompt scores a distractor it did not retrieve at most its own ``M``-th score,
   and a distractor whose true maximum exceeds the bound is in its best prompt's top ``M``.
   So an encoder's first ``complete`` candidates are exactly the top of the full ranking;
   a larger ``M`` raises that count (the statistics report both).
3. **Ensemble.** Raw cosine similarities are not comparable across models (each model's
   text-image similarities sit in a narrow band of its own), so encoders contribute ranks,
   not scores: a candidate's rank for an encoder is how many of that encoder's candidates
   score strictly higher (0 is the most similar); a distractor the encoder did not retrieve
   gets the encoder's candidate count, just below its last candidate. The ensemble orders
   distractors by their mean rank over the encoders (a Borda count), ties by dataset id,
   and keeps the first ``top``. With one encoder this is its own ranking.
4. **Output.** ``write_selection`` writes the kept distractors as a selection list in the
   reference's format, the one ``ilias load --select`` and ``ilias eval --select`` read:
   one line each, the sample key for a tar-shard distractor (``<shard>.tar/<key>`` ->
   ``<key>``, as the reference's ``mini_ilias_yfcc.txt.gz``), the whole id for any other;
   ``.gz`` compresses. ``MiningResult.to_json`` gives the per-prompt statistics.

Memory: per encoder two arrays over the candidates and one index array per prompt's hits
(``M`` integers), which the statistics need; vectors are never held.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ilias.errors import DatasetError, EncoderSpecError, IliasError
from ilias.eval import parse_taxonomy
from ilias.indexing import Encoder, Store
from ilias.indexing.encoders import EncoderSpec
from ilias.query.retriever import Retriever
from ilias.types import SearchParams

# Eight of CLIP's 80 ImageNet templates (Radford et al. 2021): the photographic ones.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "itap of a {}.",
)
SKIPPED_NAMES = frozenset({"other"})  # a taxonomy's catch-all level names nothing to prompt for
TAXONOMY_FILES = ("taxonomy.json", "misc/taxonomy.json")  # where a dataset folder keeps it
MIN_PER_PROMPT = 1000
ENSEMBLE_RULE = (
    "per encoder: score = max cosine similarity over the prompts whose top M retrieved the "
    "distractor; rank = number of the encoder's candidates scoring strictly higher, "
    "distractors it did not retrieve rank at its candidate count; ensemble: mean rank over "
    "encoders, ascending, ties by id; the first N kept"
)
EXACT = SearchParams(exact=True, ignore_quantization=True)
TEXT_BATCH = 256  # prompts per text-tower forward
HITS_PER_REQUEST = 1_000_000  # bounds the hits one batched search returns at once

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Prompt:
    """One text query: a class name put into a template."""

    text: str
    name: str
    template: str


@dataclass(frozen=True)
class PromptStats:
    """What one prompt retrieved with one encoder, and what of it was kept.

    ``best_for``: candidates whose maximum came from this prompt (over an encoder's prompts
    these add up to its candidates); ``selected``: its hits among the kept distractors;
    ``selected_best``: kept distractors whose maximum came from this prompt (these add up to
    the kept distractors that are the encoder's candidates).
    """

    collection: str
    encoder: str
    prompt: str
    name: str
    template: str
    retrieved: int
    min: float | None
    median: float | None
    max: float | None
    best_for: int
    selected: int
    selected_best: int


@dataclass(frozen=True)
class EncoderSummary:
    """One encoder's part: its candidates, and how much of its ranking is certainly exact.

    ``complete_above`` is the highest ``M``-th score of any prompt (None when every prompt
    retrieved all distractors); the ``complete`` candidates above it have their true maximum
    over all prompts, and no distractor outside the candidates scores above it. Both are
    None for an approximate (HNSW) search, which certifies nothing.
    """

    collection: str
    encoder: str
    distractors: int
    per_prompt: int
    candidates: int
    complete_above: float | None
    complete: int | None
    selected: int  # kept distractors that are candidates of this encoder


@dataclass(frozen=True)
class MiningResult:
    """The kept distractors, best first, with the statistics that explain them."""

    ids: list[str]
    mean_ranks: list[float]
    top: int  # how many were asked for
    candidates: int  # distractors retrieved by at least one encoder
    prompts: list[Prompt]
    encoders: list[EncoderSummary]
    prompt_stats: list[PromptStats]
    role: str
    exact: bool

    @property
    def short(self) -> bool:
        """Fewer candidates than asked for: everything retrieved was kept."""
        return len(self.ids) < self.top

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": ENSEMBLE_RULE,
            "role": self.role,
            "search": "exact" if self.exact else "approximate",
            "top": self.top,
            "written": len(self.ids),
            "candidates": self.candidates,
            "classes": list(dict.fromkeys(p.name for p in self.prompts)),
            "templates": list(dict.fromkeys(p.template for p in self.prompts)),
            "encoders": [asdict(e) for e in self.encoders],
            "prompts": [asdict(s) for s in self.prompt_stats],
        }


# ------------------------------------------------------------------------------- prompts


def taxonomy_class_names(data: object, source: str = "taxonomy") -> list[str]:
    """The category, sub-category and sub-sub-category names of a taxonomy in the
    reference's shape, first appearance first, without ``other``."""
    parse_taxonomy(data, source)  # the shape, checked with the breakdowns' own messages
    assert isinstance(data, Mapping)
    names: list[str] = []
    for category, subcategories in data.items():
        names.append(str(category))
        for subcategory, leaves in subcategories.items():
            names.append(str(subcategory))
            names.extend(str(leaf) for leaf in leaves)
    kept = _distinct(n for n in names if n.strip().lower() not in SKIPPED_NAMES)
    if not kept:
        raise DatasetError(
            f"{source}: the taxonomy names no category (only 'other' or nothing); give one "
            "with category names, or a list of names with --classes"
        )
    return kept


def find_taxonomy(path: Path | str) -> Path:
    """A taxonomy file, or the one an ILIAS-layout dataset folder keeps (``TAXONOMY_FILES``,
    in the folder or beside it)."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DatasetError(f"{path}: no such taxonomy file or dataset folder")
    candidates = [base / name for base in (path, path.parent) for name in TAXONOMY_FILES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"no taxonomy found for {path} (looked for {looked}); give --taxonomy FILE (the ILIAS "
        "repository's misc/taxonomy.json) or --classes FILE (one name per line)"
    )


def read_taxonomy_names(path: Path | str) -> list[str]:
    """The class names of a taxonomy file or of a dataset folder's taxonomy."""
    found = find_taxonomy(path)
    try:
        data = json.loads(found.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{found} is not a readable JSON taxonomy: {error}") from error
    return taxonomy_class_names(data, str(found))


def read_class_names(path: Path | str) -> list[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped), duplicates once."""
    lines = _lines(path, "class list")
    names = _distinct(line for line in lines if not line.startswith("#"))
    if not names:
        raise DatasetError(f"{path}: the class list is empty; write one class name per line")
    return names


def read_templates(path: Path | str) -> list[str]:
    """Prompt templates, one per line, each with a ``{}`` where the class name goes."""
    templates: list[str] = []
    for number, line in enumerate(_lines(path, "template list"), start=1):
        if not line or line.startswith("#"):
            continue
        if "{}" not in line:
            raise DatasetError(
                f"{path}:{number}: {line!r} has no '{{}}' for the class name "
                "(write e.g. 'a photo of a {}.')"
            )
        templates.append(line)
    if not templates:
        raise DatasetError(f"{path}: no templates; write one per line, e.g. 'a photo of a {{}}.'")
    return _distinct(templates)


def class_names(
    taxonomy: Path | str | None = None,
    classes: Path | str | None = None,
    dataset: Path | str | None = None,
) -> tuple[list[str], Path]:
    """The class names to prompt for and the file they came from: a ``classes`` list, else
    a ``taxonomy`` (a file or a dataset folder), else the taxonomy of ``dataset`` (the
    ILIAS folder a collection was loaded from, its ``dataset`` metadata)."""
    if taxonomy is not None and classes is not None:
        raise DatasetError("give --taxonomy or --classes, not both")
    if classes is not None:
        return read_class_names(classes), Path(classes)
    source = taxonomy if taxonomy is not None else dataset
    if source is None:
        raise DatasetError(
            "the collection records no ILIAS dataset folder to take a taxonomy from; give "
            "--taxonomy FILE (the ILIAS repository's misc/taxonomy.json) or --classes FILE"
        )
    found = find_taxonomy(source)
    return read_taxonomy_names(found), found


def make_prompts(
    names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> list[Prompt]:
    """Every name in every template (``{}`` replaced by the name), each text once."""
    if not names:
        raise DatasetError("no class names to build prompts from")
    if not templates:
        raise DatasetError("no prompt templates")
    prompts: dict[str, Prompt] = {}
    for name in names:
        for template in templates:
            text = template.replace("{}", name)
            prompts.setdefault(text, Prompt(text, name, template))
    return list(prompts.values())


def default_per_prompt(top: int, classes: int, distractors: int) -> int:
    """``M``: twice ``top`` shared among the classes (a class's templates retrieve much the
    same distractors, so classes, not prompts, divide the work), at least 1,000, at most
    the number of distractors."""
    wanted = max(MIN_PER_PROMPT, math.ceil(2 * top / max(1, classes)))
    return max(1, min(distractors, wanted))


# -------------------------------------------------------------------------------- mining


def text_encoder(store: Store, collection: str) -> Encoder:
    """The collection's recorded encoder, refused unless it embeds texts."""
    check_text_towers(store, [collection])
    encoder = Retriever(store, collection).encoder
    if not encoder.has_text_tower:
        raise _no_text_tower(collection, encoder.spec)
    return encoder


def check_text_towers(store: Store, collections: Sequence[str]) -> None:
    """Each collection's recorded encoder embeds texts, read from its spec (no model is
    built): ``ilias mine`` says so before it asks for a taxonomy or class names."""
    for collection in collections:
        spec = store.collection_config(collection).metadata.get("encoder")
        if spec and not EncoderSpec.parse(spec).has_text_tower:
            raise _no_text_tower(collection, spec)


def _no_text_tower(collection: str, spec: str) -> EncoderSpecError:
    return EncoderSpecError(
        f"collection {collection!r} was embedded with {spec}, which has no text "
        "tower, so prompts cannot be compared with its images; load the same distractors "
        "with a vision-language encoder (an 'open_clip:' spec, or a timm CLIP/SigLIP "
        "model listed in ilias.indexing.encoders.TIMM_TEXT_TOWERS) and mine that collection"
    )


@dataclass
class _EncoderHits:
    """One encoder's per-distractor maximum and its argmax prompt, over the shared id table."""

    best: np.ndarray  # float64, -inf where not retrieved
    arg: np.ndarray  # int32 prompt index of the maximum, -1 where not retrieved
    prompt_hits: list[np.ndarray]  # per prompt: table indices of its hits
    prompt_scores: list[tuple[int, float | None, float | None, float | None]]
    thresholds: list[float]  # M-th score of each prompt that returned M hits


def mine_distractors(
    store: Store,
    collections: Sequence[str],
    prompts: Sequence[Prompt],
    top: int,
    per_prompt: int | None = None,
    *,
    role: str = "distractor",
    exact: bool = True,
    progress: Progress | None = None,
) -> MiningResult:
    """Rank the distractors of ``collections`` (one per encoder, the same distractors in
    each) by their text-to-image similarity to ``prompts`` and keep the first ``top``, by
    the rule of this module's docstring. ``per_prompt`` is ``M`` (default
    ``default_per_prompt``); ``exact=False`` searches the collection's index instead (faster, no
    certificate); ``progress(stage, done, total)`` is called after each batch of prompts.
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise IliasError(f"--top {top}: keep at least one distractor")
    if per_prompt is not None and (isinstance(per_prompt, bool) or per_prompt < 1):
        raise IliasError(f"--per-prompt {per_prompt}: retrieve at least one hit per prompt")
    if not collections:
        raise IliasError("name at least one collection (-c) to mine")
    if len(set(collections)) != len(collections):
        raise IliasError("a collection is named twice; name each encoder's collection once")
    if not prompts:
        raise DatasetError("no prompts: give class names and templates")
    where = {"role": role}
    counts = {c: store.count(c, where) for c in collections}
    for collection, count in counts.items():
        if not count:
            raise IliasError(
                f"collection {collection!r} has no points with role={role}, so there is "
                "nothing to mine; load an ILIAS-layout dataset with --distractors (or pass "
                "--role image for a plain image collection)"
            )
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{c} {n}" for c, n in counts.items())
        raise IliasError(
            f"the collections hold different numbers of {role} points ({listed}); an "
            "ensemble needs the same distractors embedded by each encoder"
        )
    distractors = counts[collections[0]]
    classes = len({p.name for p in prompts})
    m = min(distractors, per_prompt or default_per_prompt(top, classes, distractors))
    encoders = [text_encoder(store, c) for c in collections]  # every refusal before work
    params = EXACT if exact else SearchParams()

    table: dict[str, int] = {}
    ids: list[str] = []
    found: list[_EncoderHits] = []
    for collection, encoder in zip(collections, encoders, strict=True):
        found.append(
            _retrieve(store, collection, encoder, prompts, m, where, params, table, ids, progress)
        )
    n = len(ids)
    ranks = np.zeros(n, dtype=np.int64)
    candidate_counts = []
    for hits in found:
        hits.best = _grown(hits.best, n, -np.inf)[:n]  # capacity doubled: cut to the table
        hits.arg = _grown(hits.arg, n, -1)[:n]
        retrieved = hits.arg >= 0
        count = int(retrieved.sum())
        candidate_counts.append(count)
        descending = np.sort(-hits.best[retrieved])  # -score ascending
        rank = np.full(n, count, dtype=np.int64)
        rank[retrieved] = np.searchsorted(descending, -hits.best[retrieved], side="left")
        ranks += rank
    order = sorted(range(n), key=lambda i: (int(ranks[i]), ids[i]))[:top]
    kept = np.zeros(n, dtype=bool)
    kept[order] = True

    summaries: list[EncoderSummary] = []
    stats: list[PromptStats] = []
    for collection, encoder, hits, count in zip(
        collections, encoders, found, candidate_counts, strict=True
    ):
        retrieved = hits.arg >= 0
        best_for = np.bincount(hits.arg[retrieved], minlength=len(prompts))
        selected_best = np.bincount(hits.arg[retrieved & kept], minlength=len(prompts))
        bound: float | None = None
        complete: int | None = None
        if exact:
            bound = max(hits.thresholds) if hits.thresholds and m < distractors else None
            above = hits.best[retrieved]
            complete = count if bound is None else int((above > bound).sum())
        summaries.append(
            EncoderSummary(
                collection, encoder.spec, distractors, m, count, bound, complete,
                int((retrieved & kept).sum()),
            )
        )  # fmt: skip
        for index, prompt in enumerate(prompts):
            retrieved_n, low, middle, high = hits.prompt_scores[index]
            stats.append(
                PromptStats(
                    collection, encoder.spec, prompt.text, prompt.name, prompt.template,
                    retrieved_n, low, middle, high, int(best_for[index]),
                    int(kept[hits.prompt_hits[index]].sum()), int(selected_best[index]),
                )
            )  # fmt: skip
    return MiningResult(
        ids=[ids[i] for i in order],
        mean_ranks=[int(ranks[i]) / len(found) for i in order],
        top=top,
        candidates=n,
        prompts=list(prompts),
        encoders=summaries,
        prompt_stats=stats,
        role=role,
        exact=exact,
    )


def _retrieve(
    store: Store,
    collection: str,
    encoder: Encoder,
    prompts: Sequence[Prompt],
    m: int,
    where: Mapping[str, str],
    params: SearchParams,
    table: dict[str, int],
    ids: list[str],
    progress: Progress | None,
) -> _EncoderHits:
    """Every prompt's top ``m`` in one collection, folded into per-distractor maxima."""
    texts = [p.text for p in prompts]
    vectors = np.concatenate(
        [encoder.encode_texts(texts[s : s + TEXT_BATCH]) for s in range(0, len(texts), TEXT_BATCH)]
    )
    hits = _EncoderHits(
        best=np.full(max(16, len(ids)), -np.inf),
        arg=np.full(max(16, len(ids)), -1, dtype=np.int32),
        prompt_hits=[],
        prompt_scores=[],
        thresholds=[],
    )
    batch = max(1, HITS_PER_REQUEST // m)
    stage = f"mine {collection}"
    for start in range(0, len(prompts), batch):
        rankings = store.search(
            collection, vectors[start : start + batch], m, filter=dict(where), params=params
        )
        for offset, ranking in enumerate(rankings):
            index = start + offset
            rows = np.empty(len(ranking), dtype=np.int64)
            for position, hit in enumerate(ranking):
                row = table.get(hit.id)
                if row is None:
                    row = table[hit.id] = len(ids)
                    ids.append(hit.id)
                rows[position] = row
            scores = np.fromiter((h.score for h in ranking), np.float64, count=len(ranking))
            hits.best = _grown(hits.best, len(table), -np.inf)
            hits.arg = _grown(hits.arg, len(table), -1)
            better = scores > hits.best[rows]  # ties: the earlier prompt keeps it
            hits.best[rows[better]] = scores[better]
            hits.arg[rows[better]] = index
            hits.prompt_hits.append(rows)
            if len(scores):
                hits.prompt_scores.append(
                    (len(scores), float(scores.min()), float(np.median(scores)),
                     float(scores.max()))
                )  # fmt: skip
            else:
                hits.prompt_scores.append((0, None, None, None))
            if len(scores) == m:
                hits.thresholds.append(float(scores.min()))
        if progress is not None:
            progress(stage, min(len(prompts), start + batch), len(prompts))
    return hits


def _grown(array: np.ndarray, size: int, fill: float) -> np.ndarray:
    """``array`` with at least ``size`` entries, new ones ``fill`` (doubling, amortised)."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array)), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


# -------------------------------------------------------------------------------- output


def selection_line(dataset_id: str) -> str:
    """A kept distractor as a selection-list line: the sample key of a tar-shard id
    (``00042.tar/<key>`` -> ``<key>``, the reference's form), else the whole id."""
    _, marker, key = dataset_id.rpartition(".tar/")
    return key if marker else dataset_id


def write_selection(path: Path | str, ids: Sequence[str]) -> Path:
    """Write ``ids`` as a selection list (``.gz`` by suffix), atomically (a temporary file
    renamed), so an interrupted run never leaves a half list behind."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(selection_line(i) + "\n" for i in ids).encode("utf-8")
    temporary = path.with_name(f".{path.name}.partial")
    temporary.write_bytes(gzip.compress(text, mtime=0) if path.suffix == ".gz" else text)
    os.replace(temporary, path)
    return path


def write_mining_stats(path: Path | str, result: MiningResult) -> Path:
    """The rule, the encoders' summaries and the per-prompt statistics, as JSON."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=1) + "\n", encoding="utf-8")
    return path


def stats_path_for(selection: Path | str) -> Path:
    """Where the statistics go by default: ``mini.txt.gz`` -> ``mini.stats.json``."""
    selection = Path(selection)
    stem = selection.name.split(".")[0] or "selection"
    return selection.with_name(f"{stem}.stats.json")


# ------------------------------------------------------------------------------- helpers


def _lines(path: Path | str, what: str) -> list[str]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: no such {what}")
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"{path}: cannot read the {what} ({error})") from error


def _distinct(items: Any) -> list[str]:
    return list(dict.fromkeys(s.strip() for s in items if s.strip()))
