"""Tools: typed Python callables (sync or async) that ``tool`` nodes and agents call by name.

    @tool
    async def get_weather(city: str, days: Annotated[int, Field(ge=1, le=7)] = 1) -> dict:
        '''Forecast for a city.

        Args:
            city: City name, e.g. "Paris".
            days: How many days ahead.
        '''

``@tool`` turns the function into a :class:`Tool`: its name, its description (the docstring's text
before ``Args:``), and a JSON Schema of its parameters built by pydantic from the type hints (the
``Args:`` lines describe each parameter). Arguments are validated (and coerced, ``"3"`` -> ``3``)
before the function runs; a bad call raises :class:`ToolArgumentError` naming each problem.

Per-tool policy: ``timeout`` (seconds per attempt), ``max_concurrency`` (calls of this tool in
flight at once, across runs), ``retry`` (a :class:`ToolRetry`; tools without side effects get
:data:`DEFAULT_RETRY` unless told otherwise, tools with side effects are never retried unless given
one), ``side_effects`` (default True; False makes the tool eligible for streamed dispatch — an
agent starts it the moment its call is decoded — and for automatic retry), ``requires_approval``
(the run pauses at an interrupt until someone approves the call) and ``on_error`` (``"return"``:
an agent hands the error to the model as the call's result; ``"raise"``: the agent node fails).

A tool that declares a ``ctx`` parameter receives a :class:`ToolContext`, whose
``idempotency_key`` (``run_id:node_id:attempt[:call_id]``) stays the same when a run resumes after
a crash and re-runs the call, so tools with side effects can deduplicate.

Sync callables run in a worker thread, so they never block the event loop.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import random
import re
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, overload

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from agentflow.errors import AgentflowError
from agentflow.schemas import schema_error

log = logging.getLogger(__name__)


class ToolError(AgentflowError):
    """A tool is unknown, got bad arguments, or failed."""

    code = "tool_error"


class ToolArgumentError(ToolError):
    """The arguments of a call do not match the tool's parameters (never retried)."""

    code = "tool_arguments"


class ToolTimeoutError(ToolError):
    """A tool call ran past its timeout."""

    code = "tool_timeout"


@dataclass(frozen=True)
class ToolContext:
    """What a running tool knows about its call."""

    run_id: str
    node_id: str
    attempt: int
    call_id: str = ""

    @property
    def idempotency_key(self) -> str:
        """``run_id:node_id:attempt[:call_id]`` — stable across a crash and resume of the same attempt."""
        key = f"{self.run_id}:{self.node_id}:{self.attempt}"
        return f"{key}:{self.call_id}" if self.call_id else key


@dataclass(frozen=True)
class ToolRetry:
    """Retries of a failing tool call: exponential backoff with jitter. Argument errors are never retried."""

    max_attempts: int = 3
    initial_delay: float = 0.2
    backoff: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * random.random() - 1)))


DEFAULT_RETRY = ToolRetry()
"""The retry policy of tools without side effects that set none (3 attempts, 0.2 s then 0.4 s)."""
NO_RETRY = ToolRetry(max_attempts=1)

OnError = Literal["return", "raise"]
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class Tool:
    """A named callable plus what a model needs to call it, and how calls are policed."""

    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    side_effects: bool = True
    requires_approval: bool = False
    timeout: float | None = None
    max_concurrency: int | None = None
    retry: ToolRetry | None = None
    """None: :data:`DEFAULT_RETRY` without side effects, no retry with them."""
    on_error: OnError = "return"
    args_model: type[BaseModel] | None = field(default=None, repr=False)
    """The pydantic model arguments are validated with (from the signature); None: checked against
    ``parameters`` with jsonschema instead."""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ToolError(f"tool name {self.name!r} must be 1-64 letters, digits, '_' or '-' (OpenAI's rule for "
                            "function names)")
        if self.on_error not in ("return", "raise"):
            raise ToolError(f"tool {self.name!r}: on_error must be 'return' or 'raise', got {self.on_error!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ToolError(f"tool {self.name!r}: timeout must be positive, got {self.timeout!r}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ToolError(f"tool {self.name!r}: max_concurrency must be at least 1, got {self.max_concurrency!r}")

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.fn)

    @functools.cached_property
    def wants_context(self) -> bool:
        return "ctx" in self.signature.parameters

    @functools.cached_property
    def is_async(self) -> bool:
        call_method = None if inspect.isfunction(self.fn) else type(self.fn).__dict__.get("__call__")
        return inspect.iscoroutinefunction(self.fn) or inspect.iscoroutinefunction(call_method)

    @functools.cached_property
    def retry_policy(self) -> ToolRetry:
        if self.retry is not None:
            return self.retry
        return NO_RETRY if self.side_effects else DEFAULT_RETRY

    @functools.cached_property
    def _limiter(self) -> anyio.CapacityLimiter | None:
        return anyio.CapacityLimiter(self.max_concurrency) if self.max_concurrency else None

    @functools.cached_property
    def _plain_types(self) -> dict[str, type] | None:
        """Parameter types when every parameter is a bare ``int``, ``float``, ``str`` or ``bool`` (no
        constraints): arguments already of exactly those types pass pydantic unchanged, so they skip it."""
        if self.args_model is None:
            return None
        types: dict[str, type] = {}
        for name, info in self.args_model.model_fields.items():
            if info.annotation not in (int, float, str, bool) or info.metadata:
                return None
            types[name] = info.annotation  # type: ignore[assignment]
        return types

    @functools.cached_property
    def _good_keys(self) -> set[tuple[str, ...]]:
        """Argument name lists that passed :meth:`check_arguments`."""
        return set()

    @functools.cached_property
    def _keywords(self) -> tuple[frozenset[str], frozenset[str], bool]:
        """(accepted keyword names, required ones, takes **kwargs) — checked on every call, so precomputed."""
        params = self.signature.parameters.values()
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        accepted = frozenset(p.name for p in params if p.kind in kinds and p.name != "ctx")
        required = frozenset(p.name for p in params if p.kind in kinds and p.name != "ctx"
                             and p.default is inspect.Parameter.empty)
        return accepted, required, any(p.kind is p.VAR_KEYWORD for p in params)

    def check_arguments(self, kwargs: Mapping[str, Any]) -> None:
        """Raise ``ToolArgumentError`` naming missing or unexpected arguments."""
        accepted, required, open_ended = self._keywords
        missing = sorted(required - kwargs.keys())
        unexpected = [] if open_ended else sorted(kwargs.keys() - accepted)
        if missing or unexpected:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unexpected {', '.join(unexpected)}"] if unexpected else [])
            raise ToolArgumentError(f"tool {self.name!r}: bad arguments ({'; '.join(parts)}); "
                                    f"it takes {', '.join(sorted(accepted)) or 'none'}")

    def validate(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments the function gets: checked, and coerced by the pydantic model if there is one."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(f"tool {self.name!r}: arguments must be an object, got {type(arguments).__name__}")
        if "ctx" in arguments and self.wants_context:
            raise ToolArgumentError(f"tool {self.name!r}: 'ctx' is supplied by agentflow, not by the caller")
        keys = tuple(arguments)
        if keys not in self._good_keys:  # the name check runs once per distinct argument list (hot path)
            self.check_arguments(arguments)
            if len(self._good_keys) < 64:
                self._good_keys.add(keys)
        if self.args_model is None:
            if self.parameters.get("properties"):
                error = schema_error(self.parameters, dict(arguments))
                if error is not None:
                    raise ToolArgumentError(f"tool {self.name!r}: bad arguments at {error[0] or '/'}: {error[1]}")
            return dict(arguments)
        plain = self._plain_types
        if plain is not None and all(type(value) is plain.get(key) for key, value in arguments.items()):
            return dict(arguments)  # what pydantic would return: the names are checked, the types exact
        try:
            model = self.args_model.model_validate(dict(arguments))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '/'}: {err['msg']}" for err in e.errors())
            raise ToolArgumentError(f"tool {self.name!r}: bad arguments ({problems})") from None
        return {name: getattr(model, name) for name in type(model).model_fields}

    async def call(self, arguments: Mapping[str, Any], ctx: ToolContext | Callable[[], ToolContext]) -> Any:
        """Validate ``arguments`` and call the tool under its timeout, concurrency limit and retry
        policy. ``ctx`` may be a function that makes the context, called only for tools that take one."""
        kwargs = self.validate(arguments)
        if self.wants_context:
            kwargs["ctx"] = ctx if isinstance(ctx, ToolContext) else ctx()
        policy = self.retry_policy
        attempt = 1
        while True:
            try:
                return await self._call_once(kwargs)
            except ToolArgumentError:
                raise
            except Exception as exc:
                if attempt >= policy.max_attempts:
                    raise
                delay = policy.delay(attempt)
                log.info("tool %s failed (attempt %d of %d: %s: %s); retrying in %.2f s", self.name, attempt,
                         policy.max_attempts, type(exc).__name__, exc, delay)
                await anyio.sleep(delay)
                attempt += 1

    def _call_once(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """One attempt: the function under the tool's concurrency limit and timeout. An async function
        with neither (most tools) is its own coroutine, with no wrapper around it: a graph pays for
        each wrapper on every tool node."""
        if self.is_async and self._limiter is None and self.timeout is None:
            return self.fn(**kwargs)  # type: ignore[no-any-return]
        return self._limited(kwargs)

    async def _limited(self, kwargs: dict[str, Any]) -> Any:
        limiter = self._limiter
        if limiter is None:
            return await self._timed(kwargs)
        async with limiter:
            return await self._timed(kwargs)

    async def _timed(self, kwargs: dict[str, Any]) -> Any:
        if self.timeout is None:
            return await self._invoke(kwargs)
        try:
            with anyio.fail_after(self.timeout):
                return await self._invoke(kwargs)
        except TimeoutError:
            raise ToolTimeoutError(f"tool {self.name!r} timed out after {self.timeout:g} s") from None

    async def _invoke(self, kwargs: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.fn(**kwargs)
        return await anyio.to_thread.run_sync(lambda: self.fn(**kwargs), abandon_on_cancel=True)

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function format."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(*, name: str | None = None, description: str | None = None, side_effects: bool = True,
         requires_approval: bool = False, timeout: float | None = None, max_concurrency: int | None = None,
         retry: ToolRetry | None = None, on_error: OnError = "return") -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None,
         side_effects: bool = True, requires_approval: bool = False, timeout: float | None = None,
         max_concurrency: int | None = None, retry: ToolRetry | None = None,
         on_error: OnError = "return") -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Make a :class:`Tool` of a typed function: ``@tool`` or ``@tool(side_effects=False, timeout=10)``."""

    def make(f: Callable[..., Any]) -> Tool:
        if not callable(f):
            raise ToolError(f"@tool needs a function, got {f!r}")
        summary, arg_docs = _parse_docstring(inspect.getdoc(f) or "")
        model, parameters = _arguments_model(f, arg_docs)
        return Tool(name=name or f.__name__, fn=f, description=description if description is not None else summary,
                    parameters=parameters, side_effects=side_effects, requires_approval=requires_approval,
                    timeout=timeout, max_concurrency=max_concurrency, retry=retry, on_error=on_error,
                    args_model=model)

    return make(fn) if fn is not None else make


def as_tool(obj: Tool | Callable[..., Any], name: str | None = None) -> Tool:
    """A :class:`Tool` from a tool or a plain function (named after the function, described by its docstring)."""
    if isinstance(obj, Tool):
        return obj
    if not callable(obj):
        raise ToolError(f"not a tool or callable: {obj!r}")
    if name is None and getattr(obj, "__name__", "<lambda>") == "<lambda>":
        raise ToolError(f"{obj!r} has no usable name; give one with as_tool(fn, name=...)")
    return tool(name=name)(obj)


_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(the text before the first section, ``{parameter: description}`` from a Google-style ``Args:`` section)."""
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        heading = _SECTION.match(stripped)
        if heading and (line[:1] not in (" ", "\t")):
            section, current, indent = heading.group(1), None, None
            continue
        if section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters") and stripped:
            depth = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(stripped)
            if match and (indent is None or depth <= indent):
                indent = depth
                current = match.group(1).lstrip("*")
                args[current] = match.group(2).strip()
            elif current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    return "\n".join(summary).strip(), args


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def _arguments_model(fn: Callable[..., Any], docs: Mapping[str, str]) -> tuple[type[BaseModel] | None, dict[str, Any]]:
    """The pydantic model of ``fn``'s keyword parameters (``ctx`` left out) and its JSON Schema. A function
    taking ``**kwargs`` gets no model: any argument names are accepted, with an open schema."""
    signature = inspect.signature(fn)
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:  # unresolvable forward references: fall back to the raw annotations
        hints = dict(getattr(fn, "__annotations__", {}))
    fields: dict[str, Any] = {}
    open_ended = False
    for pname, param in signature.parameters.items():
        if pname == "ctx" or param.kind is param.VAR_POSITIONAL:
            continue
        if param.kind is param.VAR_KEYWORD:
            open_ended = True
            continue
        annotation = hints.get(pname, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        if docs.get(pname):
            fields[pname] = (annotation, Field(default, description=docs[pname]))
        else:
            fields[pname] = (annotation, default)
    if open_ended:
        props: dict[str, Any] = {k: {} for k in fields}
        return None, {"type": "object", "properties": props}
    model_name = "".join(part.title() for part in getattr(fn, "__name__", "tool").split("_")) + "Arguments"
    try:
        model = create_model(model_name, __base__=_Arguments, **fields)
        schema = model.model_json_schema()
    except Exception as e:  # a type pydantic cannot describe: names are still checked, types are not
        log.warning("tool %s: no parameters schema from its type hints (%s); arguments are checked by name only",
                    getattr(fn, "__qualname__", fn), e)
        required = [k for k, p in signature.parameters.items() if k in fields and p.default is inspect.Parameter.empty]
        return None, {"type": "object", "properties": {k: {} for k in fields}, "required": required}
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return model, schema


BUILTIN_TOOLS: dict[str, tuple[str, str]] = {
    "calculator": ("tools.calculator", "calculator"),
    "http_get": ("tools.http_request", "http_get"),
    "http_request": ("tools.http_request", "http_request"),
    "read_file": ("tools.files", "file_tools"),
    "list_files": ("tools.files", "file_tools"),
    "write_file": ("tools.files", "file_tools"),
}
"""Built-in tools a workflow may name without registering them: name -> (module, attribute). The
attribute is a Tool, or a function returning a list of Tools (one of which has the name)."""

BUILTIN_GROUPS: dict[str, tuple[str, ...]] = {"files": ("read_file", "list_files", "write_file"),
                                              "http": ("http_get", "http_request")}
"""Names that stand for several built-ins at once."""


BUILTIN_PACKAGE = Path(__file__).resolve().parent.parent / "tools"
"""agentflow's built-in tools, the top-level package ``tools`` installed beside ``agentflow``."""


def builtin_module(module_name: str) -> ModuleType:
    """``tools.<name>`` from agentflow's own ``tools`` package, never from a user's ``tools.py``.

    The convention of a ``tools.py`` beside the workflow puts a module of that name in the way: once its
    folder is on ``sys.path`` (its sibling modules must import), a plain ``import tools.calculator`` could
    find it first (an editable install's finder comes after ``sys.path``). So the package is imported
    from its own folder on first use, and a different module already imported as ``tools`` is an error
    that says so rather than a ``ModuleNotFoundError`` from deep inside."""
    package = sys.modules.get("tools")
    if package is None:
        spec = importlib.util.spec_from_file_location("tools", BUILTIN_PACKAGE / "__init__.py",
                                                      submodule_search_locations=[str(BUILTIN_PACKAGE)])
        if spec is None or spec.loader is None:  # pragma: no cover - the package ships with agentflow
            raise ToolError(f"agentflow's built-in tools are missing ({BUILTIN_PACKAGE})")
        package = importlib.util.module_from_spec(spec)
        sys.modules["tools"] = package
        try:
            spec.loader.exec_module(package)
        except BaseException:
            del sys.modules["tools"]
            raise
    elif [Path(p).resolve() for p in getattr(package, "__path__", ())] != [BUILTIN_PACKAGE]:
        where = getattr(package, "__file__", None) or package
        raise ToolError(f"agentflow's built-in tools cannot be imported: the module named 'tools' is {where}, not "
                        f"agentflow's ({BUILTIN_PACKAGE}); rename that module")
    return importlib.import_module(f"tools.{module_name.removeprefix('tools.')}")


def builtin_tool(name: str) -> Tool | None:
    """The built-in tool ``name`` (imported on first use), or None if there is none by that name."""
    entry = BUILTIN_TOOLS.get(name)
    if entry is None:
        return None
    module_name, attribute = entry
    value = getattr(builtin_module(module_name), attribute)
    if isinstance(value, Tool):
        return value
    for candidate in value():
        if candidate.name == name:
            return candidate  # type: ignore[no-any-return]
    return None


class ToolRegistry:
    """Tools by name, plus what names may refer to without being registered: built-ins
    (``calculator``, ``http_get``, ``files`` ...) and MCP servers (``"mcp:weather/*"``)."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] | Mapping[str, Tool | Callable[..., Any]] = (),
                 *, mcp: Any = None):
        self._tools: dict[str, Tool] = {}
        self.mcp = mcp
        """An ``tools.mcp.MCPManager`` that resolves ``mcp:SERVER/PATTERN`` references, or None."""
        items = tools.items() if isinstance(tools, Mapping) else ((None, t) for t in tools)
        for name, obj in items:
            self.add(obj, name=name)

    def add(self, obj: Tool | Callable[..., Any], name: str | None = None) -> Tool:
        tool = as_tool(obj, name)
        self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool:
        found = self._tools.get(name)
        if found is not None:
            return found
        builtin = builtin_tool(name)
        if builtin is not None:
            self._tools[name] = builtin
            return builtin
        known = ", ".join(sorted(set(self._tools) | set(BUILTIN_TOOLS))) or "none"
        raise ToolError(f"unknown tool {name!r} (registered or built in: {known})")

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is a registered tool, a built-in (or group of them), or an MCP reference to a
        configured server."""
        if not isinstance(name, str):
            return False
        if name in self._tools or name in BUILTIN_TOOLS or name in BUILTIN_GROUPS:
            return True
        if name.startswith("mcp:"):
            return self.mcp is not None and self.mcp.knows(name)
        return False

    def names(self) -> list[str]:
        """The registered tools' names (built-ins are not listed until used)."""
        return sorted(self._tools)

    def __iter__(self) -> Iterator[str]:
        """Every name a workflow may use: registered tools, built-ins and built-in groups (MCP references
        are checked by ``in``)."""
        return iter(sorted(set(self._tools) | set(BUILTIN_TOOLS) | set(BUILTIN_GROUPS)))

    def __len__(self) -> int:
        return len(set(self._tools) | set(BUILTIN_TOOLS) | set(BUILTIN_GROUPS))

    def merged(self, other: ToolRegistry) -> ToolRegistry:
        """A registry with this one's tools and ``other``'s (``other`` wins on a name clash)."""
        out = ToolRegistry(mcp=other.mcp or self.mcp)
        out._tools = {**self._tools, **other._tools}
        return out

    async def resolve(self, references: Iterable[str]) -> list[Tool]:
        """The tools a list of references names, in order and without repeats: tool names, built-in
        groups (``files``) and MCP references (``mcp:weather/*``, connecting to the server on first use)."""
        out: dict[str, Tool] = {}
        for ref in references:
            if ref.startswith("mcp:"):
                if self.mcp is None:
                    raise ToolError(f"tool reference {ref!r} needs an MCP server, but none is configured (pass "
                                    "mcp_servers= to the Runtime)")
                found = await self.mcp.tools_for(ref)
            elif ref in BUILTIN_GROUPS and ref not in self._tools:
                found = [self.get(name) for name in BUILTIN_GROUPS[ref]]
            else:
                found = [self.get(ref)]
            for t in found:
                out.setdefault(t.name, t)
        return list(out.values())


__all__ = ["BUILTIN_GROUPS", "BUILTIN_TOOLS", "DEFAULT_RETRY", "Tool", "ToolArgumentError", "ToolContext",
           "ToolError", "ToolRegistry", "ToolRetry", "ToolTimeoutError", "as_tool", "builtin_tool", "tool"]
