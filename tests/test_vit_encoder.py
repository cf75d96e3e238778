"""ViT encoders (SigLIP and DINOv2 are ViTs) through ilias's own spec path, on real timm models.

No ViT weights exist offline, so each model is created by timm with random weights, saved
to a file and loaded back through ``timm:<name>@<file>`` (timm's real ``pretrained`` path):
mechanics, not quality. Two architectures: ``vit_tiny_patch16_224`` (patch 16, a class
token) and ``vit_small_patch14_reg4_dinov2`` (patch 14, a class token and 4 registers: the
DINOv2-with-registers layout the local descriptors are designed for). Both are built at
their full (small) depth, as a spec cannot pass timm constructor arguments such as depth.

The expected values are computed independently of ilias's code: padding and patch centres
by hand (literals below), patch tokens with a forward hook on the last transformer block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from ilias.indexing import build_encoder
from ilias.indexing.encoders import TimmEncoder

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    """One model and one image size, with the geometry worked out by hand."""

    model: str
    patch: int
    prefix_tokens: int  # class token + registers, which are not patches
    embed_dim: int
    image_size: tuple[int, int]  # (width, height) of the original image
    resolution: int
    padded: tuple[int, int, int]  # C, H, W after resize and centre padding
    left: int
    top: int
    factor: float  # resized / original, exact on both axes for these sizes
    default_resolution: int  # the ladder's choice when no resolution is given


CASES = [
    # 300 x 150 -> 200 x 100 (factor 2/3) -> padded to 208 x 112: 8 and 12 pixels of
    # padding, centred: 4 left, 6 on top. Grid 13 x 7. Centre of patch (row r, col c) in
    # original pixels: x = ((c + 0.5) * 16 - 4) * 1.5 = 24c + 6, y = 24r + 3.
    Case("vit_tiny_patch16_224", 16, 1, 192, (300, 150), 200, (3, 112, 208), 4, 6, 2 / 3, 384),
    # 350 x 175 -> 200 x 100 (factor 4/7) -> padded to 210 x 112: 10 and 12 pixels, 5 left,
    # 6 on top. Grid 15 x 8. x = ((c + 0.5) * 14 - 5) * 1.75 = 24.5c + 3.5, y = 24.5r + 1.75.
    Case(
        "vit_small_patch14_reg4_dinov2.lvd142m",
        14,
        5,
        384,
        (350, 175),
        200,
        (3, 112, 210),
        5,
        6,
        4 / 7,
        724,
    ),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.model.split("_")[1])
def vit(request, tmp_path_factory):
    case: Case = request.param
    torch.manual_seed(0)
    reference = timm.create_model(case.model, pretrained=False, dynamic_img_size=True).eval()
    path = tmp_path_factory.mktemp("vit") / "weights.pth"
    torch.save(reference.state_dict(), path)
    spec = f"timm:{case.model}@{path}"
    return case, spec, build_encoder(spec, case.resolution), reference


def _photo(case: Case) -> Image.Image:
    return Image.fromarray(data.astronaut()).convert("RGB").resize(case.image_size)


def _last_block_tokens(
    model: torch.nn.Module, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features before the classifier, last block output) of one pass; a hook reads
    the block."""
    seen = {}
    handle = model.blocks[-1].register_forward_hook(lambda _m, _i, out: seen.setdefault("x", out))
    with torch.inference_mode():
        pooled = model.forward_head(model.forward_features(batch), pre_logits=True)
    handle.remove()
    return pooled, seen["x"]


def test_weights_come_from_the_file_and_the_classifier_is_dropped(vit):
    case, _, encoder, reference = vit
    assert isinstance(encoder, TimmEncoder) and encoder.patch_multiple == case.patch
    assert encoder.dim == case.embed_dim and encoder.resolution == case.resolution
    loaded = encoder.model.state_dict()
    for name, tensor in reference.state_dict().items():
        if name.startswith("head."):
            assert name not in loaded  # num_classes=0: the pooled features, no classifier
        else:
            assert torch.equal(loaded[name], tensor), name
    assert build_encoder(vit[1]).resolution == case.default_resolution  # the ladder


def test_inputs_are_resized_then_centre_padded_to_a_multiple_of_the_patch(vit):
    case, _, encoder, _ = vit
    image = _photo(case)
    tensor = encoder.preprocess(image)
    assert tuple(tensor.shape) == case.padded
    _, height, width = case.padded
    assert height % case.patch == 0 and width % case.patch == 0
    resized = image.resize(
        (round(case.image_size[0] * case.factor), round(case.image_size[1] * case.factor))
    )
    pixels = np.asarray(resized, dtype=np.float32) / 255.0
    mean = np.array(encoder.model.pretrained_cfg["mean"], np.float32)
    std = np.array(encoder.model.pretrained_cfg["std"], np.float32)
    expected = ((pixels - mean) / std).transpose(2, 0, 1)
    inner = tensor[
        :, case.top : case.top + pixels.shape[0], case.left : case.left + pixels.shape[1]
    ]
    np.testing.assert_allclose(inner.numpy(), expected, atol=1e-5)
    padding = torch.ones_like(tensor, dtype=torch.bool)
    padding[:, case.top : case.top + pixels.shape[0], case.left : case.left + pixels.shape[1]] = (
        False
    )
    assert tensor[padding].abs().max() == 0.0  # zero padding (the normalised mean colour)


def test_global_descriptor_is_the_models_pooled_output_normalised(vit):
    case, _, encoder, reference = vit
    image = _photo(case)
    batch = encoder.preprocess(image)[None]
    pooled, _ = _last_block_tokens(reference, batch)  # same weights, plain model, no ilias
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    got = encoder.encode_images([image])
    assert got.shape == (1, case.embed_dim) and got.dtype == np.float32
    assert np.linalg.norm(got[0]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with_local, _ = encoder.encode_with_local([image], top_k=5)
    np.testing.assert_allclose(with_local, got, atol=1e-5)


def test_local_descriptors_are_the_strongest_patch_tokens_at_their_patch_centres(vit):
    case, _, encoder, reference = vit
    image = _photo(case)
    top_k = 25
    _, local = encoder.encode_with_local([image], top_k=top_k)
    features = local[0]
    assert features.descriptors.shape == (top_k, case.embed_dim)
    assert features.xy.shape == (top_k, 2)
    np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, atol=1e-5)
    # independently: the last block's tokens without the class token and registers,
    # row-major over the patch grid, ranked by L2 norm
    _, tokens = _last_block_tokens(reference, encoder.preprocess(image)[None])
    patches = tokens[0, case.prefix_tokens :].numpy()
    rows, cols = case.padded[1] // case.patch, case.padded[2] // case.patch
    assert patches.shape == (rows * cols, case.embed_dim)  # every other token is a patch
    norms = np.linalg.norm(patches, axis=1)
    order = np.argsort(-norms, kind="stable")[:top_k]
    np.testing.assert_allclose(features.weights, norms[order], rtol=1e-4)
    np.testing.assert_allclose(features.descriptors, patches[order] / norms[order, None], atol=1e-4)
    # each xy is the centre of its patch in ORIGINAL pixels: padding removed, resize undone
    row, col = order // cols, order % cols
    expected_x = ((col + 0.5) * case.patch - case.left) / case.factor
    expected_y = ((row + 0.5) * case.patch - case.top) / case.factor
    np.testing.assert_allclose(features.xy, np.stack([expected_x, expected_y], axis=1), atol=1e-3)


def test_patch_centres_use_each_axis_own_resize_factor(vit):
    case, _, encoder, reference = vit
    image = Image.fromarray(data.astronaut()).convert("RGB").resize((300, 200))
    # 300 x 200 -> 200 x 133: x factor 200/300 exactly, y factor 133/200 (int truncation)
    p = case.patch
    width, height = math.ceil(200 / p) * p, math.ceil(133 / p) * p
    left, top = (width - 200) // 2, (height - 133) // 2
    _, local = encoder.encode_with_local([image], top_k=50)
    _, tokens = _last_block_tokens(reference, encoder.preprocess(image)[None])
    norms = np.linalg.norm(tokens[0, case.prefix_tokens :].numpy(), axis=1)
    order = np.argsort(-norms, kind="stable")[:50]
    row, col = order // (width // p), order % (width // p)
    x = ((col + 0.5) * p - left) / (200 / 300)
    y = ((row + 0.5) * p - top) / (133 / 200)
    np.testing.assert_allclose(local[0].xy, np.stack([x, y], axis=1), atol=1e-3)


@pytest.mark.parametrize("vit", CASES[:1], indirect=True, ids=["tiny"])  # one is enough
def test_a_collection_of_vit_patch_tokens_reranks_like_the_numpy_reference(vit, tmp_path):
    from ilias.indexing import EdgeStore, ExtractionOptions, LocalConfig, load_collection
    from ilias.loader import read_images
    from ilias.query import Retriever
    from ilias.rerank import ChamferRerank, chamfer_rank

    case, spec, encoder, _ = vit
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()).convert("RGB").save(folder / f"{name}.png")
    records = read_images(folder)
    local = LocalConfig(top_k_database=12, top_k_query=30)
    options = ExtractionOptions(
        encoder=spec, resolution=case.resolution, scheduler="sync", local=local
    )
    with EdgeStore(tmp_path / "store") as store:
        assert load_collection(records, store, "vit", options).loaded == 4
        assert store.collection_config("vit").local_dim == case.embed_dim
        stored = store.retrieve_local("vit", [r.id for r in records])
        coffee = Image.open(folder / "coffee.png").convert("RGB")
        _, direct = encoder.encode_with_local([coffee], 12, local)
        np.testing.assert_allclose(
            stored["photos/coffee.png"].descriptors, direct[0].descriptors, atol=1e-4
        )
        np.testing.assert_allclose(stored["photos/coffee.png"].xy, direct[0].xy, atol=0.05)
        retriever = Retriever(store, "vit", encoder=encoder)
        query = folder / "chelsea.png"
        hits = retriever.search_reranked(query, [ChamferRerank()], k=4)
        _, query_local = retriever.encode_with_local([query])
        reference = chamfer_rank(
            query_local[0].descriptors, {i: stored[i].descriptors for i in stored}
        )
        assert [h.id for h in hits] == [i for i, _ in reference]
        assert hits[0].id == "photos/chelsea.png"  # the image itself matches every patch
