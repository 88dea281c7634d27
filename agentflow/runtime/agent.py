"""The ``agent`` node: an LLM tool-calling loop with streamed tool dispatch.

One turn: the model is asked with the conversation so far and the tools; as it writes, the backend
reports each call the moment its arguments are complete (``ToolCallReady``). With ``dispatch:
streamed`` (the default) a tool without side effects starts right then, while the model goes on
writing the next call; other calls start when the turn ends (all at once, or one by one with
``dispatch: sequential``). Tools that require approval pause the run at an interrupt first. When
every call has a result, the assistant message and one tool message per call are appended and the
next turn begins; a turn without calls is the answer. The last allowed turn (``max_steps``) is asked
with ``tool_choice: none``, so the loop ends with an answer; a backend that calls tools anyway fails the
node, and those calls are not run (nor put up for approval), since no turn is left to read their results.
Calls are told apart by id: a call that comes without one, or with the id of an earlier call of its turn
(some servers repeat them), gets a fresh id, so each call has its own result, approval and idempotency key.

Results reach the model as data: invisible Unicode stripped, size-capped with a note, and labelled
as untrusted (:mod:`agentflow.untrusted`). A failed call becomes an error result the model can react
to, unless the tool says ``on_error="raise"``, which fails the node.

Durability: each finished turn and each tool result is recorded in the run's store; a run resumed
after a crash (or an approval given after a restart) replays them instead of asking the model again
or re-running a tool. Every turn carries the session id ``run_id:node``, so the local engine keeps the
conversation's KV cached and a follow-up turn prefills only the new messages.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from agentflow.dsl.ir import AgentNode
from agentflow.llm.base import (
    LLMRequest,
    LLMResult,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallRequest,
    new_call_id,
)
from agentflow.runtime.errors import CheckpointLost, NodeError
from agentflow.runtime.events import LLMDelta, LLMToolCall, LLMUsage
from agentflow.tool import Tool

if sys.version_info < (3, 11):  # pragma: no cover - anyio installs the backport there
    from exceptiongroup import BaseExceptionGroup

APPROVAL_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "boolean"},
              {"type": "object", "properties": {"approved": {"type": "boolean"}, "reason": {"type": "string"}},
               "required": ["approved"]}]}
"""What a resume value for a tool approval looks like: ``true`` / ``false`` or ``{"approved": ..., "reason": ...}``."""

APPROVAL_MARK = "@approve:"
"""Interrupt paths of tool approvals are ``<node path>@approve:<call id>``."""


@dataclass
class _Turn:
    """One model turn: its text, its calls, and each call's content for the model (by index)."""

    text: str
    calls: list[ToolCallRequest]
    contents: dict[int, str] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)
    """Call ids of the node's earlier turns: a model (or server) that reuses one gets a fresh id, so each call
    has its own idempotency key and approval, and the conversation its own tool message."""


async def run_agent(node: AgentNode, ns: dict[str, Any], call: Any) -> Any:
    """Run the loop; the output is the model's final answer (its text)."""
    from agentflow.runtime import nodes as leaf

    tools = await call.tools.resolve(node.tools)
    by_name = {t.name: t for t in tools}
    schemas = [t.openai_schema() for t in tools] or None
    sampling = leaf.sampling_for(node.sampling, call.defaults)
    model = node.model or call.defaults.model
    llm = call.llm_for(model)
    messages = leaf.messages_for(node, ns)
    used: set[str] = set()
    for step in range(node.max_steps):
        key = f"{call.path}#turn{step}"
        last = step == node.max_steps - 1
        choice = _tool_choice(node, step, by_name) if schemas else None
        request = leaf.request_for(messages, sampling, model, call, tools=schemas)
        request.tool_choice = choice
        if schemas:
            request.parallel_tool_calls = node.parallel_tool_calls
            request.min_tool_calls, request.max_tool_calls = node.min_tool_calls, node.max_tool_calls
        found, saved = call.recall(key)
        if found:
            turn = _Turn(saved["text"], [ToolCallRequest(**c) for c in saved["tool_calls"]])
            if not last:
                await _dispatch_rest(turn, node, by_name, call, key)
        else:
            turn = await _generate(llm, request, node, by_name, call, key, used, dispatch=not last)
        used.update(c.id for c in turn.calls)
        if not turn.calls:
            return turn.text
        if last:
            names = ", ".join(sorted({c.name for c in turn.calls}))
            raise NodeError(f"the agent did not give a final answer within max_steps={node.max_steps}: its last "
                            f"turn called tools anyway ({names}), which were not run", node=call.path)
        messages.append({"role": "assistant", "content": turn.text, "tool_calls": [
            {"id": c.id, "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in turn.calls]})
        for i, c in enumerate(turn.calls):
            messages.append({"role": "tool", "tool_call_id": c.id, "name": c.name, "content": turn.contents[i]})
    raise NodeError(f"the agent did not give a final answer within max_steps={node.max_steps}", node=call.path)


def _tool_choice(node: AgentNode, step: int, by_name: dict[str, Tool]) -> str | dict[str, Any]:
    if step == node.max_steps - 1:
        return "none"
    choice = node.tool_choice
    if choice in ("auto", "required", "none"):
        return choice
    if choice not in by_name:
        raise NodeError(f"tool_choice names {choice!r}, which is not among the agent's tools "
                        f"({', '.join(by_name) or 'none'})", node=node.id)
    return {"type": "function", "function": {"name": choice}}


async def _generate(llm: Any, request: LLMRequest, node: AgentNode, by_name: dict[str, Tool], call: Any,
                    key: str, used: set[str], *, dispatch: bool = True) -> _Turn:
    """Stream one turn, starting eligible tools as their calls complete; then run the rest (none of
    them without ``dispatch``)."""
    await call.durable()
    turn = _Turn("", [], taken=used)
    result: LLMResult | None = None
    begun = 0  # calls whose name has been written
    streamed: set[int] = set()  # the indexes of the result's calls that came as ToolCallReady
    with _first_error():
        async with anyio.create_task_group() as tg:
            stream = llm.stream(request)
            try:
                async for item in stream:
                    if isinstance(item, TextDelta):
                        if item.text:
                            call.emit(LLMDelta, text=item.text)
                    elif isinstance(item, ToolCallDelta):
                        if item.name is not None:
                            begun += 1
                    elif isinstance(item, ToolCallReady):
                        streamed.add(item.index)
                        index = _add_call(turn, item.call, call)
                        tool = by_name.get(item.call.name)
                        if dispatch and node.dispatch == "streamed" and tool is not None and not tool.side_effects \
                                and not tool.requires_approval:
                            turn.started.add(index)
                            tg.start_soon(_run_call, turn, index, by_name, node, call, key, True)
                    elif isinstance(item, LLMResult):
                        result = item
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()
            if result is None:
                raise NodeError("the LLM backend ended without a result", node=call.path)
            if begun > len(turn.calls) and not result.tool_calls[len(turn.calls):]:
                raise NodeError(f"the model's turn ended ({result.finish_reason}) in the middle of a tool call; raise "
                                "max_tokens if it was cut short", node=call.path)
            call.emit(LLMUsage, prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                      cached_tokens=result.cached_tokens, finish_reason=result.finish_reason)
            # A backend that does not stream calls (or an OpenAI server that sends them whole) lists them here.
            for i, tc in enumerate(result.tool_calls):
                if i not in streamed:
                    _add_call(turn, tc, call)
            turn.text = result.text
            call.remember(key, {"text": turn.text, "tool_calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in turn.calls]})
            if dispatch:
                await _dispatch_rest(turn, node, by_name, call, key, tg)
    return turn


def _add_call(turn: _Turn, tc: ToolCallRequest, call: Any) -> int:
    """Append a call the model made to ``turn`` (with a fresh id if it has none or one already used in this
    turn or an earlier one) and announce it; return its index."""
    if not tc.id or tc.id in turn.taken or any(c.id == tc.id for c in turn.calls):
        tc = ToolCallRequest(new_call_id(), tc.name, tc.arguments)
    index = len(turn.calls)
    turn.calls.append(tc)
    call.emit(LLMToolCall, index=index, tool=tc.name, call_id=tc.id, arguments=tc.arguments)
    return index


async def _dispatch_rest(turn: _Turn, node: AgentNode, by_name: dict[str, Tool], call: Any, key: str,
                         tg: anyio.abc.TaskGroup | None = None) -> None:
    """Run the calls of ``turn`` not started yet: concurrently, or in order for ``dispatch: sequential``."""
    pending = [i for i in range(len(turn.calls)) if i not in turn.started]
    if node.dispatch == "sequential":
        for i in pending:
            turn.started.add(i)
            await _run_call(turn, i, by_name, node, call, key, False)
        return
    if tg is None:
        with _first_error():
            async with anyio.create_task_group() as own:
                await _dispatch_rest(turn, node, by_name, call, key, own)
        return
    for i in pending:
        turn.started.add(i)
        tg.start_soon(_run_call, turn, i, by_name, node, call, key, False)


async def _run_call(turn: _Turn, index: int, by_name: dict[str, Tool], node: AgentNode, call: Any, key: str,
                    early: bool) -> None:
    """Call ``index`` of the turn: replayed if recorded, else approved (if needed), run, and recorded; its
    content for the model lands in ``turn.contents[index]``."""
    from agentflow.runtime.nodes import run_tool_call
    from agentflow.untrusted import tool_error_content, tool_result_content

    tc = turn.calls[index]
    result_key = f"{key}/{tc.id}"
    found, saved = call.recall(result_key)
    if found:
        turn.contents[index] = saved
        return
    tool = by_name.get(tc.name)
    if tool is None:
        content = tool_error_content(tc.name, f"there is no tool named {tc.name!r}; available: "
                                     f"{', '.join(by_name) or 'none'}")
    elif tool.requires_approval and not await _approved(tool, tc, call):
        content = tool_error_content(tc.name, "the call was not approved, so it did not run")
    else:
        try:
            result = await run_tool_call(tool, tc.arguments, call, tc.id, early=early)
        except CheckpointLost:
            raise
        except Exception as exc:
            if tool.on_error == "raise":
                raise NodeError(f"tool {tool.name!r} failed: {type(exc).__name__}: {exc}", node=call.path) from exc
            content = tool_error_content(tc.name, f"{type(exc).__name__}: {exc}")
        else:
            content = tool_result_content(tc.name, result, max_chars=node.max_result_chars)
    call.remember(result_key, content)
    turn.contents[index] = content


@contextmanager
def _first_error() -> Iterator[None]:
    """Raise a task group's lone error as itself (a tool that fails the node, a lost checkpoint), so the
    node fails with that error rather than with an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [e for e in group.exceptions if isinstance(e, Exception)]
        if len(errors) == len(group.exceptions) and errors:
            raise errors[0] from None
        raise


async def _approved(tool: Tool, tc: ToolCallRequest, call: Any) -> bool:
    """Pause the run until someone approves or denies this call (``Runtime.resume``)."""
    arguments = json.dumps(tc.arguments, ensure_ascii=False)
    prompt = f"Approve a call of tool {tool.name!r} with arguments {arguments}?"
    value = await call.pause(f"{call.path}{APPROVAL_MARK}{tc.id}", prompt, APPROVAL_SCHEMA,
                             tool=tool.name, arguments=tc.arguments, call_id=tc.id)
    return bool(value.get("approved")) if isinstance(value, dict) else bool(value)


__all__ = ["APPROVAL_MARK", "APPROVAL_SCHEMA", "run_agent"]
