"""Concurrent resumes of one interrupt: exactly one is accepted, and its value is the one the run goes on with.

``Runtime.resume`` checks the interrupt, then awaits the store before it delivers. Two resumes used to both pass
the check (each told it succeeded while the last delivered value won), and two resumes of a run waiting in the
store could each load and launch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import RunStateError, Runtime
from tests.specs import TWO_ASKS

pytestmark = pytest.mark.anyio

APPROVE = """
name: approve
nodes:
  - {id: ask, kind: interrupt, prompt: "Approve?", schema: {type: object, required: [by]}}
  - {id: final, kind: tool, tool: record, args: {value: "{{ ask.by }}"}}
edges: [{from: ask, to: final}]
output: final
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _race(rt: Runtime, run_id: str, n: int) -> tuple[list[int], list[BaseException]]:
    accepted: list[int] = []
    refused: list[BaseException] = []

    async def resume(i: int) -> None:
        try:
            await rt.resume(run_id, {"by": i})
        except RunStateError as e:
            refused.append(e)
        else:
            accepted.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(resume, i)
    return accepted, refused


@pytest.mark.parametrize("live", [True, False], ids=["live", "from-store"])
async def test_one_of_concurrent_resumes_wins(tmp_path: Path, live: bool) -> None:
    calls: list[Any] = []

    def record(value: Any) -> Any:
        calls.append(value)
        return value

    spec = WorkflowSpec.model_validate(yaml.safe_load(APPROVE))
    db = tmp_path / "runs.db"
    async with Runtime(tools=[record], store=db) as rt:
        run_id = await rt.start(spec)
        assert (await rt.wait(run_id)).status == "interrupted"
        if live:
            accepted, refused = await _race(rt, run_id, 6)
            done = await rt.wait(run_id)
    if not live:  # a new process: the run waits in the store only
        async with Runtime(tools=[record], store=db, workflows=[spec]) as rt:
            accepted, refused = await _race(rt, run_id, 6)
            done = await rt.wait(run_id)
    assert len(accepted) == 1 and len(refused) == 5
    assert all("resumed by another request" in str(e) or "not waiting" in str(e) or "is running" in str(e)
               for e in refused)
    assert done.status == "completed" and done.output == accepted[0]
    assert calls == [accepted[0]]  # the run went on once, with the accepted value




@pytest.mark.parametrize("restart", [False, True], ids=["live", "after-restart"])
async def test_a_run_waiting_at_two_interrupts_still_waits_after_one_answer(tmp_path: Path, restart: bool) -> None:
    # it used to be reported `running` with no interrupt while the second branch still waited
    spec = WorkflowSpec.model_validate(yaml.safe_load(TWO_ASKS))
    store = tmp_path / "runs.db"
    async with Runtime(store=store, workflows=[spec]) as rt:
        first = await rt.run("two_asks", {}, run_id="r")
        assert first.status == "interrupted" and first.interrupt is not None
        asked = first.interrupt["node"]
        if not restart:
            await rt.resume("r", "yes", node=asked)
            second = await rt.wait("r")
            assert second.status == "interrupted" and second.interrupt is not None
            assert second.interrupt["node"] != asked and second.interrupt["node"].startswith("both.")
            assert [r.run_id for r in (await rt.store.list_runs(status="interrupted"))[0]] == ["r"]
            await rt.resume("r", "also", node=second.interrupt["node"])
            done = await rt.wait("r")
            assert done.status == "completed"
            assert sorted(done.output.values()) == ["also", "yes"]  # type: ignore[union-attr]
            return
    async with Runtime(store=store, workflows=[spec]) as rt:  # the stored run names one interrupt at a time
        await rt.resume("r", "yes")
        second = await rt.wait("r")
        assert second.status == "interrupted" and second.interrupt is not None
        assert second.interrupt["node"] != asked
        await rt.resume("r", "also")
        done = await rt.wait("r")
        assert done.status == "completed" and sorted(done.output.values()) == ["also", "yes"]  # type: ignore[union-attr]
