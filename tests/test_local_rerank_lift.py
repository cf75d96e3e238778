"""A benchmark where the global descriptor ranks the positive low and local matching lifts it.

Built from real photos, deterministically (no randomness beyond a seeded block shuffle):

* the object is a real photo crop (the cup of ``skimage.data.coffee``), 160 x 160 pixels;
* the query is that cup on a real grass photo (384 x 384, the encoder's resolution, so no
  image is resized and patch cells line up: the cup sits at (128, 128), a multiple of 16);
* the one positive is the same cup, at the same pixel scale, pasted into a different,
  cluttered real photo (the astronaut) at (224, 32): same object, new context, translated;
* four distractors are near-duplicates of the query's global appearance WITHOUT the object:
  the grass with the cup blurred to a colour blob, the grass with the cup cut into 8 x 8
  blocks and shuffled (its pieces, not its shape), the bare grass, and the mirrored grass;
* five other real photos fill the database.

The global descriptor (pooled over the whole image) sees mostly grass, so the four
near-duplicates outrank the positive, which it sees mostly as astronaut: the positive is
5th (cosine 0.42 against 0.46-0.64). The query's 24 strongest patches all lie on the cup
(asserted below), so Chamfer similarity asks "is every cup patch somewhere in this
image?": only the positive has them all (CS 0.85 against at most 0.48). Spatial
verification asks whether the matched patches agree on one transform: the positive's do
(20 inliers, a pure translation), the shuffled and blurred cups' do not (at most 9).
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps
from skimage import data

from ilias.indexing import (
    DEFAULT_ENCODER,
    EdgeStore,
    ExtractionOptions,
    LocalConfig,
    load_collection,
)
from ilias.loader import read_ilias
from ilias.query import QueryImage, Retriever, run_queries
from ilias.rerank import ChamferRerank, chamfer_rank, parse_rerankers, verify

pytestmark = pytest.mark.slow

SIZE = 384  # every image is 384 x 384 and the encoder runs at 384: no resizing anywhere
CUP_AT_QUERY, CUP_AT_POSITIVE, CUP_SIZE = (128, 128), (224, 32), 160
LOCAL = LocalConfig(top_k_database=100, top_k_query=24)

POSITIVE = "cup/pos/P000.png"
BLURRED, SHUFFLED, BARE, MIRRORED = (
    f"distractors/{name}.png"
    for name in ("grass_blurred_cup", "grass_shuffled_cup", "grass", "grass_mirrored")
)
FILLERS = [f"distractors/{name}.png" for name in ("camera", "clock", "coins", "gravel", "rocket")]


def _photo(loader) -> Image.Image:
    return Image.fromarray(loader()).convert("RGB").resize((SIZE, SIZE))


def _on(background: Image.Image, thing: Image.Image, at: tuple[int, int]) -> Image.Image:
    canvas = background.copy()
    canvas.paste(thing, at)
    return canvas


def _shuffled_blocks(image: Image.Image, n: int, seed: int) -> Image.Image:
    pixels = np.asarray(image)
    side = pixels.shape[0] // n
    blocks = [
        pixels[i * side : (i + 1) * side, j * side : (j + 1) * side]
        for i in range(n)
        for j in range(n)
    ]
    order = np.random.default_rng(seed).permutation(len(blocks))
    rows = [np.concatenate([blocks[order[i * n + j]] for j in range(n)], axis=1) for i in range(n)]
    return Image.fromarray(np.concatenate(rows, axis=0))


@pytest.fixture(scope="module")
def lift_bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("lift")
    cup = Image.fromarray(data.coffee()).convert("RGB").crop((180, 0, 500, 320))
    cup = cup.resize((CUP_SIZE, CUP_SIZE))
    grass = _photo(data.grass)
    images = {
        "core/cup/query/Q000.png": _on(grass, cup, CUP_AT_QUERY),
        f"core/{POSITIVE}": _on(_photo(data.astronaut), cup, CUP_AT_POSITIVE),
        BLURRED: _on(grass, cup.filter(ImageFilter.GaussianBlur(16)), CUP_AT_QUERY),
        SHUFFLED: _on(grass, _shuffled_blocks(cup, 8, seed=0), CUP_AT_QUERY),
        BARE: grass,
        MIRRORED: ImageOps.mirror(grass),
    }
    for name in FILLERS:
        images[name] = _photo(getattr(data, name.split("/")[1].removesuffix(".png")))
    for relative, image in images.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        image.save(root / relative)  # PNG: lossless, the pixels above exactly
    return read_ilias(root / "core", root / "distractors")


@pytest.fixture(scope="module")
def lifted(lift_bench, tmp_path_factory):
    store = EdgeStore(tmp_path_factory.mktemp("lift_store"))
    options = ExtractionOptions(
        encoder=DEFAULT_ENCODER, resolution=SIZE, scheduler="sync", partition_size=6, local=LOCAL
    )
    report = load_collection(lift_bench.database, store, "lift", options)
    assert report.loaded == 10 and not report.failures
    retriever = Retriever(store, "lift")
    query = QueryImage(lift_bench.image_queries[0].source)
    yield lift_bench, store, retriever, query
    store.close()


def _ids(hits):
    return [h.id for h in hits]


def test_the_query_patches_are_the_cup(lifted):
    _, _, retriever, query = lifted
    _, local = retriever.encode_with_local([query])
    xy = local[0].xy
    assert xy.shape == (24, 2)
    # every kept patch centre lies inside the cup's box [128, 288) in both axes
    assert ((xy > CUP_AT_QUERY[0]) & (xy < CUP_AT_QUERY[0] + CUP_SIZE)).all()


def test_global_search_ranks_the_positive_fifth_below_four_lookalikes(lifted):
    bench, store, retriever, query = lifted
    hits = retriever.search_image(query, k=10)
    assert _ids(hits)[:5] == [BLURRED, SHUFFLED, BARE, MIRRORED, POSITIVE]
    # the same order by numpy brute force over the stored float32 vectors
    vector = retriever.encode_images([query])[0]
    stored = store.retrieve_vectors("lift", [r.id for r in bench.database])
    ids = list(stored)
    exact = np.stack([stored[i] for i in ids]) @ vector
    assert _ids(hits) == [ids[j] for j in np.argsort(-exact, kind="stable")]
    run = run_queries(bench, retriever, "image", k=10)
    assert run.scores.per_query_ap == {"cup/query/Q000.png": pytest.approx(1 / 5)}


def test_chamfer_lifts_the_positive_to_first_as_the_numpy_reference_does(lifted):
    bench, store, retriever, query = lifted
    global_hits = retriever.search_image(query, k=10)
    hits = retriever.search_reranked(query, [ChamferRerank()], k=10)
    assert hits[0].id == POSITIVE
    _, local = retriever.encode_with_local([query])
    stored = store.retrieve_local("lift", _ids(global_hits))
    reference = chamfer_rank(
        local[0].descriptors, {i: stored[i].descriptors for i in _ids(global_hits)}
    )
    assert _ids(hits) == [i for i, _ in reference]
    for hit, (_, cs) in zip(hits, reference, strict=True):
        assert hit.score == pytest.approx(cs, abs=1e-4)
    assert reference[0][1] > reference[1][1] + 0.2  # a clear margin, not a coin toss
    run = run_queries(bench, retriever, "image", k=10, rerank=[ChamferRerank()])
    assert run.scores.per_query_ap == {"cup/query/Q000.png": pytest.approx(1.0)}


def test_spatial_verification_lifts_the_positive_to_first(lifted):
    bench, store, retriever, query = lifted
    global_hits = retriever.search_image(query, k=10)
    assert global_hits[4].id == POSITIVE  # inside the top 5 that sp re-scores
    hits = retriever.search_reranked(query, parse_rerankers(["sp:top=5"]), k=10)
    assert hits[0].id == POSITIVE
    # reference: global score + min(inliers, 20) / 20 for the top 5, the rest unchanged
    _, local = retriever.encode_with_local([query])
    q = local[0]
    stored = store.retrieve_local("lift", _ids(global_hits[:5]))
    inliers = {
        h.id: verify(q.descriptors, q.xy, stored[h.id].descriptors, stored[h.id].xy).inliers
        for h in global_hits[:5]
    }
    assert inliers[POSITIVE] >= 16 and max(v for i, v in inliers.items() if i != POSITIVE) < 12
    rescored = sorted(
        ((h.id, h.score + min(inliers[h.id], 20) / 20) for h in global_hits[:5]),
        key=lambda p: -p[1],
    )
    assert _ids(hits) == [i for i, _ in rescored] + _ids(global_hits[5:])
    for hit, (_, score) in zip(hits, rescored, strict=False):
        assert hit.score == pytest.approx(score, abs=1e-5)
    run = run_queries(bench, retriever, "image", k=10, rerank=parse_rerankers(["sp:top=5"]))
    assert run.scores.per_query_ap == {"cup/query/Q000.png": pytest.approx(1.0)}
    # sp re-scores only the top N: with top=4 the positive is outside and stays fifth
    short = retriever.search_reranked(query, parse_rerankers(["sp:top=4"]), k=10)
    assert _ids(short)[4] == POSITIVE
