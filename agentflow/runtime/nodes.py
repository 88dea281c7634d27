"""Executors of the leaf node kinds that talk to the outside: ``llm``, ``tool``, ``agent`` and the LLM
choice of a ``switch``. Each takes the node, the namespace its templates see, and a
:class:`NodeCall` (the run's services for this attempt) and returns the node's output.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, ItemsView, KeysView, ValuesView
from typing import Any, Protocol

from pydantic_core import PydanticSerializationError, to_json, to_jsonable_python

from agentflow import jsondata
from agentflow.dsl.ir import AgentNode, Defaults, LLMNode, Sampling, SwitchNode, ToolNode
from agentflow.dsl.templates import render, render_value
from agentflow.llm.base import LLM, Constraint, LLMRequest, LLMResult, TextDelta
from agentflow.runtime.agent import APPROVAL_MARK, APPROVAL_SCHEMA, run_agent
from agentflow.runtime.errors import NodeError, OutputError
from agentflow.runtime.events import EventBase, LLMDelta, ToolCall, ToolResult
from agentflow.schemas import schema_error
from agentflow.tool import Tool, ToolContext, ToolRegistry


class RunPort(Protocol):
    """What a node's attempt reaches of its run; ``RunExecution`` is one."""

    run_id: str
    tools: ToolRegistry
    llm_for: Callable[[str | None], LLM]

    def emit(self, cls: type[EventBase], *, node: str | None = None, attempt: int | None = None,
             **fields: Any) -> EventBase: ...

    def durable(self, ticket: int | None = None) -> Awaitable[None]: ...

    def pause(self, path: str, prompt: str, schema: dict[str, Any] | None, **extra: Any) -> Awaitable[Any]: ...

    def recall(self, key: str) -> tuple[bool, Any]: ...

    def remember(self, key: str, value: Any) -> int: ...


class NodeCall:
    """What one attempt of one node may use: its run's services, bound to the node's path, attempt
    and checkpoint ticket. (Made for every node, so it holds five references and binds nothing
    until asked.)"""

    __slots__ = ("attempt", "defaults", "path", "run", "ticket")

    def __init__(self, run: RunPort, path: str, attempt: int, defaults: Defaults, ticket: int | None = None) -> None:
        self.run, self.path, self.attempt, self.defaults, self.ticket = run, path, attempt, defaults, ticket

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def tools(self) -> ToolRegistry:
        return self.run.tools

    @property
    def session_id(self) -> str:
        return f"{self.run.run_id}:{self.path}"

    def llm_for(self, model: str | None) -> LLM:
        return self.run.llm_for(model)

    def emit(self, cls: type[EventBase], **fields: Any) -> EventBase:
        """Publish and log an event of this run for this node."""
        return self.run.emit(cls, node=self.path, attempt=self.attempt, **fields)

    def durable(self) -> Awaitable[None]:
        """Wait until the checkpoints this node depends on are committed; awaited before calling a tool or an LLM."""
        return self.run.durable(self.ticket)

    def pause(self, path: str, prompt: str, schema: dict[str, Any] | None, **extra: Any) -> Awaitable[Any]:
        """Wait at an interrupt (a tool approval) for a resume value."""
        return self.run.pause(path, prompt, schema, **extra)

    def recall(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` if this run recorded ``key`` (also before a restart)."""
        return self.run.recall(key)

    def remember(self, key: str, value: Any) -> None:
        """Record a value in the run's store for replay on resume; this node's next :meth:`durable` waits
        until it is committed."""
        self.ticket = self.run.remember(key, value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of a tool's or function's result (pydantic models, dataclasses, sets, tuples,
    iterators ...); a ``range`` or a dict view becomes a list, other unknown objects their ``str``. NaN and
    ±Infinity, which JSON cannot carry, become None (what the run's events showed for them anyway); lone
    UTF-16 surrogates (``surrogateescape``-decoded file names), which UTF-8 cannot carry, become U+FFFD."""
    if type(value) in _SCALARS:  # most results
        if type(value) is str:
            return jsondata.without_surrogates(value)
        return None if type(value) is float and not math.isfinite(value) else value
    try:
        out = to_jsonable_python(value, fallback=_fallback, inf_nan_mode="null")
        to_json(out)  # a lone surrogate in a string (fails here) or a key (failed above): rare, so looked for in C
        return out
    except (UnicodeEncodeError, PydanticSerializationError):
        out = to_jsonable_python(jsondata.without_surrogates(value), fallback=_fallback, inf_nan_mode="null")
        return jsondata.without_surrogates(out)  # strings inside models and dataclasses too


def _fallback(value: Any) -> Any:
    if isinstance(value, range | KeysView | ValuesView | ItemsView):
        return to_jsonable_python(list(value), fallback=_fallback, inf_nan_mode="null")
    return str(value)


def sampling_for(node_sampling: Sampling | None, defaults: Defaults) -> Sampling:
    return node_sampling.merged_over(defaults.sampling) if node_sampling else defaults.sampling


def messages_for(node: LLMNode | AgentNode, ns: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if node.system is not None:
        messages.append({"role": "system", "content": str(render(node.system, ns, node=node.id, field="system"))})
    if node.messages is not None:
        for i, message in enumerate(node.messages):
            content = render(message.content, ns, node=node.id, field=f"messages[{i}].content")
            messages.append({"role": message.role, "content": str(content)})
    else:
        assert node.prompt is not None  # the IR guarantees one of prompt / messages
        messages.append({"role": "user", "content": str(render(node.prompt, ns, node=node.id, field="prompt"))})
    return messages


def request_for(messages: list[dict[str, Any]], sampling: Sampling, model: str | None, call: NodeCall, *,
             constraint: Constraint | None = None, tools: list[dict[str, Any]] | None = None) -> LLMRequest:
    return LLMRequest(messages=messages, model=model, max_tokens=sampling.max_tokens,
                      temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                      seed=sampling.seed, stop=sampling.stop, tools=tools, constraint=constraint,
                      session_id=call.session_id)


async def _complete(llm: LLM, request: LLMRequest, call: NodeCall) -> LLMResult:
    """Stream one LLM call, publishing each piece of text as an ``llm.delta`` event."""
    result: LLMResult | None = None
    await call.durable()
    stream = llm.stream(request)
    try:
        async for item in stream:
            if isinstance(item, TextDelta):
                if item.text:
                    call.emit(LLMDelta, text=item.text)
            elif isinstance(item, LLMResult):
                result = item
            # ToolCallDelta / ToolCallReady: the calls arrive complete in the result as well
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if result is None:
        raise NodeError("the LLM backend ended without a result", node=call.path)
    return result


def _constraint(node: LLMNode) -> Constraint | None:
    if node.output_schema is not None:
        return Constraint(json_schema=node.output_schema)
    if node.regex is not None:
        return Constraint(regex=node.regex)
    if node.choices is not None:
        return Constraint(choices=tuple(node.choices))
    return None


def check_output(node: LLMNode, text: str, path: str) -> Any:
    """The node's output from the model's text, checked against its schema / regex / choices."""
    if node.output_schema is not None:
        try:
            value = jsondata.loads(text)
        except ValueError as exc:  # NaN, Infinity and 1e999 included: Python reads them, JSON has none
            why = f"{exc.msg} at char {exc.pos}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise OutputError(f"the model's output is not valid JSON ({why}); it begins {text[:120]!r}",
                              node=path) from None
        error = schema_error(node.output_schema, value)
        if error is not None:
            raise OutputError(f"the model's JSON does not match output_schema at {error[0]}: {error[1]}", node=path)
        return value
    if node.regex is not None:
        if re.fullmatch(node.regex, text) is None:
            raise OutputError(f"the model's output {text[:120]!r} does not match regex {node.regex!r}", node=path)
        return text
    if node.choices is not None:
        choice = text.strip()
        if choice not in node.choices:
            raise OutputError(f"the model's output {text[:120]!r} is none of the choices {node.choices}", node=path)
        return choice
    return text


async def run_llm(node: LLMNode, ns: dict[str, Any], call: NodeCall) -> Any:
    sampling = sampling_for(node.sampling, call.defaults)
    model = node.model or call.defaults.model
    request = request_for(messages_for(node, ns), sampling, model, call, constraint=_constraint(node))
    result = await _complete(call.llm_for(model), request, call)
    return check_output(node, result.text, call.path)


async def run_tool_call(tool: Tool, arguments: dict[str, Any], call: NodeCall, call_id: str, *,
                        early: bool = False) -> Any:
    """Call one tool with events around it; the result is made JSON-ready."""
    call.emit(ToolCall, tool=tool.name, call_id=call_id, arguments=arguments, early=early)

    def ctx() -> ToolContext:
        return ToolContext(run_id=call.run_id, node_id=call.path, attempt=call.attempt,
                           call_id=call_id if call_id != call.path else "")

    await call.durable()
    started = time.monotonic()
    try:
        result = jsonable(await tool.call(arguments, ctx))
    except Exception as exc:
        call.emit(ToolResult, tool=tool.name, call_id=call_id, error=f"{type(exc).__name__}: {exc}",
                  duration=time.monotonic() - started)
        raise
    call.emit(ToolResult, tool=tool.name, call_id=call_id, result=result, duration=time.monotonic() - started)
    return result


async def run_tool(node: ToolNode, ns: dict[str, Any], call: NodeCall) -> Any:
    arguments = render_value(node.args, ns, node=node.id, field="args")
    tool = call.tools.get(node.tool)
    if tool.requires_approval:
        value = await call.pause(f"{call.path}{APPROVAL_MARK}{call.path}",
                                 f"Approve a call of tool {tool.name!r} with arguments "
                                 f"{json.dumps(arguments, ensure_ascii=False, default=str)}?", APPROVAL_SCHEMA,
                                 tool=tool.name, arguments=arguments)
        if not (value.get("approved") if isinstance(value, dict) else value):
            raise NodeError(f"the call of tool {tool.name!r} was not approved", node=call.path)
    return await run_tool_call(tool, arguments, call, call_id=call.path)


async def choose_case(node: SwitchNode, ns: dict[str, Any], call: NodeCall) -> str:
    """An LLM picks one of the switch's case names."""
    assert node.prompt is not None
    sampling = sampling_for(node.sampling, call.defaults)
    model = node.model or call.defaults.model
    prompt = str(render(node.prompt, ns, node=node.id, field="prompt"))
    choices = list(node.cases)
    request = request_for([{"role": "user", "content": prompt}], sampling, model, call,
                       constraint=Constraint(choices=tuple(choices)))
    text = (await _complete(call.llm_for(model), request, call)).text.strip()
    if text not in choices:
        raise OutputError(f"the model chose {text[:120]!r}, which is none of the cases {choices}", node=call.path)
    return text


__all__ = ["NodeCall", "RunPort", "check_output", "choose_case", "jsonable", "messages_for", "request_for",
           "run_agent", "run_llm", "run_tool", "run_tool_call", "sampling_for"]
