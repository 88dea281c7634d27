"""A node's checkpoint is queued, and its successors prepare while it commits; but no tool is called
before every checkpoint the run queued is in the database, and a checkpoint that fails to commit
stops the run. Real SQLite files; the failure comes from a trigger in the database itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.store import SQLiteStore
from agentflow.tool import ToolContext

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def chain(n: int) -> WorkflowSpec:
    nodes = [{"id": f"n{i}", "kind": "tool", "tool": "step", "args": {"i": i}} for i in range(n)]
    edges = [{"from": f"n{i}", "to": f"n{i + 1}"} for i in range(n - 1)]
    return WorkflowSpec.model_validate({"name": f"chain{n}", "nodes": nodes, "edges": edges})


def stored_paths(db: Path, run_id: str) -> set[str]:
    with sqlite3.connect(db) as conn:  # a connection of its own, as another process would see the file
        return {row[0] for row in conn.execute("SELECT path FROM nodes WHERE run_id = ?", (run_id,))}


async def test_no_tool_runs_before_its_predecessors_checkpoints_are_committed(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    seen: dict[int, set[str]] = {}

    async def step(i: int, ctx: ToolContext) -> int:
        seen[i] = stored_paths(db, ctx.run_id)
        return i

    async with Runtime(tools=[step], store=db) as rt:
        record = await rt.run(chain(12))
    assert record.status == "completed"
    for i in range(12):
        before = {f"n{j}" for j in range(i)}
        assert seen[i] >= before, f"n{i} ran before the checkpoints of {sorted(before - seen[i])} were committed"


FAIL_SECOND = """
CREATE TRIGGER refuse_n1 BEFORE INSERT ON nodes WHEN NEW.path = 'n1'
BEGIN SELECT RAISE(ABORT, 'the disk said no'); END;
"""


async def test_a_checkpoint_that_fails_to_commit_stops_the_run_before_the_next_tool(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    SQLiteStore(db).close_sync()  # create the schema, then arm the database against n1's checkpoint
    with sqlite3.connect(db) as conn:
        conn.executescript(FAIL_SECOND)
    called: list[int] = []

    async def step(i: int) -> int:
        called.append(i)
        await anyio.sleep(0)
        return i

    async with Runtime(tools=[step], store=db) as rt:
        with anyio.fail_after(20):
            record = await rt.run(chain(4))
        events = [e.event async for e in rt.events(record.run_id)]  # type: ignore[attr-defined]
    assert record.status == "failed"
    assert record.error is not None and "not stored" in record.error and "the disk said no" in record.error
    assert called == [0, 1], "n2 must not run once n1's checkpoint is lost"
    assert events[-1] == "run.failed"


async def test_a_lost_checkpoint_is_not_taken_for_a_node_error_to_retry_or_route(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    SQLiteStore(db).close_sync()
    with sqlite3.connect(db) as conn:
        conn.executescript(FAIL_SECOND)
    attempts: list[Any] = []

    async def step(i: int, ctx: ToolContext) -> int:
        attempts.append((i, ctx.attempt))
        return i

    spec = chain(3).model_dump(by_alias=True, exclude_none=True)
    spec["nodes"][2]["retry"] = {"max_attempts": 3, "initial_delay": 0.01}
    spec["nodes"][2]["on_error"] = "handler"
    spec["nodes"].append({"id": "handler", "kind": "tool", "tool": "step", "args": {"i": 99}})
    async with Runtime(tools=[step], store=db) as rt:
        with anyio.fail_after(20):
            record = await rt.run(WorkflowSpec.model_validate(spec))
    assert record.status == "failed" and attempts == [(0, 1), (1, 1)]
