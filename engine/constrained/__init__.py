"""Constrained decoding: declare the output's shape (``ConstraintSpec``), and the engine compiles
it with llguidance into a per-request matcher that masks the sampler token by token.

    from engine.constrained import ConstraintSpec, ToolCallSpec
    Request(prompt=..., constraint=ConstraintSpec(json_schema={"type": "object", ...}))
    Request(messages=..., tools=tools, constraint=ConstraintSpec(tool_calls=ToolCallSpec(tools, "required")))

Modules: ``spec`` (the declarations, plain data), ``compiler`` (grammars, the compile cache,
submit-time errors), ``matcher`` (the per-request matcher the sampler consults), ``toolcall``
(tool-call grammars in the model's native format, parsing and streaming), ``schema_check``
(metaschema validation and locating what llguidance refused), ``bitmask`` (applying masks to logits).

Names resolve lazily: ``ConstraintSpec`` and ``ToolCallSpec`` are plain data, and importing them
loads neither torch nor llguidance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.constrained.compiler import CompileCache, compile_cache, compile_constraint, llg_tokenizer
    from engine.constrained.matcher import GrammarConstraint
    from engine.constrained.spec import ConstraintSpec, ToolCallSpec
    from engine.constrained.toolcall import ToolCallStream, grammar_for_tool_calls, parse_tool_calls

_EXPORTS = {
    "CompileCache": "engine.constrained.compiler",
    "ConstraintSpec": "engine.constrained.spec",
    "GrammarConstraint": "engine.constrained.matcher",
    "ToolCallSpec": "engine.constrained.spec",
    "ToolCallStream": "engine.constrained.toolcall",
    "compile_cache": "engine.constrained.compiler",
    "compile_constraint": "engine.constrained.compiler",
    "grammar_for_tool_calls": "engine.constrained.toolcall",
    "llg_tokenizer": "engine.constrained.compiler",
    "parse_tool_calls": "engine.constrained.toolcall",
}

__all__ = ["CompileCache", "ConstraintSpec", "GrammarConstraint", "ToolCallSpec", "ToolCallStream", "compile_cache",
           "compile_constraint", "grammar_for_tool_calls", "llg_tokenizer", "parse_tool_calls"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.constrained' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
