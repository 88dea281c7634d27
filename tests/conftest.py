"""Shared fixtures: tiny random-weight checkpoints written by transformers itself, and the demo
model built into a per-session cache directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import background
from tests.helpers import save_hf_model

_OWN_CACHE: list[str] = []


def pytest_sessionstart(session: pytest.Session) -> None:
    """Build the demo model into a throwaway cache (subprocesses, background jobs included, inherit it)."""
    if "AGENTFLOW_CACHE_DIR" not in os.environ:
        os.environ["AGENTFLOW_CACHE_DIR"] = tempfile.mkdtemp(prefix="agentflow-test-cache-")
        _OWN_CACHE.append(os.environ["AGENTFLOW_CACHE_DIR"])


def pytest_collection_finish(session: pytest.Session) -> None:
    modules = [item.nodeid.split("::", 1)[0] for item in session.items]
    background.start(list(dict.fromkeys(modules)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    background.stop()
    for path in _OWN_CACHE:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("tiny-llama")
    return path, save_hf_model("llama", path)


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Path, object]]:
    def make(arch: str, **kwargs: object) -> tuple[Path, object]:
        path = tmp_path_factory.mktemp(f"ckpt-{arch}")
        return path, save_hf_model(arch, path, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def demo_path() -> Path:
    from engine.demo import demo_path

    return demo_path()
