"""Tools that require approval pause the run at an interrupt; approving runs the call, denying tells the
model. The agent's turns and tool results are recorded, so an approval given after a restart replays
them instead of asking the model again. Real demo engine, real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import Field

from agentflow import LocalEngine, Runtime, Workflow
from agentflow.tool import Tool, tool
from engine import AsyncEngine, Engine

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def llm(demo_path: Any) -> Iterator[LocalEngine]:
    engine = AsyncEngine(engine=Engine("demo", max_kv_tokens=8192))
    yield LocalEngine(engine)
    engine.shutdown()


def deleter(log: list[str]) -> Tool:
    @tool(name="delete_file", requires_approval=True)
    def delete_file(path: Annotated[str, Field(max_length=16)]) -> str:
        """Delete a file."""
        log.append(path)
        return f"deleted {path}"

    return delete_file


def workflow(t: Tool) -> Workflow:
    wf = Workflow("cleanup")
    wf.agent("clean", "Delete the temporary files.", tools=[t], tool_choice="delete_file", max_steps=2,
             temperature=0.0, max_tokens=48)
    return wf


def names(events: list[Any]) -> list[str]:
    return [e.event for e in events]


@pytest.mark.slow
async def test_approved_and_denied_calls(llm: LocalEngine) -> None:
    deleted: list[str] = []
    t = deleter(deleted)
    async with Runtime(llm=llm, store=":memory:") as rt:
        paused = await rt.run(workflow(t))
        assert paused.status == "interrupted"
        assert paused.interrupt is not None and paused.interrupt["tool"] == "delete_file"
        path = paused.interrupt["arguments"]["path"]
        assert "delete_file" in paused.interrupt["prompt"] and deleted == []
        with pytest.raises(Exception, match="approval"):  # not a valid approval value
            await rt.resume(paused.run_id, {"approve": "yes"})
        await rt.resume(paused.run_id, True)
        done = await rt.wait(paused.run_id)
        assert done.status == "completed" and deleted == [path]

        denied = await rt.run(workflow(t))
        await rt.resume(denied.run_id, {"approved": False, "reason": "not today"})
        finished = await rt.wait(denied.run_id)
        events = [e async for e in rt.events(denied.run_id)]
    assert finished.status == "completed" and deleted == [path]  # the denied call never ran
    assert "tool.call" not in names(events) and names(events).count("run.interrupted") == 1


@pytest.mark.slow
async def test_an_approval_after_a_restart_replays_the_recorded_turn(llm: LocalEngine, tmp_path: Path) -> None:
    deleted: list[str] = []
    store = tmp_path / "runs.db"
    async with Runtime(llm=llm, store=store) as rt:
        paused = await rt.run(workflow(deleter(deleted)))
        assert paused.status == "interrupted"
        asked = paused.interrupt
    # a new process: the run is only in the store
    async with Runtime(llm=llm, store=store, workflows=[workflow(deleter(deleted))]) as rt:
        await rt.resume(paused.run_id, True)
        done = await rt.wait(paused.run_id)
        events = [e async for e in rt.events(paused.run_id)]
    assert done.status == "completed", done.error
    assert deleted == [asked["arguments"]["path"]]  # the call the model made before the restart, run once
    usage = [e for e in events if e.event == "llm.usage"]
    assert len(usage) == 2  # the first turn was replayed from the store, not generated again; then the answer


async def test_a_tool_node_that_requires_approval_waits_for_it() -> None:
    ran: list[str] = []

    @tool(requires_approval=True)
    def wire_money(amount: int) -> str:
        """Send money."""
        ran.append(str(amount))
        return "sent"

    wf = Workflow("pay")
    wf.tool("pay", wire_money, args={"amount": 5})
    async with Runtime(store=":memory:") as rt:
        paused = await rt.run(wf)
        assert paused.status == "interrupted" and ran == []
        assert paused.interrupt is not None and paused.interrupt["arguments"] == {"amount": 5}
        await rt.resume(paused.run_id, {"approved": True})
        assert (await rt.wait(paused.run_id)).status == "completed" and ran == ["5"]

        refused = await rt.run(wf)
        await rt.resume(refused.run_id, False)
        record = await rt.wait(refused.run_id)
    assert record.status == "failed" and "not approved" in (record.error or "") and ran == ["5"]
