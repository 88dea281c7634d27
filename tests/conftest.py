"""Shared fixtures: tiny random-weight checkpoints written by transformers itself, and the demo
model built into a per-session cache directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import save_hf_model


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the demo model into a throwaway cache (subprocesses inherit it)."""
    if "AGENTFLOW_CACHE_DIR" not in os.environ:
        os.environ["AGENTFLOW_CACHE_DIR"] = str(tmp_path_factory.mktemp("agentflow-cache"))


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
