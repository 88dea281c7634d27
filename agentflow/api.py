"""The HTTP API's response bodies (and how to read ``Retry-After``), shared by the server (which sends
them and documents them in ``/openapi.json``) and the SDK (:mod:`agentflow.client`, which reads them).

They are plain pydantic models with no server imports, so the SDK works without Starlette. Unknown
fields are ignored when reading, so a client keeps working against a newer server that adds some.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

RUN_STATUSES = ("pending", "running", "interrupted", "completed", "failed", "cancelled")
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})


class RunView(BaseModel):
    """A run: its workflow and version, status, input, and once finished its output or error; while it waits
    at an interrupt, ``interrupt`` says which node waits and for what."""

    run_id: str
    workflow: str
    version: int
    status: str
    input: Any = None
    output: Any = None
    error: str | None = None
    interrupt: dict[str, Any] | None = None
    blocked: str | None = None
    """Why nothing executes this unfinished run (the server could not resume it after a restart: a
    workflow or tool it uses is missing); None while it runs, and once it is finished."""
    created_at: float
    updated_at: float
    events_url: str

    @property
    def finished(self) -> bool:
        """Completed, failed or cancelled: nothing more will happen to this run."""
        return self.status in FINISHED_STATUSES


class RunList(BaseModel):
    data: list[RunView]
    next_cursor: str | None = None


class WorkflowSummary(BaseModel):
    name: str
    version: int
    description: str
    versions: list[int]
    origin: str
    created_at: float


class WorkflowList(BaseModel):
    data: list[WorkflowSummary]


class WorkflowDetail(WorkflowSummary):
    ir: dict[str, Any]
    source: str | None = Field(description="The YAML it was registered from; null for IR given as JSON.")


class Issue(BaseModel):
    code: str
    message: str
    pointer: str = ""
    line: int | None = None
    column: int | None = None


class ValidationResult(BaseModel):
    valid: bool
    name: str | None = None
    issues: list[Issue]


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class Readiness(BaseModel):
    ready: bool
    model: str | None
    """The served model, or None when the server has no local model."""
    model_loaded: bool
    store: str


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    details: list[dict[str, Any]] | None = None
    """Every problem, for requests with several (e.g. workflow validation errors)."""


class ErrorBody(BaseModel):
    error: ErrorDetail


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: a number of seconds or an HTTP date (RFC 9110), never negative;
    None when absent, unreadable or not finite. Read by the SDK and by the remote LLM backend."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


__all__ = [
    "FINISHED_STATUSES", "RUN_STATUSES", "ErrorBody", "ErrorDetail", "Health", "Issue", "Readiness", "RunList",
    "RunView", "ValidationResult", "WorkflowDetail", "WorkflowList", "WorkflowSummary", "retry_after_seconds",
]
