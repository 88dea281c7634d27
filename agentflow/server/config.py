"""``ServerConfig``: everything ``agentflow serve`` can be told, from flags or a YAML/JSON file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator


class ApiKey(BaseModel):
    """One API key. Give ``key`` (plain text, hashed at load and never kept) or ``sha256`` (hex digest);
    or ``env``, the name of an environment variable holding the key."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    key: str | None = Field(default=None, min_length=16, repr=False)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    env: str | None = None
    name: str | None = None
    """A label for logs and metrics (never the key)."""

    def digest(self) -> str:
        """The key's SHA-256 hex digest (what the server keeps)."""
        if self.sha256 is not None:
            return self.sha256
        secret = self.key
        if secret is None and self.env is not None:
            secret = os.environ.get(self.env)
            if not secret:
                raise ValueError(f"API key of tenant {self.tenant!r}: environment variable {self.env} is not set")
        if secret is None:
            raise ValueError(f"API key of tenant {self.tenant!r}: give key, sha256 or env")
        return hash_key(secret)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ServerConfig(BaseModel):
    """Server settings. Every field has a default that works on one machine for one user."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model: str | None = "demo"
    """The local model served by the OpenAI-compatible API and used by workflows (None: no local model)."""
    model_name: str | None = None
    """The id ``/v1/models`` lists (default: ``model``)."""
    engine: dict[str, Any] = Field(default_factory=dict)
    """Extra ``EngineConfig`` options for the local model (e.g. ``max_kv_tokens``)."""
    workflows: list[Path] = Field(default_factory=list)
    """YAML files or folders of them, registered at start (with a ``tools.py`` beside them, if any)."""
    tools: list[str] = Field(default_factory=list)
    """Python tools modules (files or module names); a ``tools.py`` beside the workflows is loaded too."""
    store: str = "agentflow-runs.db"
    """The run store: an SQLite file, or ``:memory:``."""
    api_keys: list[ApiKey] = Field(default_factory=list)
    """Empty: no authentication (every request is tenant ``default``); only sensible on 127.0.0.1."""
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    rate_limit_per_s: float | None = Field(default=None, gt=0)
    """Requests per second per API key (token bucket); None: unlimited."""
    rate_limit_burst: int = Field(default=50, ge=1)
    max_queue: int = Field(default=256, ge=1)
    """Engine requests (chat, completions, generate) in flight at once; more get 503 + Retry-After."""
    default_max_tokens: int = Field(default=256, ge=1)
    """Generated-token cap of generation requests that set none (OpenAI APIs and /generate)."""
    max_tokens_limit: int | None = Field(default=None, ge=1)
    """The most tokens one generation request may ask for; more is a 400 (None: the model's context)."""
    heartbeat_s: float = Field(default=15.0, gt=0)
    """SSE comment lines every so often, so proxies keep idle streams open."""
    webhook_tolerance_s: float = Field(default=300.0, gt=0)
    ui: bool = True
    """Serve the web UI at ``/ui/`` (and redirect ``/`` there)."""
    ui_dir: Path | None = None
    """The UI's folder (default: ``web/`` of the source tree)."""

    @field_validator("workflows", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, Path)) else value

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
        """Load a YAML (or JSON) file; ``overrides`` win over it."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the server config must be a mapping, got {type(data).__name__}")
        data.update(overrides)
        return cls.model_validate(data)


__all__ = ["ApiKey", "ServerConfig", "hash_key"]
