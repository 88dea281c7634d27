"""agentflow's in-process inference engine.

    from engine import Engine, SamplingParams
    engine = Engine("demo")
    print(engine.generate("Hello", SamplingParams(max_new_tokens=16))[0].text)

The engine imports nothing from ``agentflow``.
"""

from engine.async_engine import AsyncEngine
from engine.config import EngineConfig
from engine.engine import Engine, EngineStats
from engine.errors import (
    EngineClosedError,
    EngineError,
    InvalidRequestError,
    ModelLoadError,
    RequestNotFoundError,
    UnsupportedArchitectureError,
)
from engine.request import Delta, Output, Request
from engine.sampling import SamplingParams, TokenConstraint

__all__ = [
    "AsyncEngine",
    "Delta",
    "Engine",
    "EngineClosedError",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "InvalidRequestError",
    "ModelLoadError",
    "Output",
    "Request",
    "RequestNotFoundError",
    "SamplingParams",
    "TokenConstraint",
    "UnsupportedArchitectureError",
]
