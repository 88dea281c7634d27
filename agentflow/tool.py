"""Tools: plain Python callables (sync or async) that workflow ``tool`` nodes and agents call by name.

This is the orchestrator's view of a tool — a name, a callable, a description and a parameters
schema. A tool that declares a ``ctx`` parameter receives a :class:`ToolContext` carrying the
idempotency key ``run_id:node_id:attempt``, which stays the same when a run resumes after a crash
and re-runs the node that was in flight, so tools with side effects can deduplicate.

Sync callables run in a worker thread, so they never block the event loop.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from agentflow.errors import AgentflowError


class ToolError(AgentflowError):
    """A tool is unknown, got bad arguments, or failed."""

    code = "tool_error"


@dataclass(frozen=True)
class ToolContext:
    """What a running tool knows about its call."""

    run_id: str
    node_id: str
    attempt: int
    call_id: str = ""

    @property
    def idempotency_key(self) -> str:
        """``run_id:node_id:attempt`` — stable across a crash and resume of the same attempt."""
        key = f"{self.run_id}:{self.node_id}:{self.attempt}"
        return f"{key}:{self.call_id}" if self.call_id else key


@dataclass
class Tool:
    """A named callable plus what a model needs to call it."""

    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    side_effects: bool = True

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @functools.cached_property
    def _good_keys(self) -> set[tuple[str, ...]]:
        """Argument name lists that passed ``check_arguments`` (the check is a few set operations)."""
        return set()

    @functools.cached_property
    def wants_context(self) -> bool:
        return "ctx" in self.signature.parameters

    @functools.cached_property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    @functools.cached_property
    def _keywords(self) -> tuple[frozenset[str], frozenset[str], bool]:
        """(accepted keyword names, required ones, takes **kwargs) — checked on every call, so precomputed."""
        params = self.signature.parameters.values()
        accepted = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        required = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                             and p.default is inspect.Parameter.empty)
        return accepted, required, any(p.kind is p.VAR_KEYWORD for p in params)

    def check_arguments(self, kwargs: Mapping[str, Any]) -> None:
        """Raise ``ToolError`` naming missing or unexpected arguments."""
        accepted, required, open_ended = self._keywords
        missing = sorted(required - kwargs.keys())
        unexpected = [] if open_ended else sorted(kwargs.keys() - accepted)
        if missing or unexpected:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
            raise ToolError(f"tool {self.name!r}: bad arguments ({'; '.join(parts)}); "
                            f"it takes {', '.join(sorted(accepted - {'ctx'})) or 'none'}")

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext | Callable[[], ToolContext]) -> Any:
        """Call the tool with keyword ``arguments``; sync functions run in a worker thread. ``ctx`` may be
        given as a function that makes it, called only for tools that take one."""
        kwargs = dict(arguments)
        if self.wants_context:
            kwargs["ctx"] = ctx if isinstance(ctx, ToolContext) else ctx()
        keys = tuple(kwargs)
        if keys not in self._good_keys:  # checked once per distinct argument list
            self.check_arguments(kwargs)
            if len(self._good_keys) < 64:
                self._good_keys.add(keys)
        if self.is_async:
            return await self.fn(**kwargs)
        return await anyio.to_thread.run_sync(lambda: self.fn(**kwargs), abandon_on_cancel=True)

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function format."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def as_tool(obj: Tool | Callable[..., Any], name: str | None = None) -> Tool:
    """A :class:`Tool` from a tool or a plain function (named after the function, described by its docstring)."""
    if isinstance(obj, Tool):
        return obj
    if not callable(obj):
        raise ToolError(f"not a tool or callable: {obj!r}")
    return Tool(name=name or obj.__name__, fn=obj, description=inspect.getdoc(obj) or "",
                parameters=_parameters_schema(obj))


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _parameters_schema(fn: Callable[..., Any]) -> dict[str, Any]:
    """A best-effort JSON Schema from simple annotations (the tools issue replaces this with pydantic)."""
    props: dict[str, Any] = {}
    required: list[str] = []
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if pname == "ctx" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        json_type = _JSON_TYPES.get(hints.get(pname))  # type: ignore[arg-type]
        props[pname] = {"type": json_type} if json_type else {}
        if param.default is inspect.Parameter.empty:
            required.append(pname)
    return {"type": "object", "properties": props, "required": required}


class ToolRegistry:
    """Tools by name."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] | Mapping[str, Tool | Callable[..., Any]] = ()):
        self._tools: dict[str, Tool] = {}
        items = tools.items() if isinstance(tools, Mapping) else ((None, t) for t in tools)
        for name, obj in items:
            self.add(obj, name=name)

    def add(self, obj: Tool | Callable[..., Any], name: str | None = None) -> Tool:
        tool = as_tool(obj, name)
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolError(f"unknown tool {name!r} (registered: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def merged(self, other: ToolRegistry) -> ToolRegistry:
        """A registry with this one's tools and ``other``'s (``other`` wins on a name clash)."""
        out = ToolRegistry()
        out._tools = {**self._tools, **other._tools}
        return out


__all__ = ["Tool", "ToolContext", "ToolError", "ToolRegistry", "as_tool"]
