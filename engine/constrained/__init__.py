"""Constrained decoding: declare the output's shape (``ConstraintSpec``), and the engine compiles
it with llguidance into a per-request matcher that masks the sampler token by token.

    from engine.constrained import ConstraintSpec
    Request(prompt=..., constraint=ConstraintSpec(json_schema={"type": "object", ...}))

Names resolve lazily: ``ConstraintSpec`` is plain data and importing it loads neither torch nor
llguidance.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.constrained.compiler import compile_constraint, llg_tokenizer
    from engine.constrained.matcher import GrammarConstraint
    from engine.constrained.spec import ConstraintSpec

_EXPORTS = {
    "ConstraintSpec": "engine.constrained.spec",
    "GrammarConstraint": "engine.constrained.matcher",
    "compile_constraint": "engine.constrained.compiler",
    "llg_tokenizer": "engine.constrained.compiler",
}

__all__ = ["ConstraintSpec", "GrammarConstraint", "compile_constraint", "llg_tokenizer"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.constrained' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
