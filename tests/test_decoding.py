"""Every image mode becomes a faithful 8-bit RGB image (or a counted skip), and one pixel
limit is enforced from the header, before anything is decoded."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from PIL import Image

from ilias.errors import IliasError
from ilias.loader import DecodeFailure, decode_image
from ilias.loader.images import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV

pytestmark = pytest.mark.faults


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def decoded(data: bytes) -> np.ndarray:
    image = decode_image("x", data)
    assert not isinstance(image, DecodeFailure), image
    assert image.mode == "RGB"
    rgb = np.asarray(image)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def test_16_bit_greyscale_png_spans_0_to_255_instead_of_clipping_to_white():
    values = (np.arange(1024, dtype=np.uint16).reshape(4, 256) * 64).astype(np.uint16)
    grey = decoded(encoded(Image.fromarray(values), "PNG"))  # Pillow opens it as I;16
    assert grey.tolist() == np.rint(values / 257).astype(np.uint8).tolist()
    assert grey.min() == 0 and (grey < 128).sum() == 512  # half dark: not a white image


def test_float_tiff_in_unit_range_is_scaled_not_black():
    values = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    grey = decoded(encoded(Image.fromarray(values, "F"), "TIFF"))
    assert grey.tolist() == np.rint(values * 255).astype(np.uint8).tolist()


def test_float_tiff_beyond_255_is_stretched_and_nan_is_zero():
    values = np.linspace(-500, 1500, 64, dtype=np.float32).reshape(8, 8)
    values[0, 1] = np.nan
    grey = decoded(encoded(Image.fromarray(values, "F"), "TIFF"))
    clean = np.nan_to_num(values.astype(np.float64), nan=0.0)
    expected = np.rint((clean - clean.min()) / (clean.max() - clean.min()) * 255)
    assert grey.tolist() == expected.astype(np.uint8).tolist()


def test_32_bit_integers_holding_16_bit_data_are_scaled_like_16_bit():
    values = np.array([[0, 257, 30_000, 65_535]], dtype=np.int32)
    grey = decoded(encoded(Image.fromarray(values, "I"), "TIFF"))
    assert grey.tolist() == [[0, 1, 117, 255]]


def test_transparency_lands_on_white_for_every_alpha_mode():
    for mode in ("RGBA", "LA"):
        image = Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert(mode)
        rgb = np.asarray(decode_image("x", encoded(image, "PNG")))
        assert (rgb == 255).all(), mode
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert (np.asarray(decode_image("x", encoded(palette, "PNG"))) == 255).all()


def test_cmyk_becomes_rgb():
    image = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red ink
    rgb = np.asarray(decode_image("x", encoded(image, "JPEG")))
    assert rgb.shape == (4, 4, 3) and rgb[..., 0].min() > 200 and rgb[..., 1:].max() < 60


def test_the_pixel_limit_refuses_from_the_header_before_decoding():
    bomb = encoded(Image.new("1", (16_000, 16_000)), "PNG")  # 256 megapixels, tiny file
    assert len(bomb) < 100_000
    began = time.perf_counter()
    refused = decode_image("bomb.png", bomb)
    assert time.perf_counter() - began < 1.0  # nothing was inflated
    assert refused == DecodeFailure(
        "bomb.png",
        f"16000 x 16000 = 256,000,000 pixels, above the limit of {DEFAULT_MAX_PIXELS:,}; "
        f"raise {MAX_PIXELS_ENV} to load it",
    )


def test_the_pixel_limit_is_configurable_and_checked(monkeypatch):
    picture = encoded(Image.new("RGB", (300, 200), (10, 20, 30)), "PNG")
    monkeypatch.setenv(MAX_PIXELS_ENV, "50000")
    assert decode_image("a", picture) == DecodeFailure(
        "a", f"300 x 200 = 60,000 pixels, above the limit of 50,000; raise {MAX_PIXELS_ENV} "
        "to load it"
    )  # fmt: skip
    monkeypatch.setenv(MAX_PIXELS_ENV, "60000")
    assert decode_image("a", picture).size == (300, 200)
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(IliasError, match="ILIAS_MAX_PIXELS='lots'"):
        decode_image("a", picture)


VALID = {
    fmt: encoded(Image.new("RGB", (24, 16), (90, 140, 30)), fmt)
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(VALID)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8),
    st.integers(0, 10_000),
)
def test_fuzzed_image_bytes_decode_or_are_a_counted_failure(fmt, flips, cut):
    """Valid files of six formats with bytes flipped and tails cut: decoding returns an RGB
    image or a DecodeFailure with a reason, and never raises."""
    data = bytearray(VALID[fmt])
    for position, value in flips:
        if data:
            data[position % len(data)] = value
    data = data[: max(0, len(data) - cut % (len(data) + 1))]
    result = decode_image("fuzz", bytes(data))
    if isinstance(result, DecodeFailure):
        assert result.id == "fuzz" and result.reason and "\n" not in result.reason
    else:
        assert result.mode == "RGB" and result.width * result.height > 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_raise(data):
    result = decode_image("bytes", data)
    assert isinstance(result, DecodeFailure) or result.mode == "RGB"
