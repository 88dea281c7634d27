"""The ``LLM`` protocol every backend implements, and the plain data that crosses it.

A backend streams :class:`TextDelta` items and ends with exactly one :class:`LLMResult`. The
orchestrator turns the deltas into ``llm.delta`` events. ``generate`` is the non-streaming helper.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentflow.errors import AgentflowError


@dataclass(frozen=True)
class Constraint:
    """What an llm node's output must look like; at most one field is set.

    Backends that can enforce it token by token do so; the orchestrator checks the result either way.
    """

    json_schema: dict[str, Any] | None = None
    regex: str | None = None
    choices: tuple[str, ...] | None = None


@dataclass
class LLMRequest:
    """One LLM call. Exactly one of ``messages`` (chat), ``prompt`` (raw text) and
    ``prompt_token_ids`` (token ids, local engine only) is set."""

    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    model: str | None = None
    """The model name the workflow asked for (backends that serve one model may ignore it)."""
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    """Tools in OpenAI function format, for agent nodes."""
    tool_choice: str | dict[str, Any] | None = None
    """OpenAI's ``tool_choice``: ``"auto"`` (the default with tools), ``"required"``, ``"none"``, or
    ``{"type": "function", "function": {"name": ...}}``."""
    parallel_tool_calls: bool | None = None
    """Whether one turn may make several calls (None: the backend's default, which is yes)."""
    min_tool_calls: int | None = None
    """A turn that makes calls makes at least this many (local engine only: enforced by the grammar)."""
    max_tool_calls: int | None = None
    """A turn makes at most this many calls (local engine only: enforced by the grammar)."""
    constraint: Constraint | None = None
    session_id: str | None = None
    """``f"{run_id}:{node_id}"``: lets the local engine keep this conversation's KV pinned between turns."""
    prompt_token_ids: list[int] | None = None
    """A prompt given as token ids (local engine only)."""
    min_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    stop_token_ids: list[int] | None = None
    """Token ids that end generation besides the model's EOS (local engine only)."""
    ignore_eos: bool | None = None
    """Keep generating past EOS, up to ``max_tokens`` (local engine only)."""
    logprobs: bool = False
    """Ask for the log-probability of each generated token (``TextDelta.logprobs`` and ``tokens``)."""


@dataclass
class TextDelta:
    """A piece of generated text. Backends that know them add the tokens it came from (a token
    whose text is held back, e.g. an incomplete character, rides with the next delta)."""

    text: str
    token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    """One per token id, when the request asked for ``logprobs``."""
    tokens: list[str] | None = None
    """Each token's own text (decoded alone), when the request asked for ``logprobs``."""
    token_bytes: list[bytes] | None = None
    """Each token's bytes, when the request asked for ``logprobs`` and the backend knows them: a token
    that holds part of a character has its own bytes here, where its text shows U+FFFD."""


@dataclass
class ToolCallRequest:
    """A tool call the model made (parsed from its output, or returned by a remote API)."""

    id: str
    name: str
    arguments: dict[str, Any]


def new_call_id() -> str:
    """An id in OpenAI's shape (``call_`` + 24 hex digits), for a call that came without one (or with
    one an earlier call of its turn already has)."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCallDelta:
    """A piece of a tool call being written, in OpenAI's streaming shape: the first piece of call
    ``index`` carries its ``id`` and ``name``, later ones fragments of the arguments' JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class ToolCallReady:
    """Tool call ``index`` is complete: its arguments are parsed and checked against the tool's
    schema, while the model may still be writing (more calls, or the end of the turn). A caller can
    start the tool now instead of waiting for the result."""

    index: int
    call: ToolCallRequest


StreamItem = TextDelta | ToolCallDelta | ToolCallReady
"""What a backend streams before its final ``LLMResult``."""


@dataclass
class LLMResult:
    """The end of one call: the whole text, tool calls, why it stopped, and token usage."""

    text: str
    finish_reason: str | None = None
    tool_calls: list[ToolCallRequest] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    token_ids: list[int] | None = None
    """Every generated token id, when the backend knows them (the local engine, without tools)."""
    logprobs: list[float] | None = None
    """One per token id, when the request asked for ``logprobs``."""


class LLMError(AgentflowError):
    """A backend failed to produce a result (connection, server error, bad response)."""

    code = "llm_error"


class LLMRequestError(LLMError):
    """The request itself is invalid (a bad parameter, a prompt longer than the context, a schema
    that does not compile): sent again unchanged it fails again. ``param`` names the offending input
    in the backend's terms (e.g. ``max_new_tokens``, ``constraint.json_schema``) when known."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@runtime_checkable
class LLM(Protocol):
    """A text-generation backend."""

    def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem | LLMResult]:
        """Yield text deltas (and, with tools, tool-call deltas and ready calls), then one final
        :class:`LLMResult`. Closing the iterator early aborts the call."""
        ...

    async def aclose(self) -> None:
        """Release the backend's resources."""
        ...


async def generate(llm: LLM, request: LLMRequest) -> LLMResult:
    """Run one call to completion and return its result."""
    result: LLMResult | None = None
    async for item in llm.stream(request):
        if isinstance(item, LLMResult):
            result = item
    if result is None:
        raise LLMError("the backend ended its stream without a result")
    return result


__all__ = ["LLM", "Constraint", "LLMError", "LLMRequest", "LLMRequestError", "LLMResult", "StreamItem", "TextDelta",
           "ToolCallDelta", "ToolCallReady", "ToolCallRequest", "generate"]
