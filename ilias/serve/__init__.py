"""serve: the HTTP query service and its web page, an interface over the library like cli.py.

One process serves one store: ``create_app(ServeSettings(...))`` builds the FastAPI app,
``ilias serve`` runs it under uvicorn. The modules are split by concern:

- ``settings``: what the service is configured with (the CLI's settings plus its own limits,
  and the memory budget they add up to);
- ``state``: the open store, one cached ``Retriever`` per collection, the decode slots;
- ``limits``: request bodies counted while they stream, the decode slots and their queue;
- ``uploads``: pictures decoded for a request within the service's pixel cap;
- ``security``: the optional API key (header, or the page's session cookie) and CORS;
- ``errors``: every failure as a one-line ``{"detail": ...}`` (no stack traces, no dropped
  connection), documented as ``ErrorModel``;
- ``schemas``: the request and response models (the OpenAPI document is built from them);
- ``api_search``, ``api_collections``, ``api_images``, ``api_runs``: one router each;
- ``static/``: the page (plain HTML, CSS and JavaScript; no build step, no CDN).

Nothing else in ilias imports this package; ``cli.py`` imports it inside ``ilias serve``.
"""

from ilias.serve.app import create_app
from ilias.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
