"""Refusals a newcomer meets: said at once, saying what applies, without building a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from ilias.cli import app
from ilias.config import DEFAULT_ENCODER
from ilias.errors import EncoderSpecError, IliasError
from ilias.indexing import CollectionConfig, EdgeStore
from ilias.indexing.encoders import EncoderSpec, _cached_encoder

runner = CliRunner()


def image_only_store(folder: Path) -> str:
    """An Edge store with one collection of the offline (image-only) encoder."""
    with EdgeStore(folder) as store:
        meta = {"encoder": DEFAULT_ENCODER, "resolution": 224}
        store.create_collection("cnn", CollectionConfig(dim=1280, metadata=meta))
        vector = np.zeros((1, 1280), dtype=np.float32)
        vector[0, 0] = 1.0
        store.upsert("cnn", ["a"], vector, [{"role": "distractor"}])
    return f"edge:{folder}"


def test_a_text_query_to_an_image_only_encoder_is_refused_before_the_model(tmp_path):
    store = image_only_store(tmp_path / "store")
    _cached_encoder.cache_clear()
    done = runner.invoke(app, ["search", "--text", "a mug", "--store", store, "-c", "cnn"])
    assert done.exit_code == 1 and isinstance(done.exception, EncoderSpecError), done.output
    assert "has no text tower" in str(done.exception)
    assert _cached_encoder.cache_info().currsize == 0  # no model was built to say so


def test_the_spec_alone_says_which_encoders_embed_texts():
    assert not EncoderSpec.parse(DEFAULT_ENCODER).has_text_tower
    assert EncoderSpec.parse("open_clip:ViT-B-16-SigLIP/webli").has_text_tower
    assert EncoderSpec.parse("timm:vit_base_patch16_clip_224.openai").has_text_tower
    assert EncoderSpec.parse("timm:vit_base_patch16_clip_224.openai|adapt=l.pth").has_text_tower
    assert not EncoderSpec.parse("timm:resnet50").has_text_tower


def test_dropping_a_missing_collection_does_not_advise_loading_it(tmp_path):
    store = image_only_store(tmp_path / "store")
    done = runner.invoke(app, ["drop", "nope", "--yes", "--store", store])
    assert done.exit_code == 1 and isinstance(done.exception, IliasError), done.output
    message = str(done.exception)
    assert "no collection 'nope'" in message and "collections: cnn" in message
    assert "nothing to drop" in message and "ilias load" not in message
