"""Bounded retries with exponential backoff for calls to a Qdrant server.

A Qdrant node restarting, a replica moving, a load balancer timing out: these fail one request
and succeed on the next. They are retried here a bounded number of times with exponential
backoff (jittered, capped, ``Retry-After`` honoured). Everything else, and a transient error
that outlives the attempts, becomes one ``StoreError`` that names the URL and what to check,
so a user sees "Qdrant at http://host:6333 did not answer", not a page of httpx internals.

The classification works on the exception types qdrant-client really raises:
``ResponseHandlingException`` (REST transport failures, wrapping httpx errors),
``UnexpectedResponse`` (an HTTP status), ``ResourceExhaustedResponse`` (429 with Retry-After)
and ``grpc.RpcError`` (gRPC status codes).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ilias.errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP statuses worth another try: rate limited, or the server (or a proxy in front of it)
# is restarting or overloaded. 4xx other than these are the caller's mistake: no retry.
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_GRPC = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed call is repeated.

    ``attempts`` counts every try (1 = no retry). The wait before retry ``n`` (1-based) is
    ``min(max_delay, base_delay * 2 ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1]`` so that many workers retrying at once do not hit the server in step.
    ``timeout_attempts`` caps the tries of a request that times out: a server that accepts
    connections and never answers will not answer the third time either, so it costs at
    most ``timeout_attempts`` request timeouts (2 x 60 s by default, not 5 x 60 s).
    """

    attempts: int = 5
    timeout_attempts: int = 2
    base_delay: float = 0.5
    max_delay: float = 10.0
    jitter: float = 0.25

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the ``retry``-th retry (1-based)."""
        wait = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        factor = 1.0 - self.jitter * (rng or random).random()
        return wait * factor


def transient_reason(error: BaseException) -> str | None:
    """Why ``error`` is worth retrying (a short phrase), or None when it is not transient."""
    from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(error, ResourceExhaustedResponse):
        return "rate limited (429)"
    if isinstance(error, UnexpectedResponse):
        if error.status_code in TRANSIENT_HTTP:
            return f"HTTP {error.status_code}"
        return None
    if isinstance(error, ResponseHandlingException):
        # qdrant-client also wraps response *parsing* errors in this type; only transport
        # failures (timeouts, refused or reset connections) are transient.
        return _transport_reason(error.source)
    grpc_code = _grpc_code(error)
    if grpc_code is not None:
        return f"gRPC {grpc_code}" if grpc_code in TRANSIENT_GRPC else None
    return _transport_reason(error)


def _transport_reason(error: BaseException) -> str | None:
    import httpx

    if isinstance(error, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(error, httpx.TransportError | ConnectionError):
        return f"connection failed ({type(error).__name__})"
    return None


def _grpc_code(error: BaseException) -> str | None:
    """The gRPC status name of an ``RpcError`` (``UNAVAILABLE``...), None for other errors."""
    try:
        import grpc
    except ImportError:  # pragma: no cover - grpcio is a dependency of qdrant-client
        return None
    if not isinstance(error, grpc.RpcError) or not callable(getattr(error, "code", None)):
        return None
    code = error.code()
    return getattr(code, "name", str(code))


def _retry_after(error: BaseException) -> float | None:
    seconds = getattr(error, "retry_after_s", None)
    return float(seconds) if seconds is not None else None


def call_with_retry(
    fn: Callable[[], T],
    *,
    what: str,
    url: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``fn``; retry transient failures per ``policy``; raise ``StoreError`` otherwise.

    ``what`` names the operation for the message ("upsert into 'ilias'"); ``url`` is the
    server's address as the user gave it (never the API key).
    """
    started = time.monotonic()
    timeouts = 0
    for attempt in range(1, max(1, policy.attempts) + 1):
        try:
            return fn()
        except StoreError:
            raise
        except Exception as error:
            reason = transient_reason(error)
            if reason is None:
                raise server_error(error, what=what, url=url) from error
            timeouts += reason == "timed out"
            if attempt >= policy.attempts or timeouts >= policy.timeout_attempts:
                elapsed = time.monotonic() - started
                raise StoreError(
                    f"Qdrant at {url} did not answer {what}: {reason} on all {attempt} "
                    f"attempts over {elapsed:.1f} s (last error: {_short(error)}). Check that "
                    "the server is running and reachable from this machine (for the compose "
                    "files: docker compose -f deploy/qdrant.yml ps), the host and port in "
                    "--store, and QDRANT_API_KEY"
                ) from error
            wait = _retry_after(error) or policy.delay(attempt)
            logger.warning(
                "Qdrant at %s: %s failed (%s), attempt %d of %d; retrying in %.1f s",
                url,
                what,
                reason,
                attempt,
                policy.attempts,
                wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def server_error(error: BaseException, *, what: str, url: str) -> StoreError:
    """A non-transient server answer as a ``StoreError`` whose message names the fix."""
    from qdrant_client.http.exceptions import UnexpectedResponse

    status = getattr(error, "status_code", None) if isinstance(error, UnexpectedResponse) else None
    grpc_code = _grpc_code(error)
    if status in (401, 403) or grpc_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return StoreError(
            f"Qdrant at {url} refused {what}: not authorised. Set QDRANT_API_KEY to the "
            "server's api key (QDRANT__SERVICE__API_KEY on the server)"
        )
    return StoreError(f"Qdrant at {url} refused {what}: {_short(error)}")


def _short(error: BaseException) -> str:
    """One line of an exception: the server's own message where the response carries one."""
    content = getattr(error, "content", None)
    if isinstance(content, bytes | bytearray):
        try:
            import json

            status = json.loads(content).get("status", {})
            message = status.get("error") if isinstance(status, dict) else None
            if message:
                return f"HTTP {getattr(error, 'status_code', '?')}: {message}"
        except (ValueError, AttributeError):
            pass
        return f"HTTP {getattr(error, 'status_code', '?')} {getattr(error, 'reason_phrase', '')}"
    details = getattr(error, "details", None)
    if callable(details):
        try:
            return f"gRPC {_grpc_code(error)}: {details()}"
        except Exception:  # a half-built RpcError
            pass
    source = getattr(error, "source", None)
    text = str(source if source is not None else error) or type(error).__name__
    return text.splitlines()[0][:300]
