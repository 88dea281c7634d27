"""Run events: one small pydantic model per event kind; the ``event`` name is the SSE ``event:`` field.

Every event carries ``run_id``, a per-run ``seq`` (1, 2, 3 ... gap-free, strictly increasing; the SSE
``id:``), ``time`` (Unix seconds), and where it applies the node's ``node`` path and ``attempt``.

Node paths name a node inside composite nodes: ``fetch``, ``summaries[3].fetch`` (map item 3),
``refine#2.draft`` (loop iteration 2), ``both.left.call`` (parallel branch ``left``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    seq: int = Field(ge=1)
    time: float
    node: str | None = None
    attempt: int | None = None


class RunStarted(EventBase):
    event: Literal["run.started"] = "run.started"
    workflow: str
    version: int
    input: Any = None


class NodeStarted(EventBase):
    event: Literal["node.started"] = "node.started"
    kind: str


class LLMDelta(EventBase):
    event: Literal["llm.delta"] = "llm.delta"
    text: str


class LLMToolCall(EventBase):
    """The model finished writing a tool call (its arguments are complete and valid); the tool may start
    now, while the model goes on, or once the turn ends (see ``tool.call``)."""

    event: Literal["llm.tool_call"] = "llm.tool_call"
    index: int
    tool: str
    call_id: str
    arguments: Any = None


class LLMUsage(EventBase):
    """Token counts of one LLM call: ``cached_tokens`` of the prompt came from the prefix cache."""

    event: Literal["llm.usage"] = "llm.usage"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: str | None = None


class ToolCall(EventBase):
    event: Literal["tool.call"] = "tool.call"
    tool: str
    call_id: str
    arguments: Any = None
    early: bool = Field(False, description="True when the tool started while the model was still generating "
                        "(streamed dispatch).")


class ToolResult(EventBase):
    event: Literal["tool.result"] = "tool.result"
    tool: str
    call_id: str
    result: Any = None
    error: str | None = None
    duration: float = 0.0


class NodeCompleted(EventBase):
    event: Literal["node.completed"] = "node.completed"
    output: Any = None
    duration: float = 0.0


class NodeFailed(EventBase):
    event: Literal["node.failed"] = "node.failed"
    error: str
    error_type: str
    handled: bool = Field(False, description="True when an on_error edge takes over.")


class NodeRetrying(EventBase):
    event: Literal["node.retrying"] = "node.retrying"
    error: str
    delay: float


class RunInterrupted(EventBase):
    event: Literal["run.interrupted"] = "run.interrupted"
    prompt: str = ""
    value_schema: dict[str, Any] | None = None


class RunResumed(EventBase):
    event: Literal["run.resumed"] = "run.resumed"


class RunCompleted(EventBase):
    event: Literal["run.completed"] = "run.completed"
    output: Any = None


class RunFailed(EventBase):
    event: Literal["run.failed"] = "run.failed"
    error: str
    error_type: str


class RunCancelled(EventBase):
    event: Literal["run.cancelled"] = "run.cancelled"
    reason: str = ""


AnyEvent = (
    RunStarted | NodeStarted | LLMDelta | LLMToolCall | LLMUsage | ToolCall | ToolResult | NodeCompleted | NodeFailed
    | NodeRetrying | RunInterrupted | RunResumed | RunCompleted | RunFailed | RunCancelled
)
"""Every event kind. Type checkers narrow it by its ``event`` name: after ``if e.event == "llm.delta":``,
``e.text`` is known to exist."""
Event = Annotated[AnyEvent, Field(discriminator="event")]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})


def parse_event(data: dict[str, Any] | str) -> EventBase:
    """An event from its JSON (as stored or sent over SSE)."""
    if isinstance(data, str):
        return EVENT_ADAPTER.validate_json(data)  # type: ignore[return-value]
    return EVENT_ADAPTER.validate_python(data)  # type: ignore[return-value]


__all__ = [
    "EVENT_ADAPTER",
    "TERMINAL_EVENTS",
    "AnyEvent",
    "Event",
    "EventBase",
    "LLMDelta",
    "LLMToolCall",
    "LLMUsage",
    "NodeCompleted",
    "NodeFailed",
    "NodeRetrying",
    "NodeStarted",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunInterrupted",
    "RunResumed",
    "RunStarted",
    "ToolCall",
    "ToolResult",
    "parse_event",
]
