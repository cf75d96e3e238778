"""Is a weights file a checkpoint at all? Answered from its first bytes, before a model loads.

timm, open_clip and ``torch.load`` fail on a file that is not a checkpoint (a text file, an
HTML error page saved as ``.pth``, a cut download) deep inside their loaders, with errors
that do not name the file (``KeyError: 101`` from the unpickler, ``header too small`` from
safetensors). A look at the format's own framing names it in one line instead:

- safetensors: an 8-byte little-endian header length, then that many bytes of JSON.
- ``torch.save``: a zip archive (since torch 1.6) or, older, a pickle (protocol byte
  ``0x80``); a legacy tar archive is accepted too.
- numpy ``.npz`` (open_clip's big_vision weights): a zip archive.

A file that passes can still hold the wrong tensors; the loaders say so themselves.
This module is a leaf (the standard library only).
"""

from __future__ import annotations

import json
import struct
import tarfile
from pathlib import Path

from ilias.errors import EncoderSpecError

_ZIP = b"PK\x03\x04"
_PICKLE = 0x80
# A safetensors header lists every tensor's name, dtype, shape and offsets: kilobytes to a
# few megabytes; safetensors itself refuses headers over 100 MB.
_MAX_SAFETENSORS_HEADER = 100_000_000


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a weights file its suffix says it is, or None if it may be one."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
            size = path.stat().st_size
            if path.suffix == ".safetensors":
                if len(head) < 8:
                    return f"it is {size} bytes, too short for a safetensors header"
                (length,) = struct.unpack("<Q", head)
                if not 2 <= length <= min(size - 8, _MAX_SAFETENSORS_HEADER):
                    return "its first 8 bytes are not a safetensors header length"
                try:
                    header = json.loads(handle.read(length))
                except (UnicodeDecodeError, ValueError):
                    return "its header is not the JSON a safetensors file starts with"
                return None if isinstance(header, dict) else "its header is not a JSON object"
    except OSError as error:
        return f"it cannot be read ({error.strerror or error})"
    if head.startswith(_ZIP) or (head and head[0] == _PICKLE):
        return None
    if tarfile.is_tarfile(path):  # torch.save's legacy format
        return None
    return "it is neither a zip archive (torch.save, .npz) nor a pickle"


def check_checkpoint(path: Path | str, what: str) -> None:
    """One line naming ``path`` if it cannot be a checkpoint (``what``: whose weights)."""
    problem = checkpoint_problem(Path(path))
    if problem is not None:
        raise EncoderSpecError(
            f"{path} is not a weights file for {what}: {problem}; pass a .safetensors or "
            "torch .pth/.pt checkpoint"
        )
