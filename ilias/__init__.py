"""ilias: instance-level image retrieval on Qdrant.

The stages live in subpackages (``loader``, ``indexing``, ``query``, ``rerank``, ``eval``);
their ``__init__`` modules are the public faces. This module re-exports the handful of
names a Python user starts from.
"""

from importlib.metadata import PackageNotFoundError, version

from ilias.errors import IliasError

try:
    __version__ = version("ilias")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["IliasError", "__version__"]
