"""The ILIAS reference's model list, offline: descriptor width, test resolution, text tower.

The table is the reference's run script (``feature_extraction/scripts/models.sh``: framework,
model, test resolution, whether text queries are extracted) plus the image towers of its
timm -> open_clip text map (``feature_extraction/src/utils.py``). Every architecture that
timm or open_clip can build is built here with random weights (no download): timm models on
the ``meta`` device, which gives shapes without memory or time. The numbers are those the
reference's code gives for the same timm / open_clip model built the way it builds it
(``num_classes=None`` for CLIP / PE, else 0), so a wrong head, resolution or map fails.

Where the reference's preprocessing can be computed offline (its documented transform:
larger side resized with PIL's default filter and truncating sizes, torchvision
``ToTensor`` + ``Normalize`` with the model's mean/std, then zero padding of ViTs to the
patch multiple), the input tensor must be bit-identical on real photos.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ilias.errors import EncoderSpecError
from ilias.indexing.encoders import (
    TIMM_TEXT_TOWERS,
    EncoderSpec,
    OpenClipEncoder,
    TimmEncoder,
    build_encoder,
)

# (timm model, reference test resolution, descriptor dimension, reference extracts text)
TIMM_ROWS: list[tuple[str, int, int, bool]] = [
    ("vgg16.tv_in1k", 384, 4096, False),
    ("resnet50.tv_in1k", 384, 2048, False),
    ("resnet101.tv_in1k", 384, 2048, False),
    ("densenet169.tv_in1k", 384, 1664, False),
    ("inception_v4.tf_in1k", 512, 1536, False),
    ("nasnetalarge.tf_in1k", 512, 4032, False),
    ("tf_efficientnet_b4.ns_jft_in1k", 512, 1792, False),
    ("vit_base_patch16_224.augreg_in1k", 384, 768, False),
    ("vit_base_patch16_224.augreg_in21k", 384, 768, False),
    ("vit_large_patch16_224.augreg_in21k", 384, 1024, False),
    ("vit_large_patch16_224.augreg_in21k_ft_in1k", 384, 1024, False),
    ("vit_large_patch16_384.augreg_in21k_ft_in1k", 512, 1024, False),
    ("deit3_base_patch16_224.fb_in1k", 384, 768, False),
    ("deit3_large_patch16_224.fb_in1k", 384, 1024, False),
    ("vit_base_patch16_clip_224.openai", 384, 512, True),
    ("vit_large_patch14_clip_224.openai", 384, 768, True),
    ("vit_large_patch14_clip_336.openai", 512, 768, True),
    ("vit_large_patch14_clip_224.laion2b", 384, 768, True),
    ("convnext_base.fb_in1k", 384, 1024, False),
    ("convnext_large.fb_in1k", 384, 1536, False),
    ("convnext_base.fb_in22k", 384, 1024, False),
    ("convnext_large.fb_in22k", 384, 1536, False),
    ("convnext_base.clip_laion2b_augreg", 384, 640, True),
    ("convnext_large_mlp.clip_laion2b_ft_soup_320", 512, 768, True),
    ("eva02_base_patch14_224.mim_in22k", 384, 768, False),
    ("eva02_large_patch14_224.mim_in22k", 384, 1024, False),
    ("eva02_large_patch14_224.mim_m38m", 384, 1024, False),
    ("eva02_base_patch16_clip_224.merged2b", 384, 512, True),
    ("eva02_large_patch14_clip_336.merged2b", 512, 768, True),
    ("vit_base_patch16_siglip_224.webli", 384, 768, True),
    ("vit_base_patch16_siglip_256.webli", 384, 768, True),
    ("vit_base_patch16_siglip_384.webli", 512, 768, True),
    ("vit_base_patch16_siglip_512.webli", 724, 768, True),
    ("vit_large_patch16_siglip_256.webli", 384, 1024, True),
    ("vit_large_patch16_siglip_384.webli", 512, 1024, True),
    ("vit_base_patch16_clip_224.metaclip_2pt5b", 384, 512, True),
    ("vit_large_patch14_clip_224.metaclip_2pt5b", 384, 768, True),
    ("vit_base_patch16_siglip_384.v2_webli", 512, 768, True),
    ("vit_base_patch16_siglip_512.v2_webli", 724, 768, True),
    ("vit_large_patch16_siglip_384.v2_webli", 512, 1024, True),
    ("vit_large_patch16_siglip_512.v2_webli", 724, 1024, True),
    ("vit_pe_core_base_patch16_224.fb", 384, 1024, True),
    ("vit_pe_core_large_patch14_336.fb", 512, 1024, True),
    # The reference runs DINOv2 / DINOv3 from torch.hub ("fb"): timm's ports of the same
    # weights, pooled by the normalised CLS token as the hub models are.
    ("vit_base_patch14_dinov2.lvd142m", 724, 768, False),
    ("vit_large_patch14_dinov2.lvd142m", 724, 1024, False),
    ("vit_base_patch14_reg4_dinov2.lvd142m", 724, 768, False),
    ("vit_large_patch14_reg4_dinov2.lvd142m", 724, 1024, False),
    ("vit_base_patch16_dinov3.lvd1689m", 768, 768, False),
    ("vit_large_patch16_dinov3.lvd1689m", 768, 1024, False),
    # In the reference's text map but not its run script: the resolution rule applies.
    ("vit_so400m_patch14_siglip_384.webli", 512, 1152, True),
    ("vit_giantopt_patch16_siglip_384.v2_webli", 512, 1536, True),
    ("vit_so400m_patch16_siglip_512.v2_webli", 724, 1152, True),
]

# Reference models no timm / open_clip name builds here, and why.
NOT_BUILDABLE = {
    "alexnet": "torchvision (tv), not a timm / open_clip model",
    "recall_512-resnet50": "Recall@k Surrogate checkpoint, not published in timm",
    "recall_512-vit_base_patch16_224_in21k": "Recall@k Surrogate checkpoint",
    "uscrr_64-vit_base_patch16_clip_224.openai": "USCRR checkpoint",
    "udon_64-vit_base_patch16_224.augreg_in21k_ft_in1k": "UDON checkpoint",
    "udon_64-vit_base_patch16_clip_224.openai": "UDON checkpoint",
    "dino_resnet50": "torch.hub facebookresearch/dino",
    "dino_vitb16": "torch.hub facebookresearch/dino",
    "swav": "torch.hub facebookresearch/swav",
    "mocov3_resnet50": "MoCo v3 checkpoint URL",
    "mocov3_vitb16": "MoCo v3 checkpoint URL",
    "cvnet_resnet50": "CVNet code and checkpoint",
    "cvnet_resnet101": "CVNet code and checkpoint",
    "superglobal_resnet50": "SuperGlobal code and checkpoint",
    "superglobal_resnet101": "SuperGlobal code and checkpoint",
    "dino_vit16_patch16_224_sop": "Hier checkpoint",
    "unicom_vit_base_patch16_224": "UNICOM package",
    "unicom_vit_large_patch14_224": "UNICOM package",
    "unicom_vit_large_patch14_336": "UNICOM package",
    "unicom_vit_base_patch16_gldv2": "UNICOM package",
    "unicom_vit_base_patch16_sop": "UNICOM package",
    "unic_l": "UNIC checkpoint",
}
# models.sh lists 72 runs: 43 timm rows above, 6 hub DINOv2/v3 runs (built here through
# timm), RN50 through open_clip, and the 22 above.
N_REFERENCE_RUNS = 72


@pytest.fixture
def random_timm(monkeypatch):
    """timm.create_model without downloads: random weights on the meta device."""
    import timm

    create = timm.create_model

    def offline(name: str, pretrained: bool = False, **kwargs: Any) -> Any:
        with torch.device("meta"):
            return create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)


@pytest.fixture
def random_open_clip(monkeypatch):
    """open_clip's model factory without downloads: random weights."""
    import open_clip

    create = open_clip.create_model_and_transforms

    def offline(name: str, pretrained: str | None = None, **kwargs: Any) -> Any:
        return create(name, pretrained=None, **kwargs)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)


def test_the_table_covers_the_reference_run_script():
    in_script = [row for row in TIMM_ROWS if row[0] not in MAP_ONLY]
    assert len(in_script) + 1 + len(NOT_BUILDABLE) == N_REFERENCE_RUNS  # + 1: open_clip RN50
    assert {name for name, *_ in TIMM_ROWS if name in TIMM_TEXT_TOWERS} | {"RN50.openai"} == set(
        TIMM_TEXT_TOWERS
    )


MAP_ONLY = {
    "vit_so400m_patch14_siglip_384.webli",
    "vit_giantopt_patch16_siglip_384.v2_webli",
    "vit_so400m_patch16_siglip_512.v2_webli",
}


@pytest.mark.parametrize(("name", "resolution", "dim", "text"), TIMM_ROWS)
def test_timm_model_matches_the_reference(random_timm, name, resolution, dim, text):
    encoder = build_encoder(f"timm:{name}")
    assert isinstance(encoder, TimmEncoder)
    assert (encoder.dim, encoder.resolution, encoder.has_text_tower) == (dim, resolution, text)
    multiple = encoder.patch_multiple
    width = multiple * math.ceil(resolution / multiple)  # a 4:3 photo, padded as preprocess does
    height = multiple * math.ceil(resolution * 3 / 4 / multiple)
    with torch.inference_mode():
        out = encoder._forward_images(torch.zeros(2, 3, height, width, device="meta"))
    assert tuple(out.shape) == (2, dim)  # what the network gives at the test resolution
    if "dino" in name:
        assert encoder.model.global_pool == "token"


@pytest.mark.parametrize(("name", "resolution", "dim", "text"), [r for r in TIMM_ROWS if r[3]])
def test_text_tower_is_the_references_and_lands_in_the_image_space(name, resolution, dim, text):
    import open_clip

    tower, pretrained = TIMM_TEXT_TOWERS[name]
    arch = tower.removeprefix("hf-hub:timm/")
    assert open_clip.get_model_config(arch)["embed_dim"] == dim
    if pretrained is not None:
        assert pretrained in open_clip.list_pretrained_tags_by_model(arch)


def test_open_clip_rn50_follows_the_resolution_rule(random_open_clip):
    encoder = build_encoder("open_clip:RN50/openai")
    assert isinstance(encoder, OpenClipEncoder)
    assert (encoder.dim, encoder.resolution, encoder.has_text_tower) == (1024, 384, True)
    photo = Image.fromarray(_photos()[0]).resize((500, 371))
    batch = encoder.preprocess(photo)[None]
    assert tuple(batch.shape) == (1, 3, 284, 384)  # not padded to 224x224
    assert encoder.encode_tensors(batch).shape == (1, 1024)
    # on the native 7x7 grid the resized position embedding is open_clip's own
    pool = encoder.model.visual.attnpool
    grid = torch.randn(2, 2048, 7, 7)
    with torch.inference_mode():
        assert torch.equal(pool(grid), pool.pool(grid))
        assert pool(torch.randn(1, 2048, 9, 12)).shape == (1, 1024)


def _photos() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea()]


def reference_input(image: Image.Image, name: str, resolution: int, mean, std) -> torch.Tensor:
    """The reference's RESIZE_LARGE transform and ViT padding, re-stated as it documents them."""
    from torchvision import transforms

    width, height = image.size
    ratio = float(height) / float(width)
    new_height = max(1, int(resolution * ratio) if ratio <= 1 else resolution)
    new_width = max(1, int(resolution / ratio) if ratio > 1 else resolution)
    resized = image.resize((new_width, new_height))
    tensor = transforms.Normalize(mean=mean, std=std)(transforms.ToTensor()(resized))
    if any(vit in name for vit in ("vit", "eva", "deit")):
        multiple = 16 if "patch16" in name else 14
        pads = []
        for size in tensor.shape[:0:-1]:  # width, then height
            extra = math.ceil(size / multiple) * multiple - size
            pads += [extra // 2, extra - extra // 2]
        tensor = torch.nn.functional.pad(tensor, pads)
    return tensor


@pytest.mark.parametrize(
    "name",
    [
        "vit_base_patch16_clip_224.openai",
        "vit_large_patch14_clip_336.openai",
        "vit_base_patch16_siglip_512.v2_webli",
        "convnext_base.clip_laion2b_augreg",
        "vit_base_patch16_dinov3.lvd1689m",
        "vgg16.tv_in1k",
    ],
)
def test_timm_input_is_bit_identical_to_the_references(random_timm, name):
    encoder = build_encoder(f"timm:{name}")
    assert isinstance(encoder, TimmEncoder)
    cfg = encoder.model.pretrained_cfg
    for array in _photos():
        for image in (Image.fromarray(array), Image.fromarray(array).rotate(90, expand=True)):
            expected = reference_input(image, name, encoder.resolution, cfg["mean"], cfg["std"])
            assert torch.equal(encoder.preprocess(image), expected), image.size


def test_open_clip_rn50_input_is_bit_identical_to_the_references(random_open_clip):
    encoder = build_encoder("open_clip:RN50/openai")
    openai_mean = (0.48145466, 0.4578275, 0.40821073)  # the reference's constants for RN50
    openai_std = (0.26862954, 0.26130258, 0.27577711)
    for array in _photos():
        image = Image.fromarray(array)
        expected = reference_input(image, "RN50.openai", 384, openai_mean, openai_std)
        assert torch.equal(encoder.preprocess(image), expected)


def test_projection_false_gives_the_trunk_features(random_timm):
    # ilias's earlier descriptors, kept as an option: the 768-d trunk of ViT-B/16 CLIP
    assert build_encoder("timm:vit_base_patch16_clip_224.openai", projection=False).dim == 768
    assert build_encoder("timm:convnext_base.clip_laion2b_augreg", projection=False).dim == 1024


def test_the_head_is_chosen_in_the_spec_so_the_cli_and_collections_carry_it(random_timm):
    """``|head=trunk`` is ``projection=False`` from the CLI, recorded in the spec string."""
    trunk = build_encoder("timm:vit_base_patch16_clip_224.openai|head=trunk")
    assert trunk.dim == 768 and trunk.spec == "timm:vit_base_patch16_clip_224.openai|head=trunk"
    assert build_encoder("timm:vit_base_patch16_clip_224.openai").dim == 512  # the reference
    assert build_encoder("timm:resnet18.a1_in1k|head=keep").dim == 1000  # the classifier
    # the head survives an adaptation mark on either side of it
    for spec in ("timm:m|head=trunk|adapt=l.pth", "timm:m|adapt=l.pth|head=trunk"):
        parsed = EncoderSpec.parse(spec)
        assert (parsed.head, parsed.adaptation) == ("trunk", "l.pth")
        assert str(parsed) == "timm:m|head=trunk|adapt=l.pth"
        assert parsed.without_adaptation().head == "trunk"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("timm:m|head=projection", "'|head=' is trunk"),
        ("timm:m|head=", "'|head=' is trunk"),
        ("open_clip:RN50/openai|head=trunk", "applies to timm models"),
    ],
)
def test_a_bad_head_is_one_line(spec, message):
    with pytest.raises(EncoderSpecError, match=message):
        EncoderSpec.parse(spec)
