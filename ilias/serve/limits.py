"""Bounds on what one request may cost: its body, and its share of the decode slots.

Both are plain ASGI / threading code rather than ``BaseHTTPMiddleware``: a body is counted
as it streams in (a chunked body has no Content-Length to trust), and the 413 is sent by
the middleware itself, whatever the route was doing with the body when it ran over.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ilias.serve.errors import ServiceError
from ilias.serve.settings import (
    DECODES_ENV,
    MAX_JSON_ENV,
    MAX_UPLOAD_ENV,
    QUEUE_ENV,
    QUEUE_WAIT_S,
)

UPLOAD_SUFFIX = "/search/image"
# Room for the multipart framing and the query field around the image itself.
FORM_OVERHEAD = 64 * 1024


# glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_FROM = 1024 * 1024  # every allocation of 1 MiB or more is its own mapping


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def bound_allocator() -> None:
    """Make freed picture memory go back to the system (glibc; elsewhere nothing to do).

    By default glibc raises its mmap threshold each time a large block is freed (up to
    32 MiB), so the next decode's buffers come from a per-thread heap arena, and what a
    decode frees there stays in the process: 16 uploads in 16 threads kept gigabytes
    after they were answered. A fixed threshold maps every buffer of 1 MiB or more on
    its own (unmapped when freed), and ``release_memory`` trims what the arenas hold after
    each decode, so the resident set follows the decodes in flight, not their history.
    """
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_FROM)


def release_memory() -> None:
    """Give the heap arenas' free pages back to the system (glibc ``malloc_trim``)."""
    if _LIBC is not None:
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
        upload = scope["path"].endswith(UPLOAD_SUFFIX)
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
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # the rest of the body is never read
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class DecodeGate:
    """At most ``slots`` decodes at once, at most ``queue`` more requests waiting for one.

    Route handlers run in threads, so this is a threading semaphore; a request beyond the
    queue, or one that waited ``QUEUE_WAIT_S`` in it, is a 503 with Retry-After, never a
    decode that would take the process over its memory budget.
    """

    def __init__(self, slots: int, queue: int, wait_s: float = QUEUE_WAIT_S):
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
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
                release_memory()
                self._semaphore.release()
        finally:
            with self._lock:
                self._admitted -= 1
