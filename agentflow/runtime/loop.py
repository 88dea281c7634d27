"""Which event loop runs the orchestrator: uvloop where it is installed, else asyncio's own.

uvloop (libuv) makes the loop's own work cheaper: task steps, readiness of sockets and of the run
store's reply pipe, ``call_soon_threadsafe`` from worker threads. ``AGENTFLOW_LOOP=asyncio`` chooses the standard loop
(for debugging, or to compare); ``AGENTFLOW_LOOP=uvloop`` requires uvloop and fails clearly without it.
``agentflow serve`` passes the same choice to uvicorn.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import anyio

log = logging.getLogger(__name__)

T = TypeVar("T")
LoopName = Literal["uvloop", "asyncio"]
ENV = "AGENTFLOW_LOOP"


def choose_loop(requested: str | None = None) -> LoopName:
    """The loop to use: ``requested``, else ``$AGENTFLOW_LOOP``, else uvloop if importable."""
    name = (requested or os.environ.get(ENV) or "auto").strip().lower()
    available = importlib.util.find_spec("uvloop") is not None
    if name == "auto":
        return "uvloop" if available else "asyncio"
    if name == "asyncio":
        return "asyncio"
    if name == "uvloop":
        if not available:
            raise RuntimeError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)")
        return "uvloop"
    raise ValueError(f"{ENV} must be 'auto', 'uvloop' or 'asyncio', not {name!r}")


def run(fn: Callable[..., Awaitable[T]], *args: Any, loop: str | None = None) -> T:
    """``anyio.run(fn, *args)`` on the loop :func:`choose_loop` picks."""
    chosen = choose_loop(loop)
    log.debug("event loop: %s", chosen)
    return anyio.run(fn, *args, backend="asyncio", backend_options={"use_uvloop": chosen == "uvloop"})
