"""query: search (i2i, t2i, hybrid), the --where filter language, the evaluation runner and
what is printed or written from their results."""

# The names are listed once, in __init__.pyi; they load on first use, so importing
# this package (or a light module inside it) does not import torch, dask or Qdrant.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
