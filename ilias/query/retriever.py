"""Retriever: encode a query exactly as the collection was encoded, then search Qdrant.

The collection records the encoder spec and resolution its vectors were made with; the
retriever reads them and builds the same encoder, so a query can never be embedded in a
different space from the database it searches. A collection that records no encoder (one
made by another tool) is searched by vector; image and text queries need ``encoder=``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ilias.errors import DatasetError, IliasError, StoreError
from ilias.indexing import (
    Encoder,
    Store,
    cached_encoder,
    load_image_for,
    open_store,
)
from ilias.indexing.devices import check_device, check_precision
from ilias.indexing.encoders import EncoderSpec, no_text_tower
from ilias.indexing.store import check_k
from ilias.loader import DecodeFailure, Record, clip_box, crop_to_box
from ilias.rerank import ChamferRerank, Reranker, RerankQuery, SearchScope, apply_rerankers
from ilias.rerank.chamfer import max_sim_to_chamfer
from ilias.types import Filter, Hit, LocalConfig, LocalFeatures, SearchParams

ImageInput = Image.Image | str | Path | bytes


# How a benchmark's image queries are given to the encoder: whole (the reference's default),
# cropped to the union of their boxes (its --crop_resize) or masked outside them (--masking).
QUERY_REGIONS = ("whole", "crop", "mask")


@dataclass(frozen=True)
class QueryImage:
    """An image query: ``bbox`` (``[x, y, w, h]``) crops it to that box; ``mask`` (a list
    of such boxes) keeps it whole and zeroes the encoder input outside them, as the
    reference's ``--masking`` does (``Encoder.preprocess_masked``)."""

    image: ImageInput
    bbox: Sequence[int] | None = None
    mask: Sequence[Sequence[int]] | None = None


class Retriever:
    """Image, text and hybrid search over one collection."""

    def __init__(
        self,
        store: Store | str,
        collection: str,
        *,
        encoder: Encoder | None = None,
        params: SearchParams | None = None,
        device: str = "auto",
        precision: str = "auto",
    ):
        """``device`` / ``precision``: where the collection's encoder runs when it is built
        here (``encoder`` None); see ``ilias.indexing.devices``."""
        self.store = open_store(store) if isinstance(store, str) else store
        self.collection = collection
        self.view = self.store.collection(collection)
        self.params = params or SearchParams()
        self._encoder = encoder
        self._device, self._precision = check_device(device), check_precision(precision)
        config = self.view.config  # a clear error now for a missing collection
        if encoder is not None:
            self._check_encoder(encoder, config.dim)

    @property
    def encoder(self) -> Encoder:
        """The collection's encoder, built on first use (vector searches need none)."""
        if self._encoder is None:
            config = self.view.config
            spec = config.metadata.get("encoder")
            if not spec:
                raise StoreError(
                    f"collection {self.collection!r} records no encoder (another tool made it), "
                    f"so images and texts cannot be embedded for it; pass the encoder "
                    f"its {config.dim}-d vectors were made with: Retriever(..., encoder="
                    "build_encoder('timm:NAME')) or --encoder SPEC"
                )
            built = cached_encoder(
                spec,
                config.metadata.get("resolution"),
                device=self._device,
                precision=self._precision,
            )
            self._encoder = self._check_encoder(built, config.dim)
        return self._encoder

    def check_text_tower(self) -> None:
        """Refuse text queries when the collection's encoder embeds no texts, read from its
        recorded spec before any model is built (a refusal in a second, not after loading
        the model); a collection that records none is left to :attr:`encoder`."""
        if self._encoder is not None:
            spec, has_text = self._encoder.spec, self._encoder.has_text_tower
        else:
            recorded = self.view.config.metadata.get("encoder")
            if not recorded:
                return
            spec, has_text = recorded, EncoderSpec.parse(recorded).has_text_tower
        if not has_text:
            raise no_text_tower(spec)

    def _check_encoder(self, encoder: Encoder, dim: int) -> Encoder:
        if encoder.dim != dim:
            recorded = self.view.config.metadata.get("encoder") or "not recorded"
            raise StoreError(
                f"encoder {encoder.spec} gives {encoder.dim}-d vectors but "
                f"{self.collection!r} holds {dim}-d ones; use the collection's encoder "
                f"({recorded})"
            )
        return encoder

    def search(
        self,
        image: QueryImage | ImageInput | None = None,
        text: str | None = None,
        *,
        weight: float = 0.5,
        rerank: Sequence[Reranker] = (),
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Hit]:
        """One search for whatever the caller has: an image, a text, or both (hybrid).

        Image only: image-to-image, then the re-rankers in order. Text only: text-to-image.
        Both: hybrid, ``(1 - weight) * i2i + weight * t2i``. Re-rankers apply to image
        searches only.
        """
        check_k(k)  # before any image is decoded or encoded
        if image is None and text is None:
            raise IliasError("give an image, a text, or both for a hybrid search")
        if rerank and (image is None or text is not None):
            raise IliasError("re-ranking applies to image searches (an image and no text)")
        if text is not None:
            self.check_text_tower()
        if image is None:
            assert text is not None
            return self.search_text(text, k=k, filter=filter, params=params)
        if text is not None:
            return self.search_hybrid(image, text, weight, k=k, filter=filter, params=params)
        if rerank:
            return self.search_reranked(image, rerank, k, filter, params, timings)
        return self.search_image(image, k=k, filter=filter, params=params)

    def encode_images(self, queries: Sequence[QueryImage | ImageInput]) -> np.ndarray:
        """Descriptors of query images (cropped or masked as asked), in the collection's space."""
        encoder = self.encoder  # first: a collection without one is refused before decoding
        pictures, masks = self._query_pictures(queries)
        if not any(masks):
            return encoder.encode_images(pictures)
        return encoder.encode_preprocessed(_masked_inputs(encoder, pictures, masks), 32)

    @property
    def local_config(self) -> LocalConfig | None:
        """How the collection's local descriptors were made (None: it has none)."""
        stored = self.view.config.metadata.get("local")
        return LocalConfig(**stored) if stored else None

    def encode_with_local(
        self, queries: Sequence[QueryImage | ImageInput]
    ) -> tuple[np.ndarray, list[LocalFeatures]]:
        """Global descriptors and the query-side local descriptors (600 by default)."""
        config = self.local_config
        if config is None:
            raise StoreError(
                f"collection {self.collection!r} has no local descriptors; load it with --local "
                "to re-rank with cs, sp or ames"
            )
        encoder = self.encoder
        pictures, masks = self._query_pictures(queries)
        if not any(masks):
            return encoder.encode_with_local(pictures, config.top_k_query, config)
        return encoder.encode_preprocessed_with_local(
            _masked_inputs(encoder, pictures, masks),
            [picture.size for picture in pictures],
            config.top_k_query,
            config,
        )

    def search_reranked(
        self,
        image: QueryImage | ImageInput,
        rerankers: Sequence[Reranker],
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Hit]:
        """Global search, then the re-rankers in order (see ``ilias.rerank``)."""
        needs_local = any(step.needs_local for step in rerankers)
        if needs_local:
            vectors, local = self.encode_with_local([image])
            query = RerankQuery(vectors[0], local[0])
        else:
            query = RerankQuery(self.encode_images([image])[0])
        return self.rerank_query(query, rerankers, k, filter, params, timings)

    def rerank_query(
        self,
        query: RerankQuery,
        rerankers: Sequence[Reranker],
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[Hit]:
        """Search for an encoded query and re-rank; Chamfer first runs as ONE engine query
        (prefetch the top k by ``global``, re-score them by ``local`` with MAX_SIM)."""
        steps = list(rerankers)
        began = time.perf_counter()
        if steps and isinstance(steps[0], ChamferRerank) and query.local is not None:
            hits = self.view.search_local(
                query.vector, query.local.descriptors, k, filter, params or self.params
            )
            hits = max_sim_to_chamfer(hits, len(query.local.descriptors))
            stage = "global+cs"
            steps = steps[1:]
        else:
            hits = self.search_vectors(query.vector[None], k, filter, params)[0]
            stage = "global"
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - began
        scope = SearchScope(k, filter, params or self.params)
        return apply_rerankers(self.view, query, hits, steps, scope, timings)

    def _query_pictures(
        self, queries: Sequence[QueryImage | ImageInput]
    ) -> tuple[list[Image.Image], list[Sequence[Sequence[int]] | None]]:
        """Decoded query pictures (cropped where a query has a ``bbox``) and each query's
        mask boxes (None: unmasked); a box with no pixel in its image is refused."""
        images: list[Image.Image] = []
        masks: list[Sequence[Sequence[int]] | None] = []
        for index, query in enumerate(queries):
            query = query if isinstance(query, QueryImage) else QueryImage(query)
            if query.bbox and query.mask:
                raise IliasError(f"query {index}: crop (bbox) or mask, not both")
            picture: Image.Image | DecodeFailure
            if isinstance(query.image, Image.Image):
                picture = query.image.convert("RGB")
                if query.bbox:
                    picture = crop_to_box(f"query {index}", picture, query.bbox)
            else:
                payload = {"bbox": list(query.bbox)} if query.bbox else {}
                record = Record(f"query {index}", query.image, payload)
                picture = load_image_for(record, crop_to_bbox=True)
            if not isinstance(picture, DecodeFailure) and query.mask:
                picture = _check_mask(f"query {index}", picture, query.mask)
            if isinstance(picture, DecodeFailure):
                shown = "the given image" if isinstance(query.image, Image.Image) else query.image
                raise DatasetError(f"cannot read query image {shown!s}: {picture.reason}")
            images.append(picture)
            masks.append(query.mask or None)
        return images, masks

    def search_image(
        self,
        image: QueryImage | ImageInput,
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Top-k database images for one image (a PIL image, a path or encoded bytes)."""
        return self.search_images([image], k, filter, params)[0]

    def search_images(
        self,
        images: Sequence[QueryImage | ImageInput],
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        """Batch version of ``search_image``: one encoder pass, one batched Qdrant request."""
        return self.search_vectors(self.encode_images(images), k, filter, params)

    def search_text(
        self,
        text: str,
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Text-to-image: the text (an ILIAS ``T*.txt`` as is, no template) in image space."""
        return self.search_texts([text], k, filter, params)[0]

    def search_texts(
        self,
        texts: Sequence[str],
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        return self.search_vectors(self.encoder.encode_texts(texts), k, filter, params)

    def search_hybrid(
        self,
        image: QueryImage | ImageInput,
        text: str,
        weight: float = 0.5,
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Rank by ``(1 - weight) * cos(image, x) + weight * cos(text, x)``."""
        image_vector = self.encode_images([image])
        text_vector = self.encoder.encode_texts([text])
        return self.hybrid_vectors(image_vector, text_vector, weight, k, filter, params)[0]

    def hybrid_vectors(
        self,
        image_vectors: np.ndarray,
        text_vectors: np.ndarray,
        weight: float = 0.5,
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        """Hybrid search for pairs of (image, text) query vectors.

        Each modality retrieves its own top-k; the union is re-scored with both cosine
        similarities computed from the stored float32 vectors, so a candidate found by one
        modality only still gets its true similarity to the other query (not zero).
        """
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight is the text share of the score, in [0, 1]; got {weight}")
        image_hits = self.search_vectors(image_vectors, k, filter, params)
        text_hits = self.search_vectors(text_vectors, k, filter, params)
        results: list[list[Hit]] = []
        for q_image, q_text, hits_a, hits_b in zip(
            image_vectors, text_vectors, image_hits, text_hits, strict=True
        ):
            candidates = {h.id: h.payload for h in hits_b} | {h.id: h.payload for h in hits_a}
            stored = self.view.retrieve_vectors(list(candidates))
            ids = list(stored)
            if not ids:
                results.append([])
                continue
            matrix = np.stack([stored[i] for i in ids])
            scores = (1.0 - weight) * (matrix @ q_image) + weight * (matrix @ q_text)
            order = np.argsort(-scores, kind="stable")[:k]
            results.append([Hit(ids[j], float(scores[j]), candidates[ids[j]]) for j in order])
        return results

    def search_vectors(
        self,
        vectors: np.ndarray,
        k: int = 1000,
        filter: Filter | None = None,
        params: SearchParams | None = None,
    ) -> list[list[Hit]]:
        return self.view.search(vectors, k, filter, params or self.params)


def query_region(crop: bool = False, mask: bool = False) -> str:
    """The ``QUERY_REGIONS`` name of a pair of options (both: one clear refusal)."""
    if crop and mask:
        raise IliasError(
            "--crop-queries and --mask-queries: choose one (the reference's run scripts use "
            "neither: queries whole)"
        )
    return "crop" if crop else "mask" if mask else "whole"


def query_images_of(records: Sequence[Record], region: str = "whole") -> list[QueryImage]:
    """Benchmark query records as retriever inputs (``QUERY_REGIONS``): the whole image, as
    the reference extracts queries by default; cropped to the union of the query's boxes;
    or masked outside each of them. A query without a box is used whole either way."""
    if region not in QUERY_REGIONS:
        raise IliasError(f"query region {region!r}: use {', '.join(QUERY_REGIONS)}")
    out = []
    for record in records:
        bbox = record.payload.get("bbox")
        if region == "crop" and bbox:
            out.append(QueryImage(record.source, bbox=bbox))
        elif region == "mask" and bbox:
            out.append(QueryImage(record.source, mask=record.payload.get("boxes") or [bbox]))
        else:
            out.append(QueryImage(record.source))
    return out


def _check_mask(
    query_id: str, picture: Image.Image, boxes: Sequence[Sequence[int]]
) -> Image.Image | DecodeFailure:
    """``picture`` if some box holds a pixel of it (a mask with none would hide it all)."""
    if any(clip_box(box, picture.size) is not None for box in boxes):
        return picture
    return DecodeFailure(
        query_id,
        f"no mask box ({len(boxes)}) holds a pixel of the {picture.width} x {picture.height} image",
    )


def _masked_inputs(
    encoder: Encoder,
    pictures: Sequence[Image.Image],
    masks: Sequence[Sequence[Sequence[int]] | None],
) -> list[Any]:
    """Encoder inputs (CHW tensors), masked outside their boxes where a query has some."""
    inputs = []
    for picture, boxes in zip(pictures, masks, strict=True):
        inputs.append(
            encoder.preprocess_masked(picture, boxes) if boxes else encoder.preprocess(picture)
        )
    return inputs
