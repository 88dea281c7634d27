"""agentflow's in-process inference engine.

    from engine import Engine, SamplingParams
    engine = Engine("demo")
    print(engine.generate("Hello", SamplingParams(max_new_tokens=16))[0].text)

The engine imports nothing from ``agentflow``. Names are resolved lazily, so importing a
bookkeeping module (``engine.scheduler``, ``engine.radix_cache``) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.async_engine import AsyncEngine
    from engine.config import EngineConfig
    from engine.engine import Engine
    from engine.errors import (
        ConstraintViolationError,
        EngineClosedError,
        EngineError,
        InvalidRequestError,
        ModelLoadError,
        RequestNotFoundError,
        UnsupportedArchitectureError,
    )
    from engine.request import Delta, Output, Request
    from engine.sampling import ForcingConstraint, TokenConstraint
    from engine.sampling_params import SamplingParams
    from engine.stats import EngineStats

_EXPORTS = {
    "AsyncEngine": "engine.async_engine",
    "ConstraintViolationError": "engine.errors",
    "Delta": "engine.request",
    "Engine": "engine.engine",
    "EngineClosedError": "engine.errors",
    "EngineConfig": "engine.config",
    "EngineError": "engine.errors",
    "EngineStats": "engine.stats",
    "ForcingConstraint": "engine.sampling",
    "InvalidRequestError": "engine.errors",
    "ModelLoadError": "engine.errors",
    "Output": "engine.request",
    "Request": "engine.request",
    "RequestNotFoundError": "engine.errors",
    "SamplingParams": "engine.sampling_params",
    "TokenConstraint": "engine.sampling",
    "UnsupportedArchitectureError": "engine.errors",
}

__all__ = [
    "AsyncEngine",
    "ConstraintViolationError",
    "Delta",
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "ForcingConstraint",
    "InvalidRequestError",
    "ModelLoadError",
    "Output",
    "Request",
    "RequestNotFoundError",
    "SamplingParams",
    "TokenConstraint",
    "UnsupportedArchitectureError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
