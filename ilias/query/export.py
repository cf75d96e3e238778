"""A collection written out as the ILIAS reference's feature files, queries included.

``export_features`` writes what the reference's ``knn_search/search.py`` reads: the
database from the store (``ilias.indexing.export_database``: the positives file and the
numbered distractor files, the stored float32 originals as float16), and the benchmark's
queries encoded with the collection's own encoder and resolution, exactly as ``ilias
eval`` encodes them (whole images, as the reference extracts queries by default), into
``features_image_queries.hdf5`` and, where the encoder has a text tower,
``features_text_queries.hdf5``. The reference's search and then its ``evaluate.py`` run on
the folder unchanged (``FeatureExport.search_arguments`` gives the command line), so its
mAP can be set beside ``ilias eval``'s.

Queries live here, not in ``ilias.indexing``, because they need the retriever's encoder:
the same reason the evaluation runner lives in ``ilias.query``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ilias.errors import IliasError
from ilias.indexing.features import (
    DISTRACTORS_PER_FILE,
    FEATURES_NAME,
    DatabaseExport,
    clear_export_folder,
    export_database,
    feature_file_name,
    write_features,
)
from ilias.loader import Benchmark, benchmark_for_collection

if TYPE_CHECKING:
    from ilias.indexing import Store
    from ilias.query.retriever import Retriever

Progress = Callable[[str, int, int], None]  # (stage, done, total)
EXPORT_KINDS = ("image", "text")


@dataclass(frozen=True)
class FeatureExport:
    """What ``export_features`` wrote, and which query kinds it did not, with the reason."""

    folder: Path
    database: DatabaseExport
    query_files: dict[str, Path]  # kind -> file
    queries: dict[str, int]  # kind -> queries written
    skipped: dict[str, str]  # kind -> why it was not written

    @property
    def files(self) -> list[Path]:
        return [
            *self.query_files.values(),
            self.database.positives_file,
            *self.database.distractor_files,
        ]

    def search_arguments(self, kind: str = "image") -> list[str]:
        """The reference ``knn_search/search.py`` arguments that search these files with
        the ``kind`` queries (add ``--save_dir``, ``--use_gpu false`` without a GPU)."""
        if kind not in self.query_files:
            raise IliasError(f"no {kind} query file was written: {self.skipped.get(kind)}")
        arguments = [
            "--query_hdf5",
            str(self.query_files[kind]),
            "--positive_hdf5",
            str(self.database.positives_file),
        ]
        if self.database.distractor_files:
            template = self.database.distractor_files[0].name.replace("_00000.", "_{idx}.")
            arguments += [
                "--distractor_hdf5",
                str(self.folder / template),
                "--total_distractors",
                str(len(self.database.distractor_files)),
            ]
        return arguments


def export_features(
    store: Store,
    collection: str,
    folder: Path | str,
    benchmark: Benchmark | None = None,
    *,
    kinds: Sequence[str] = EXPORT_KINDS,
    name: str = FEATURES_NAME,
    per_file: int = DISTRACTORS_PER_FILE,
    fp16: bool = True,
    overwrite: bool = False,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> FeatureExport:
    """Write ``collection`` and its benchmark's queries as the reference's feature files.

    ``benchmark`` defaults to the ILIAS folder the collection was loaded from (its
    ``dataset`` metadata); without one, only the database is written and the query kinds
    are listed in ``skipped``. A kind the encoder or dataset cannot give (text queries of
    an image-only encoder) is skipped with the reason, as ``ilias eval`` skips it. Files
    of an earlier export in ``folder`` are refused unless ``overwrite``. ``fp16=False``
    writes float32 rows: the stored vectors bit for bit.
    """
    from ilias.query.evaluation import skip_reason
    from ilias.query.retriever import Retriever

    unknown = [kind for kind in kinds if kind not in EXPORT_KINDS]
    if unknown:
        raise IliasError(f"query kind {unknown[0]!r}: export image or text queries")
    folder = Path(folder)
    report = (lambda stage: lambda d, t: progress(stage, d, t)) if progress else None
    metadata = store.collection_config(collection).metadata
    clear_export_folder(folder, name, overwrite)  # refused before any query is encoded
    skipped: dict[str, str] = {}
    encoded: dict[str, tuple[list[str], np.ndarray]] = {}
    if benchmark is None and "dataset" not in metadata:
        missing = (
            f"collection {collection!r} records no ILIAS dataset; pass the dataset folder "
            "(ilias export DATASET ...) to write its queries"
        )
        skipped = dict.fromkeys(kinds, missing)
    else:
        # Queries first: an encoder that cannot be built fails before the long database write.
        benchmark = benchmark or benchmark_for_collection(metadata)
        retriever = Retriever(store, collection)
        for kind in kinds:
            reason = skip_reason(benchmark, retriever, kind)
            if reason is not None:
                skipped[kind] = reason
                continue
            stage = report(f"{kind} queries") if report else None
            encoded[kind] = _encode_queries(benchmark, retriever, kind, batch_size, stage)
    database = export_database(
        store, collection, folder, name=name, per_file=per_file, fp16=fp16,
        overwrite=overwrite, progress=report("database") if report else None,
    )  # fmt: skip
    files = {
        kind: write_features(
            folder / feature_file_name(f"{kind}_queries", name=name), ids, vectors, fp16=fp16
        )
        for kind, (ids, vectors) in encoded.items()
    }
    counts = {kind: len(ids) for kind, (ids, _) in encoded.items()}
    return FeatureExport(folder, database, files, counts, skipped)


def _encode_queries(
    benchmark: Benchmark,
    retriever: Retriever,
    kind: str,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
) -> tuple[list[str], np.ndarray]:
    """One kind's queries, sorted by id as the reference writes them, encoded in batches
    as ``ilias eval`` encodes them (image queries whole)."""
    from ilias.query.retriever import query_images_of

    queries: list = sorted(
        benchmark.image_queries if kind == "image" else benchmark.text_queries,
        key=lambda q: q.id,
    )
    parts = []
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        if kind == "image":
            parts.append(retriever.encode_images(query_images_of(chunk)))
        else:
            parts.append(retriever.encoder.encode_texts([q.text for q in chunk]))
        if progress:
            progress(start + len(chunk), len(queries))
    dim = retriever.view.config.dim
    vectors = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
    return [q.id for q in queries], vectors


__all__ = ["EXPORT_KINDS", "FeatureExport", "export_features"]
