"""Which argument names a tool node may give: read from the tool itself, as ``Tool.validate`` reads them when
it is called. The validator checks a tool node's ``args`` with these when it knows the tools (a
``ToolRegistry``, or a mapping name -> ``Tool``); values are templates, rendered at run time, so only names."""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping

from agentflow.tool import BUILTIN_GROUPS, Tool, ToolError, ToolRegistry


def argument_names(tool: Tool) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(the argument names ``tool`` accepts, None: any; the ones it requires), as ``Tool.validate`` checks them:
    by the function's signature, and by the parameters schema when no model is made from the signature."""
    try:
        params = list(tool.signature.parameters.values())
    except (TypeError, ValueError):  # no signature to read: the call checks what it can
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = [p for p in params if p.kind in kinds and p.name != "ctx"]
    accepted: frozenset[str] | None = frozenset(p.name for p in named)
    required = {p.name for p in named if p.default is inspect.Parameter.empty}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = None
    schema = tool.parameters
    if tool.args_model is None and isinstance(schema.get("properties"), dict) and schema["properties"]:
        listed = schema.get("required")
        required |= {r for r in listed if isinstance(r, str)} if isinstance(listed, list) else set()
        if accepted is None and schema.get("additionalProperties") is False:
            accepted = frozenset(schema["properties"])
    return accepted, frozenset(required)


def tool_of(tools: Collection[str] | None, name: str) -> Tool | None:
    """The tool ``name`` when ``tools`` can give it (a registry, or a mapping name -> Tool), else None."""
    if isinstance(tools, ToolRegistry):
        if name not in tools or name in BUILTIN_GROUPS or name.startswith("mcp:"):
            return None
        try:
            return tools.get(name)
        except (ToolError, ImportError):
            return None
    if isinstance(tools, Mapping):
        found = tools.get(name)
        return found if isinstance(found, Tool) else None
    return None


__all__ = ["argument_names", "tool_of"]
