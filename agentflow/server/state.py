"""``ServerState``: what every handler reaches through ``request.app.state.agentflow``."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request

from agentflow.runtime.store import DEFAULT_TENANT
from agentflow.server.config import ServerConfig, hash_key
from agentflow.server.errors import ApiError
from agentflow.server.limits import Admission, RateLimiter

if TYPE_CHECKING:
    from agentflow.llm.base import LLM
    from agentflow.runtime import Runtime
    from agentflow.server.metrics import Metrics
    from agentflow.server.registry import Registry



@dataclass
class ServerState:
    config: ServerConfig
    runtime: Runtime
    registry: Registry
    metrics: Metrics
    llm: LLM | None = None
    """The local model (``LocalEngine``) behind the OpenAI-compatible API and /generate, if any."""
    model_name: str | None = None
    keys: dict[str, str] = field(default_factory=dict)
    """SHA-256 digest of each API key -> its tenant."""
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(None, 1))
    admission: Admission = field(default_factory=lambda: Admission(256))
    ready: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    draining: anyio.Event = field(default_factory=anyio.Event)
    """Set when the server begins to shut down (``agentflow serve``): open event streams end then, so their
    clients reconnect to the next server at once and the shutdown does not wait on them."""

    def tenant_for(self, request: Request) -> str:
        """The tenant of the request's API key (``Authorization: Bearer KEY``); 401 if it has none or a
        wrong one. Without configured keys every request is ``default``. Also applies the rate limit."""
        if not self.keys:
            self.limiter.check(DEFAULT_TENANT)
            return DEFAULT_TENANT
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key",
                           headers={"WWW-Authenticate": "Bearer"})
        digest = hash_key(token.strip())
        tenant = None
        for known, owner in self.keys.items():  # every digest compared, in constant time each
            if hmac.compare_digest(known, digest):
                tenant = owner
        if tenant is None:
            raise ApiError(401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        self.limiter.check(digest)
        return tenant


def state_of(request: Request) -> ServerState:
    return request.app.state.agentflow  # type: ignore[no-any-return]


def tenant_of(request: Request) -> str:
    """The tenant the auth wrapper resolved for this request."""
    return request.state.tenant  # type: ignore[no-any-return]


__all__ = ["DEFAULT_TENANT", "ServerState", "state_of", "tenant_of"]
