"""Bounds on what one request may cost: its body, its share of the decode slots, and what
its decode leaves behind in the heap.

The body limit is plain ASGI rather than ``BaseHTTPMiddleware``: a body is counted as it
streams in (a chunked body has no Content-Length to trust), and the 413 is sent by the
middleware itself, whatever the route was doing with the body when it ran over. The decode
slots are a threading semaphore with a bounded queue (route handlers run in threads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ilias.serve.errors import ServiceError, send_detail
from ilias.serve.settings import (
    DECODES_ENV,
    MAX_JSON_ENV,
    MAX_UPLOAD_ENV,
    QUEUE_ENV,
    QUEUE_WAIT_S,
)

# The routes whose body is an image upload (a query, an image to add): the upload limit.
UPLOAD_ROUTE = re.compile(r"^/api/collections/[^/]+/(search/image|images)$")
# Room for the multipart framing and the query field around the image itself.
FORM_OVERHEAD = 64 * 1024


# glibc's mallopt parameter (malloc.h): how many heap arenas threads may spread over
_M_ARENA_MAX = -8
ARENAS = 4
# A decode of at least this share of the pixel cap is followed by a trim (below it, what a
# decode leaves in an arena is small, and trimming after every query costs page faults on
# the next one: 40% of upload throughput when measured with a trim after each).
TRIM_FROM_SHARE = 4  # a quarter of the cap: 2 MiP at the default 8 MiP


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()
_DECODED = threading.local()


def bound_allocator() -> None:
    """Keep what decodes free from piling up in the process (glibc; elsewhere nothing).

    glibc gives each thread that allocates concurrently its own heap arena (up to 8 per
    core), and memory freed in an arena mostly stays there: 16 concurrent uploads in 16
    threads kept gigabytes after they were answered. Capping the arenas at ``ARENAS`` and
    trimming them after each large decode (``release_memory``) keeps the resident set
    near what the decodes in flight need rather than what every thread ever held.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_ARENA_MAX, ARENAS)


def note_decode(pixels: int) -> None:
    """Record the size of the picture this thread decoded (read when its slot ends)."""
    _DECODED.pixels = max(pixels, getattr(_DECODED, "pixels", 0))


def release_memory(trim_from: int) -> None:
    """After a decode of ``trim_from`` pixels or more in this thread: give the arenas' free
    pages back (glibc ``malloc_trim``)."""
    pixels, _DECODED.pixels = getattr(_DECODED, "pixels", 0), 0
    if _LIBC is not None and pixels >= trim_from:
        _LIBC.malloc_trim(0)


class Busy(ServiceError):
    """Every decode slot is taken and the queue is full (or the wait ran out): retry."""

    status_code = 503
    headers = {"Retry-After": "1"}  # noqa: RUF012 - read-only, the handler copies it


class _BodyTooLarge(Exception):
    """Raised into the route from ``receive`` once the 413 has been sent."""


def too_large(limit: int, env: str) -> str:
    return f"request body larger than the limit of {limit:,} bytes; send less ({env} sets it)"


class BodyLimitMiddleware:
    """413 for a body over its route's limit: uploads ``max_upload_bytes`` (plus the form's
    framing), everything else ``max_json_bytes``. A declared Content-Length over the limit is
    refused before any byte is read; a body that runs over while streaming (chunked, or a
    Content-Length that lies) is refused the moment it does, and the rest is never read."""

    def __init__(self, app: ASGIApp, upload_limit: int, json_limit: int):
        self.app = app
        self.upload_limit = upload_limit + FORM_OVERHEAD
        self.upload_detail = too_large(upload_limit, MAX_UPLOAD_ENV)
        self.json_limit = json_limit
        self.json_detail = too_large(json_limit, MAX_JSON_ENV)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = UPLOAD_ROUTE.match(scope["path"]) is not None
        limit = self.upload_limit if upload else self.json_limit
        detail = self.upload_detail if upload else self.json_detail
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _send_413(send, detail)
            return
        state = {"read": 0, "started": False, "refused": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    if not state["started"]:
                        state["refused"] = True
                        await _send_413(send, detail)
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 is the answer; what the route says afterwards is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not state["refused"]:
                raise
        except Exception:
            if not state["refused"]:  # a route's parse error after our 413: already answered
                raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(send: Send, detail: str) -> None:
    # the rest of the body is never read: the connection cannot carry another request
    await send_detail(send, 413, detail, ((b"connection", b"close"),))


class DecodeGate:
    """At most ``slots`` decodes at once, at most ``queue`` more requests waiting for one.

    Route handlers run in threads, so this is a threading semaphore; a request beyond the
    queue, or one that waited ``QUEUE_WAIT_S`` in it, is a 503 with Retry-After, never a
    decode that would take the process over its memory budget. A slot that decoded a
    quarter of the pixel cap or more trims the heap when it ends (``release_memory``).
    """

    def __init__(self, slots: int, queue: int, max_pixels: int, wait_s: float = QUEUE_WAIT_S):
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self.trim_from = max(1, max_pixels // TRIM_FROM_SHARE)
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._admitted = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self._admitted >= self.slots + self.queue:
                raise Busy(
                    f"busy: {self.slots} images decoding and {self.queue} waiting; retry in a "
                    f"moment ({DECODES_ENV} and {QUEUE_ENV} set these)"
                )
            self._admitted += 1
        try:
            if not self._semaphore.acquire(timeout=self.wait_s):
                raise Busy(f"busy: no decode slot within {self.wait_s:g} s; retry in a moment")
            try:
                yield
            finally:
                release_memory(self.trim_from)
                self._semaphore.release()
        finally:
            with self._lock:
                self._admitted -= 1
