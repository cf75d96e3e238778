"""query: image-to-image search for applications, the CLI and benchmark runs."""

# The names are listed once, in __init__.pyi; they load on first use, so importing
# this package (or a light module inside it) does not import torch, dask or Qdrant.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
