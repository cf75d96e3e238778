"""ilias: instance-level image retrieval on Qdrant.

The stages live in subpackages; their ``__init__`` modules are the public faces, and the
heavy ones (``indexing``, ``query``, ``rerank``) are lazy: a name loads its module on first
use, so importing a face, or a light module inside it, imports neither torch, dask nor a
Qdrant engine (``ilias --help`` stays fast).

Dependencies point one way (checked by tests/test_architecture.py, which also finds
import cycles; there are none)::

    cli, demo  ->  query  ->  indexing  ->  loader  ->  types, config, errors
                     |            |
                     v            v
                   rerank        store (indexing.store: Store over the Edge / server engines)
                     |
                     v
                   eval (numpy only)          types, config, errors: leaves

- ``types`` (Hit, SearchParams, Range, Filter, LocalConfig, LocalFeatures) and ``config``
  (settings) are leaves: numpy and the standard library only.
- ``eval`` depends on nothing but numpy and the value types: metrics are checked by hand.
- ``rerank`` sees a collection through ``rerank.pipeline.CollectionView`` (a search, stored
  vectors, stored local descriptors, an engine re-scoring), never the retriever or an
  engine; ``indexing.store.Collection`` is the view a retriever passes in.
- ``query`` encodes queries with the collection's own encoder (``indexing``), runs the
  re-rankers and scores benchmark runs with ``eval``.
- Nothing imports ``cli`` (or the service): they parse, call the library and print.
"""

from typing import Any

from ilias.errors import IliasError

__all__ = ["IliasError", "__version__"]


def __getattr__(name: str) -> Any:
    """``ilias.__version__``, read from the installed metadata on first use: importlib.metadata
    costs ~50 ms, a sixth of the time ``ilias --help`` may take, and only a few commands print
    or record the version."""
    if name != "__version__":
        raise AttributeError(f"module 'ilias' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("ilias")
    except PackageNotFoundError:  # running from a source tree that was never installed
        found = "0.0.0+unknown"
    globals()["__version__"] = found
    return found
