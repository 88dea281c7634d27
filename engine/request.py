"""What callers hand the engine (``Request``) and what comes back (``Delta`` while streaming,
``Output`` at the end)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.sampling import SamplingParams

if TYPE_CHECKING:
    from engine.constrained.toolcall import ToolCallResult


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Request:
    """One generation. Give ``prompt`` (text or token ids) or ``messages`` (chat, with optional
    ``tools`` in OpenAI function format), not both."""

    prompt: str | list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    session_id: str | None = None
    """Requests of one agent session: the engine keeps the session's K/V pinned between them."""
    constraint: Any = None
    """A ``ConstraintSpec`` (compiled at submit into a fresh matcher for this request), an object
    with the ``TokenConstraint`` methods (used as is; one request only, it holds state), or None."""
    request_id: str = field(default_factory=new_request_id)
    chat_template_kwargs: dict[str, Any] | None = None
    """Extra variables for the chat template (e.g. ``enable_thinking`` for Qwen3)."""


@dataclass
class Delta:
    """What one engine step produced for one request."""

    request_id: str
    token_ids: list[int]
    text: str
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    """``stop`` (EOS, stop token or stop string), ``length`` (max_new_tokens or context), ``abort``, or ``error``
    (the request's output constraint failed: a parser limit, or a grammar that admits no output; see ``error``)."""
    stop_reason: str | int | None = None
    """The stop string or stop token id that ended the request, if any."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    """With ``finish_reason="error"``: what failed. ``AsyncEngine`` raises it as ``InvalidRequestError``."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Output:
    """A finished request."""

    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str | None
    stop_reason: str | int | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens whose K/V came from the prefix cache."""
    logprobs: list[float] | None = None
    content: str | None = None
    """Tool-call requests (``ConstraintSpec(tool_calls=...)``): the text before the calls."""
    tool_calls: list[ToolCallResult] | None = None
    """Tool-call requests: each call's ``id``, ``name`` and ``arguments`` (a dict, validated against
    the tool's schema); empty when the model made none, None for other requests."""
    json: Any = None
    """JSON-schema requests that ended where the grammar allows: the value, parsed and validated
    once more with jsonschema (``ConstraintViolationError`` if that fails: an engine bug)."""
    error: str | None = None
    """With ``finish_reason="error"``: why the output constraint failed (the output is incomplete)."""
