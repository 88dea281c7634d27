"""The public surface: curated ``__all__`` lists, and the layering rule (engine never imports agentflow)."""

from __future__ import annotations

import subprocess
import sys

import agentflow
import engine


def test_engine_public_names() -> None:
    from engine import AsyncEngine, Engine, Request, SamplingParams  # the names later layers rely on

    assert {"Engine", "AsyncEngine", "SamplingParams", "Request", "Output", "Delta"} <= set(engine.__all__)
    assert all(getattr(engine, name) is not None for name in engine.__all__)
    assert engine.__all__ == sorted(engine.__all__)
    assert Engine and AsyncEngine and Request and SamplingParams


def test_agentflow_public_names() -> None:
    assert all(hasattr(agentflow, name) for name in agentflow.__all__)


def test_engine_does_not_import_agentflow() -> None:
    code = "import sys, engine, engine.engine, engine.async_engine; print('agentflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_bookkeeping_modules_import_no_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "import engine.scheduler, engine.radix_cache, engine.sequence  # noqa\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "ok", out.stderr
