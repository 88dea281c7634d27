"""A run's state: initial values from the declarations, and writes combined by each key's reducer.

A node's writes are *staged* first (computed on a copy of the keys they touch) and committed only
when every one of them is valid, so a write that fails (``merge`` of a non-mapping) fails its node
and leaves the state as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from agentflow.dsl.ir import StateKey, WorkflowSpec
from agentflow.runtime.errors import NodeError


def initial_state(spec: WorkflowSpec) -> dict[str, Any]:
    return {key: copy.deepcopy(declared.default) if declared.default is not None else _empty(declared)
            for key, declared in spec.state.items()}


def _empty(declared: StateKey) -> Any:
    if declared.reducer == "append" or declared.type == "array":
        return []
    if declared.reducer == "merge" or declared.type == "object":
        return {}
    return None


def apply_write(spec: WorkflowSpec, state: dict[str, Any], key: str, value: Any) -> None:
    """Apply one write to ``state`` with the key's reducer (undeclared keys are replaced). Builds new
    lists and mappings rather than changing the current ones in place."""
    declared = spec.state.get(key)
    reducer = declared.reducer if declared else "replace"
    if reducer == "append":
        current = state.get(key) or []
        state[key] = [*current, *value] if isinstance(value, list) else [*current, value]
    elif reducer == "merge":
        if not isinstance(value, dict):
            raise NodeError(f"state key {key!r} merges dicts, got {type(value).__name__}")
        state[key] = {**(state.get(key) or {}), **value}
    else:
        state[key] = value


def stage_writes(spec: WorkflowSpec, state: dict[str, Any], writes: Sequence[tuple[str, Any]],
                 node: str) -> dict[str, Any]:
    """The new values of the keys ``writes`` touch, for ``state.update``; ``state`` is not changed.
    A write that does not fit its reducer raises ``NodeError`` naming ``node`` and the key."""
    staged = {key: state[key] for key, _ in writes if key in state}
    for key, value in writes:
        try:
            apply_write(spec, staged, key, value)
        except NodeError as exc:
            raise NodeError(f"`writes` {key}: {exc}", node=node) from None
    return staged


__all__ = ["apply_write", "initial_state", "stage_writes"]
