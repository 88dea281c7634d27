"""Which event loop the CLI runs on: uvloop when installed, AGENTFLOW_LOOP to choose, clear errors."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.loop import choose_loop, run

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _loop_module_and_a_run() -> tuple[str, str]:
    async def double(x: int) -> int:
        return 2 * x

    spec = WorkflowSpec.model_validate({"name": "one", "state": {"x": {"type": "integer", "default": 0}},
            "nodes": [{"id": "d", "kind": "tool", "tool": "double", "args": {"x": "{{ input.x }}"}, "writes": "x"}],
            "input": {"type": "object", "properties": {"x": {"type": "integer"}}}})
    async with Runtime(tools=[double], store=":memory:") as rt:
        record = await rt.run(spec, {"x": 21})
    return type(asyncio.get_running_loop()).__module__, f"{record.status}:{record.output}"


def test_auto_prefers_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFLOW_LOOP", raising=False)
    assert choose_loop() == ("uvloop" if HAS_UVLOOP else "asyncio")


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_a_workflow_runs_on_the_chosen_loop(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "uvloop" and not HAS_UVLOOP:
        pytest.skip("uvloop is not installed")
    monkeypatch.setenv("AGENTFLOW_LOOP", name)
    module, outcome = run(_loop_module_and_a_run)
    assert module.startswith("uvloop") == (name == "uvloop"), module
    assert outcome == "completed:{'x': 42}"


def test_bad_choices_fail_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFLOW_LOOP", "tokio")
    with pytest.raises(ValueError, match="AGENTFLOW_LOOP must be 'auto', 'uvloop' or 'asyncio', not 'tokio'"):
        choose_loop()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert choose_loop("auto") == "asyncio"
    with pytest.raises(RuntimeError, match="uvloop is not installed"):
        choose_loop("uvloop")


@pytest.mark.parametrize("command", [
    ["serve", "--model", "none", "--store", "{tmp}/runs.db", "--port", "1"],
    ["run", "workflows/invoice_extraction.yaml", "--input", "{{}}", "--no-store"],
])
def test_the_cli_refuses_an_unknown_loop(command: list[str], tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "AGENTFLOW_LOOP": "tokio"}
    done = subprocess.run([sys.executable, "-m", "agentflow.cli", *(arg.format(tmp=tmp_path) for arg in command)],
                          env=env, capture_output=True, text=True, timeout=60, cwd=root)
    assert done.returncode == 2, done.stderr
    assert "AGENTFLOW_LOOP must be 'auto', 'uvloop' or 'asyncio', not 'tokio'" in done.stderr
    assert "Traceback" not in done.stderr
