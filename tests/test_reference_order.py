"""ViT inputs and DINOv2 position embeddings in the ILIAS reference's order of operations.

Each expected value is computed here, independently of ilias's code and without the
reference's: the reference's query masking (``ImageDataset(masking=True)``: resize by the
larger side, ToTensor, Normalize, the mask drawn at the original size and resized to that
tensor by nearest neighbour, then the model's ``MultiplierPadding`` to the patch size) in
numpy, and DINOv2's torch-hub position-embedding interpolation (bicubic, a=-0.75, scale
factor ``(n + 0.1) / M``, no antialias) as a numpy cubic convolution.

Models have random weights saved to a file (no weights exist offline): a patch-16 ViT at
384 and DINOv2 ViT-S/14 without registers at 724, on the real 451 x 300 ``chelsea`` photo,
so both are padded (384 x 255 -> 384 x 256; 724 x 481 -> 728 x 490).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from ilias.indexing import build_encoder
from ilias.indexing.encoders import hub_position_embedding, uses_hub_interpolation

pytestmark = pytest.mark.slow

ONE_BOX = [[140, 30, 150, 140]]  # the cat's head
TWO_BOXES = [[140, 30, 150, 140], [10, 200, 90, 95]]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    image = Image.fromarray(data.chelsea()).convert("RGB")
    assert image.size == (451, 300)
    return image


def _encoder(name: str, resolution: int, tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, dynamic_img_size=True).eval()
    path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return build_encoder(f"timm:{name}@{path}", resolution, device="cpu", precision="fp32"), model


@pytest.fixture(scope="module")
def vit16(tmp_path_factory):
    return _encoder("vit_tiny_patch16_224", 384, tmp_path_factory)


@pytest.fixture(scope="module")
def dinov2(tmp_path_factory):
    return _encoder("vit_small_patch14_dinov2.lvd142m", 724, tmp_path_factory)


# ------------------------------------------------------------------ the reference's order


def _large_side_resize(image: Image.Image, size: int) -> Image.Image:
    """The reference's LargeSideResize: the smaller side truncated, PIL's default filter."""
    width, height = image.size
    ratio = height / width
    new_h = max(1, int(size * ratio) if ratio <= 1 else size)
    new_w = max(1, int(size / ratio) if ratio > 1 else size)
    return image.resize((new_w, new_h))


def _reference_masked_input(
    image: Image.Image, boxes, size: int, mean, std, patch: int
) -> np.ndarray:
    """Resize, ToTensor, Normalize, mask at the original size resized nearest to the
    tensor, then zero padding to a multiple of the patch, centred (floor half first)."""
    pixels = np.asarray(_large_side_resize(image, size), dtype=np.float32) / np.float32(255)
    chw = pixels.transpose(2, 0, 1)
    mean32 = np.asarray(mean, dtype=np.float32)[:, None, None]
    std32 = np.asarray(std, dtype=np.float32)[:, None, None]
    normalised = (chw - mean32) / std32
    height, width = image.size[1], image.size[0]
    mask = np.zeros((height, width), dtype=np.float32)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = 1
    out_h, out_w = normalised.shape[1:]
    rows = np.floor(np.arange(out_h) * (height / out_h)).astype(int)  # PyTorch's "nearest"
    cols = np.floor(np.arange(out_w) * (width / out_w)).astype(int)
    masked = normalised * mask[rows][:, cols][None]
    pad_h = math.ceil(out_h / patch) * patch - out_h
    pad_w = math.ceil(out_w / patch) * patch - out_w
    return np.pad(
        masked, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    )


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights of the 4 neighbours at fractional offset t."""

    def near(x: float) -> float:
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _hub_resize(grid: np.ndarray, out: tuple[int, int], offset: float = 0.1) -> np.ndarray:
    """(M, M, C) -> (rows, cols, C): each output samples the native grid at
    ``(i + 0.5) * M / (n + offset) - 0.5``, neighbours clamped at the border."""
    native = grid.shape[0]
    result = grid.astype(np.float64)
    for axis, n in enumerate(out):
        step = native / (n + offset)
        lines = []
        for i in range(n):
            source = (i + 0.5) * step - 0.5
            base = math.floor(source)
            weights = _cubic_weights(source - base)
            picks = [min(max(base + d, 0), native - 1) for d in (-1, 0, 1, 2)]
            taken = np.take(result, picks, axis=axis)
            shape = [1] * result.ndim
            shape[axis] = 4
            lines.append((taken * np.asarray(weights).reshape(shape)).sum(axis=axis))
        result = np.stack(lines, axis=axis)
    return result


# ------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("boxes", [ONE_BOX, TWO_BOXES], ids=["one-box", "two-boxes"])
@pytest.mark.parametrize("which", ["vit16", "dinov2"])
def test_masked_vit_inputs_are_the_reference_s_bit_for_bit(which, boxes, photo, request):
    encoder, model = request.getfixturevalue(which)
    patch = encoder.patch_multiple
    cfg = model.pretrained_cfg
    expected = torch.from_numpy(
        _reference_masked_input(
            photo, boxes, encoder.resolution, cfg["mean"], cfg["std"], patch
        ).astype(np.float32)
    )
    got = encoder.preprocess_masked(photo, boxes)
    assert got.shape == expected.shape
    assert got.shape[1] % patch == 0 and got.shape[2] % patch == 0
    assert torch.equal(got, expected)
    # The earlier order (the mask stretched over the padded input) is not the reference's:
    # with padding the masks disagree along the box edges.
    whole = encoder.preprocess(photo)
    mask = torch.zeros(photo.height, photo.width)
    for x, y, w, h in boxes:
        mask[y : y + h, x : x + w] = 1
    stretched = F.interpolate(mask[None, None], size=tuple(whole.shape[-2:]), mode="nearest")
    assert not torch.equal(whole * stretched[0], expected)


def test_a_masked_dinov2_query_is_the_reference_s_descriptor(dinov2, photo):
    encoder, _ = dinov2
    got = encoder.encode_preprocessed([encoder.preprocess_masked(photo, TWO_BOXES)], 1)[0]
    cfg = encoder.model.pretrained_cfg
    reference_input = _reference_masked_input(
        photo, TWO_BOXES, 724, cfg["mean"], cfg["std"], 14
    ).astype(np.float32)
    expected = encoder.encode_tensors(torch.from_numpy(reference_input)[None])[0]
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------- DINOv2 without registers


def test_only_dinov2_without_registers_uses_the_hub_interpolation():
    assert uses_hub_interpolation("vit_small_patch14_dinov2.lvd142m")
    assert uses_hub_interpolation("vit_large_patch14_dinov2.lvd142m")
    assert not uses_hub_interpolation("vit_large_patch14_reg4_dinov2.lvd142m")
    assert not uses_hub_interpolation("vit_base_patch16_clip_224.openai")


def test_the_position_embedding_is_resized_as_the_hub_resizes_it(dinov2):
    _, model = dinov2
    pos_embed = model.pos_embed.detach()
    native = math.isqrt(pos_embed.shape[1] - 1)
    assert native == 37
    grid = pos_embed[0, 1:].numpy().reshape(native, native, -1)
    for out in [(35, 52), (52, 52), (20, 9)]:  # 724 x 481 padded, square 724, downsized
        expected = _hub_resize(grid, out).reshape(-1, grid.shape[-1])
        got = hub_position_embedding(pos_embed, out)
        assert got.shape == (1, 1 + out[0] * out[1], grid.shape[-1])
        # float32 (torch) against float64 (here): a few 1e-7; the offset moves values by 1e-2.
        np.testing.assert_allclose(got[0, 1:].numpy(), expected, rtol=0, atol=1e-6)
        without_offset = _hub_resize(grid, out, offset=0.0).reshape(-1, grid.shape[-1])
        assert np.abs(without_offset - expected).max() > 1e-3
        assert torch.equal(got[0, 0], pos_embed[0, 0])  # the class position is kept
        # timm's own rule (exact size, antialias) differs: what the hub's models do not do.
        timm_rule = (
            F.interpolate(
                torch.from_numpy(grid).permute(2, 0, 1)[None],
                size=out,
                mode="bicubic",
                antialias=True,
            )[0]
            .permute(1, 2, 0)
            .reshape(-1, grid.shape[-1])
        )
        assert np.abs(timm_rule.numpy() - expected).max() > 1e-4
    assert hub_position_embedding(pos_embed, (37, 37)) is pos_embed  # native: untouched


def test_dinov2_descriptors_use_the_hub_position_embedding(dinov2, photo):
    """The encoder's descriptor is a ViT forward written out here (timm's blocks, the
    hub's position embedding computed in numpy) and not timm's own forward."""
    encoder, model = dinov2
    batch = encoder.preprocess(photo)[None]
    assert tuple(batch.shape[-2:]) == (490, 728)
    got = encoder.encode_tensors(batch)[0]
    with torch.inference_mode():
        tokens = model.patch_embed(batch)  # (1, 35, 52, C)
        _, rows, cols, channels = tokens.shape
        grid = model.pos_embed[0, 1:].numpy().reshape(37, 37, channels)
        position = torch.from_numpy(_hub_resize(grid, (rows, cols)).astype(np.float32))
        x = torch.cat([model.cls_token, tokens.reshape(1, -1, channels)], dim=1)
        x = x + torch.cat([model.pos_embed[:, :1], position.reshape(1, -1, channels)], dim=1)
        for block in model.blocks:
            x = block(x)
        expected = F.normalize(model.norm(x)[:, 0], dim=-1)[0].numpy()
        pooled = model.forward_head(model.forward_features(batch), pre_logits=True)
        timm_own = F.normalize(pooled, dim=-1)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)
    assert np.abs(timm_own - expected).max() > 10 * np.abs(got - expected).max()
