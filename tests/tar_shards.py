"""WebDataset tar shards written byte for byte from (member name, content) pairs, shared by
the shard tests."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """``path`` as a tar holding ``members`` in the order given (WebDataset's grouping)."""
    with tarfile.open(path, "w") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return path
