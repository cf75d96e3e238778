"""t2i and hybrid search with a real (tiny, randomly initialised) open_clip model.

No CLIP weights exist offline, so these test mechanics, not quality: the model is created
by open_clip from a registered config, saved to a file and loaded back through open_clip's
real ``pretrained=<file>`` path, then used end to end with a real Qdrant Edge collection.
"""

import json

import numpy as np
import open_clip
import pytest
import torch

from ilias.errors import EncoderSpecError
from ilias.indexing import (
    EdgeStore,
    ExtractionOptions,
    SearchParams,
    build_encoder,
    load_collection,
    read_features,
)
from ilias.loader import read_ilias
from ilias.query import QueryImage, Retriever, export_features, query_images_of, run_queries

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip_spec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / "ilias-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("ilias-tiny-clip")
    torch.save(model.state_dict(), folder / "weights.pt")
    return f"open_clip:ilias-tiny-clip@{folder / 'weights.pt'}"


@pytest.fixture(scope="module")
def clip_collection(tiny_ilias, tiny_clip_spec, tmp_path_factory):
    bench = read_ilias(tiny_ilias / "core", tiny_ilias / "distractors")
    store = EdgeStore(tmp_path_factory.mktemp("clip_store"))
    options = ExtractionOptions(encoder=tiny_clip_spec, scheduler="sync", partition_size=8)
    load_collection(bench.database, store, "clip", options)
    yield bench, store, Retriever(store, "clip")
    store.close()


def test_weights_come_back_from_the_file(tiny_clip_spec):
    encoder = build_encoder(tiny_clip_spec)
    assert encoder.dim == 32 and encoder.resolution == 64 and encoder.has_text_tower
    state = torch.load(tiny_clip_spec.split("@", 1)[1], weights_only=True)
    loaded = encoder.model.state_dict()
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())
    texts = encoder.encode_texts(["a red apple", "a blue car"])
    assert texts.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_local_dir_spec(tmp_path, tiny_clip_spec):
    model = open_clip.create_model("ilias-tiny-clip")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.save(model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    encoder = build_encoder(f"open_clip:local-dir:{tmp_path}")
    assert encoder.dim == 32
    with torch.inference_mode():
        expected = model.eval().encode_text(open_clip.get_tokenizer("ilias-tiny-clip")(["x"]))
    np.testing.assert_allclose(
        encoder.encode_texts(["x"])[0],
        torch.nn.functional.normalize(expected, dim=-1)[0].numpy(),
        atol=1e-5,
    )


@pytest.mark.slow
def test_search_text_returns_the_brute_force_ranking(clip_collection):
    _, store, retriever = clip_collection
    text = "a photo of a rocket"
    hits = retriever.search_text(text, k=50)
    query = retriever.encoder.encode_texts([text])[0]
    stored = store.retrieve_vectors("clip", [h.id for h in hits])
    assert len(hits) == 17
    for hit in hits:
        assert hit.score == pytest.approx(float(stored[hit.id] @ query), abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


@pytest.mark.slow
def test_hybrid_scores_the_union_with_exact_similarities(clip_collection, tiny_ilias):
    bench, store, retriever = clip_collection
    image = QueryImage(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg")
    text = "a photo of a cat"
    q_image = retriever.encode_images([image])[0]
    q_text = retriever.encoder.encode_texts([text])[0]
    every = store.retrieve_vectors("clip", [r.id for r in bench.database])
    k = 4  # short lists: the union holds candidates that only one modality found
    image_only = {h.id for h in retriever.search_vectors(q_image[None], k)[0]}
    text_only = {h.id for h in retriever.search_vectors(q_text[None], k)[0]}
    assert image_only != text_only

    def exact(db_id):
        return 0.7 * float(every[db_id] @ q_image) + 0.3 * float(every[db_id] @ q_text)

    hits = retriever.search_hybrid(image, text, weight=0.3, k=k)
    union_ranked = sorted(image_only | text_only, key=exact, reverse=True)
    assert [h.id for h in hits] == union_ranked[:k]
    assert any((h.id in image_only) != (h.id in text_only) for h in hits)
    for hit in hits:  # a candidate missing from one list still gets its true similarity
        assert hit.score == pytest.approx(exact(hit.id), abs=1e-4)


@pytest.mark.slow
def test_hybrid_weight_extremes_match_single_modalities(clip_collection, tiny_ilias):
    _, _, retriever = clip_collection
    image = QueryImage(tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg")
    only_image = retriever.search_hybrid(image, "coffee", weight=0.0, k=17)
    assert [h.id for h in only_image] == [h.id for h in retriever.search_image(image, k=17)]
    only_text = retriever.search_hybrid(image, "coffee", weight=1.0, k=17)
    assert [h.id for h in only_text] == [h.id for h in retriever.search_text("coffee", k=17)]
    with pytest.raises(ValueError, match="text share"):
        retriever.search_hybrid(image, "coffee", weight=1.5)


def _ap_by_hand(ranked_ids, positives, k):
    found = [i for i, db_id in enumerate(ranked_ids[:k], start=1) if db_id in positives]
    return sum(n / rank for n, rank in enumerate(found, start=1)) / min(k, len(positives))


@pytest.mark.slow
def test_text_and_hybrid_benchmark_runs(clip_collection):
    bench, store, retriever = clip_collection
    every = store.retrieve_vectors("clip", [r.id for r in bench.database])
    ids = list(every)
    matrix = np.stack([every[i] for i in ids])
    # the random model's text scores lie within 0.06 of each other, closer than int8 can
    # order a short list; searched on the float32 originals, the top 6 are exact
    k = 6  # < 17 images: the cut matters
    exact = SearchParams(exact=True, ignore_quantization=True)
    text_run = run_queries(bench, retriever, "text", k=k, params=exact)
    assert set(text_run.rankings) == {t.id for t in bench.text_queries}
    texts = retriever.encoder.encode_texts([t.text for t in bench.text_queries])
    for query, vector in zip(bench.text_queries, texts, strict=True):
        ranked = [ids[j] for j in np.argsort(-(matrix @ vector), kind="stable")]
        assert [h.id for h in text_run.rankings[query.id]] == ranked[:k]
        expected_ap = _ap_by_hand(ranked, bench.positives_for(query.id), k)
        assert text_run.scores.per_query_ap[query.id] == pytest.approx(expected_ap, abs=1e-9)
    hybrid_run = run_queries(bench, retriever, "hybrid", weight=0.5)
    assert set(hybrid_run.rankings) == {q.id for q in bench.image_queries}
    # k = 1000 > 17: each modality's list is the whole database, so hybrid is exact
    images = retriever.encode_images(query_images_of(bench.image_queries))
    by_instance = dict(zip([t.instance for t in bench.text_queries], texts, strict=True))
    for query, image in zip(bench.image_queries, images, strict=True):
        text = by_instance[query.payload["instance"]]
        scores = 0.5 * (matrix @ image) + 0.5 * (matrix @ text)
        ranked = [ids[j] for j in np.argsort(-scores, kind="stable")]
        assert [h.id for h in hybrid_run.rankings[query.id]] == ranked
        expected_ap = _ap_by_hand(ranked, bench.positives_for(query.id), 1000)
        assert hybrid_run.scores.per_query_ap[query.id] == pytest.approx(expected_ap, abs=1e-9)


def test_export_writes_text_queries_encoded_by_the_collections_text_tower(
    clip_collection, tmp_path
):
    """A vision-language collection exports both query files the reference's search takes:
    the T*.txt queries (sorted ids, the whole text) through the collection's text tower."""
    bench, store, retriever = clip_collection
    done = export_features(store, "clip", tmp_path, bench, fp16=False)
    assert done.queries == {"image": 3, "text": 3} and done.skipped == {}
    texts = read_features(tmp_path / "features_text_queries.hdf5")
    by_id = {q.id: q.text for q in bench.text_queries}
    assert texts.ids == sorted(by_id)
    expected = retriever.encoder.encode_texts([by_id[i] for i in texts.ids])
    np.testing.assert_allclose(texts.features, expected, atol=1e-6)
    assert done.search_arguments("text")[:2] == ["--query_hdf5", str(texts.path)]


def test_encoders_without_text_tower_say_which_have_one(encoder):
    with pytest.raises(EncoderSpecError, match="open_clip"):
        encoder.encode_texts(["a cat"])
