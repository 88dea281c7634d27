"""Limits: request body size (413), per-key rate (429) and engine admission (503), each with the
headers a well-behaved client needs to back off."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.server.errors import ApiError, error_response


class BodyLimit:
    """ASGI middleware: a body larger than ``max_bytes`` gets 413 before the handler sees a byte of it
    (by ``Content-Length``), or as soon as the stream passes the limit (chunked uploads)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"the request body is larger than {self.max_bytes} bytes",
                                  code="body_too_large", headers={"Connection": "close"})
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float | None, burst: int, *, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise 429 with ``Retry-After``."""
        if self.rate is None:
            return
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens, now)
            raise ApiError(429, f"rate limit of {self.rate:g} requests/s exceeded; retry in {wait} s",
                           code="rate_limited", headers={"Retry-After": str(max(1, wait))})
        if len(self._buckets) >= self.max_keys and key not in self._buckets:
            self._buckets.clear()  # bounded memory; keys come from the configured API keys in practice
        self._buckets[key] = (tokens - 1.0, now)


class Admission:
    """At most ``limit`` engine requests in flight; the next one is refused with 503 + Retry-After
    (never queued without bound)."""

    def __init__(self, limit: int, retry_after_s: int = 1) -> None:
        self.limit, self.retry_after_s = limit, retry_after_s
        self.in_flight = 0
        self.rejected = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        """Take a slot for a streaming response (released with :meth:`release`) or raise 503."""
        if self.in_flight >= self.limit:
            self.rejected += 1
            raise ApiError(503, f"the server is at its limit of {self.limit} concurrent generation requests; "
                           "retry later", code="overloaded", headers={"Retry-After": str(self.retry_after_s)})
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


__all__ = ["Admission", "BodyLimit", "RateLimiter"]
