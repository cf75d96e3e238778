"""demo: the offline benchmark behind ``ilias demo``, generated from real photos, and its run.

``generate`` builds an ILIAS-layout benchmark (not ILIAS) from images that install offline;
``run`` loads it, queries it and scores it through the library's evaluation runner. A
package beside the pipeline stages, because it uses all of them and none of them uses it.
"""

# The names are listed once, in __init__.pyi; they load on first use, so importing
# this package does not import torch, dask or Qdrant.
import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
