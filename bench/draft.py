"""Reduced-size JPEG decoding (Pillow's draft mode): descriptor agreement and decode speed.

For each real photo saved as a large JPEG, the descriptor of the full decode and that of the
draft decode (``decode_image(..., draft_to=resolution)``) are compared by cosine, at each
resolution asked; then one 4000 px JPEG is decoded and resized to the resolution both ways.

Photos: the Debian wallpapers under /usr/share/backgrounds and /usr/share/wallpapers as they
ship (real JPEGs, 1280-5640 px), and scikit-image's photos upscaled to 3000 px (their
originals are 300-640 px).

Run:  python bench/draft.py [--resolution 384 --resolution 224] [--encoder SPEC]
"""

from __future__ import annotations

import argparse
import glob
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from ilias.indexing import DEFAULT_ENCODER, build_encoder
from ilias.indexing.resolution import resize_larger_side
from ilias.loader.images import decode_image, draft_scale

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field")


def photos(upscale_to: int) -> dict[str, bytes]:
    """Large real JPEGs by name (bytes, as a loader hands them over)."""
    found: dict[str, bytes] = {}
    for pattern in ("/usr/share/backgrounds/**/*.jpg", "/usr/share/wallpapers/**/*.jpg"):
        for path in sorted(glob.glob(pattern, recursive=True)):
            found[Path(path).name] = Path(path).read_bytes()
    for name in SKIMAGE_PHOTOS:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        factor = upscale_to / max(image.size)
        size = (round(image.width * factor), round(image.height * factor))
        buffer = io.BytesIO()
        image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
        found[f"skimage.{name} (x{factor:.1f})"] = buffer.getvalue()
    return found


def agreement(encoder_spec: str, resolution: int, images: dict[str, bytes]) -> list[tuple]:
    """Per image: name, size, draft scale, cosine(full, draft), and for scale, the cosine
    between fp32 and bf16 autocast descriptors of the full decode."""
    exact = build_encoder(encoder_spec, resolution, device="cpu", precision="fp32")
    reduced = build_encoder(encoder_spec, resolution, device="cpu", precision="bf16")
    rows = []
    for name, raw in images.items():
        full = decode_image(name, raw)
        draft = decode_image(name, raw, draft_to=exact.resolution)
        if not isinstance(full, Image.Image) or not isinstance(draft, Image.Image):
            raise SystemExit(f"{name} does not decode")
        vectors = exact.encode_images([full, draft])
        bf16 = reduced.encode_images([full])[0]
        rows.append(
            (
                name,
                full.size,
                draft_scale(full.size, exact.resolution),
                float(np.dot(vectors[0], vectors[1])),
                float(np.dot(vectors[0], bf16)),
            )
        )
    return rows


def decode_speed(raw: bytes, resolution: int, repeats: int) -> tuple[float, float]:
    """Median seconds to decode and resize to ``resolution``: full decode, draft decode."""
    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for draft in (False, True):
            began = time.perf_counter()
            image = decode_image("x", raw, draft_to=resolution if draft else None)
            resize_larger_side(image, resolution)  # type: ignore[arg-type]
            timings[draft].append(time.perf_counter() - began)
    return statistics.median(timings[False]), statistics.median(timings[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--resolution", type=int, action="append")
    parser.add_argument("--upscale-to", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    resolutions = args.resolution or [384]

    images = photos(args.upscale_to)
    summary = []
    for resolution in resolutions:
        rows = agreement(args.encoder, resolution, images)
        print(f"\n{args.encoder} at {resolution}px: cosine to the fp32 full decode's descriptor")
        print(f"{'image':42s} {'size':>11s} {'scale':>5s} {'draft':>9s} {'bf16':>9s}")
        for name, size, scale, cosine, bf16 in rows:
            print(f"{name:42s} {size[0]:5d}x{size[1]:<5d} 1/{scale:<3d} {cosine:9.6f} {bf16:9.6f}")
        drafted = [row[3] for row in rows if row[2] > 1]
        bf16s = [row[4] for row in rows]
        if drafted:
            print(
                f"{len(drafted)} of {len(rows)} drafted: min {min(drafted):.6f}, mean "
                f"{statistics.fmean(drafted):.6f} (bf16, all: min {min(bf16s):.6f}, mean "
                f"{statistics.fmean(bf16s):.6f})"
            )
            summary.append(f"{resolution}px min cosine {min(drafted):.5f}")

    big = Image.fromarray(data.astronaut()).resize((4000, 4000), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    print(f"\n4000x4000 JPEG ({len(buffer.getvalue()) / 1e6:.1f} MB), decode + resize:")
    for resolution in resolutions:
        full, draft = decode_speed(buffer.getvalue(), resolution, args.repeats)
        scale = draft_scale((4000, 4000), resolution)
        print(
            f"  to {resolution}px: full {1000 * full:.1f} ms, draft (1/{scale}) "
            f"{1000 * draft:.1f} ms: {full / draft:.1f}x"
        )
        summary.append(f"{resolution}px decode {full / draft:.1f}x")
    print(f"\nsummary: {', '.join(summary)}")


if __name__ == "__main__":
    main()
