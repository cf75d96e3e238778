"""The ILIAS resolution rule: test one step above the training resolution, larger side only.

ILIAS evaluates every model at a resolution one step above the one it was trained at, on
the ladder 384 / 512 / 724, resizing so that the larger side equals that resolution and
keeping the aspect ratio (no crop). Instance retrieval needs the detail: the object is often
small in a cluttered database image. Two families are set by name, as the reference's run
scripts set them: DINOv2 at 724 and DINOv3 at 768 (``feature_extraction/scripts/models.sh``).
"""

from __future__ import annotations

from PIL import Image

LADDER = (384, 512, 724)


def resolution_for(train_resolution: int, model_name: str = "") -> int:
    """One step above the training resolution (224/256 -> 384, 320-384 -> 512, 512 -> 724).

    DINOv2 and DINOv3 are trained at 224/256 but the reference evaluates them at 724 and 768:
    their ILIAS numbers are only comparable at those resolutions.
    """
    name = model_name.lower()
    if "dinov3" in name:
        return 768
    if "dinov2" in name:
        return 724
    if train_resolution <= 256:
        return 384
    if train_resolution <= 384:
        return 512
    return 724


def resize_larger_side(image: Image.Image, size: int) -> Image.Image:
    """Resize so the larger side is ``size``, as the reference's LargeSideResize does.

    Kept bit-compatible with the reference (truncating ``int`` and PIL's default filter) so
    descriptors match those of the ILIAS feature-extraction code.
    """
    width, height = image.size
    aspect = height / width
    new_height = max(1, int(size * aspect) if aspect <= 1 else size)
    new_width = max(1, int(size / aspect) if aspect > 1 else size)
    return image.resize((new_width, new_height))
