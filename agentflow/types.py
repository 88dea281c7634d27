"""The shared vocabulary of ``agentflow``: aliases used across the DSL, runtime, backends and server."""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any JSON-serialisable value (dict, list, str, int, float, bool, None)."""

JSONObject: TypeAlias = dict[str, Any]
"""A JSON object, e.g. a JSON Schema or a run's input."""

Namespace: TypeAlias = dict[str, Any]
"""The variables a template or condition sees: ``input``, ``state``, node outputs, ``item`` ..."""

__all__ = ["JSON", "JSONObject", "Namespace"]
