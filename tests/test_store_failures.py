"""A store that fails (a full disk) costs the runs whose writes failed, never the runtime or other runs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.errors import StoreError
from agentflow.runtime.events import EventBase, RunCompleted
from agentflow.runtime.store import MemoryStore, NodeRecord, RunNotFoundError, SQLiteStore

ECHO = WorkflowSpec.model_validate(yaml.safe_load("""
name: echo
input: {type: object, properties: {x: {type: integer}}}
nodes: [{id: a, kind: tool, tool: echo, args: {x: "{{ input.x }}"}}]
output: a
"""))


def echo(x: int) -> int:
    return x


class DiskFullAtTheEnd(MemoryStore):
    """A real MemoryStore whose writes of one run's terminal event fail, as on a full disk."""

    def __init__(self, doomed: str) -> None:
        super().__init__()
        self.doomed = doomed

    async def append(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                     run: dict[str, Any] | None = None) -> None:
        if run_id == self.doomed and any(isinstance(e, RunCompleted) for e in events):
            raise StoreError("run store commit failed: OperationalError: database or disk is full")
        await super().append(run_id, events, nodes, run)


def test_a_run_whose_end_cannot_be_stored_does_not_take_the_runtime_down(caplog: pytest.LogCaptureFixture) -> None:
    store = DiskFullAtTheEnd("doomed")

    async def scenario() -> None:
        async with Runtime(store=store, workflows=[ECHO], tools=[echo], recover=False) as rt:
            await rt.start("echo", {"x": 1}, run_id="doomed")
            other = await rt.run("echo", {"x": 2}, run_id="other")
            assert (other.status, other.output) == ("completed", 2)
            doomed = await rt.wait("doomed")
            assert doomed.status == "running"  # its end was lost: it resumes from its checkpoint next time
            later = await rt.run("echo", {"x": 3})  # the runtime still starts and finishes runs
            assert later.output == 3

    anyio.run(scenario)
    assert "run doomed: recording its end (completed) failed" in caplog.text


def test_a_failed_write_nobody_awaited_is_raised_to_writers_not_to_readers(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "runs.db")
        try:
            store.append_nowait("ghost", run={"status": "running"})  # no such run: this write fails
            assert await store.get_run("ghost") is None  # an API client reading is not the one to tell
            assert await store.events("ghost") == []
            with pytest.raises(RunNotFoundError):
                await store.flush()
        finally:
            await store.aclose()

    anyio.run(scenario)
