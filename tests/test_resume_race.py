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


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5, 8])
async def test_a_cancel_racing_a_resume_leaves_the_run_cancelled_for_good(tmp_path: Path, yields: int) -> None:
    """A resume that came in while a cancel was recording the run's end used to write `running` after it: the run
    read `running` for good with `run.cancelled` last in its log, and the next process recovered it."""
    spec = WorkflowSpec.model_validate(yaml.safe_load(APPROVE))
    db = tmp_path / "runs.db"
    outcomes: dict[str, str] = {}

    def record(value: Any) -> Any:
        return value

    async with Runtime(tools=[record], store=db) as rt:
        for i in range(4):
            run_id = await rt.start(spec, run_id=f"r{i}")
            assert (await rt.wait(run_id)).status == "interrupted"

            async def resume(run_id: str = run_id) -> None:
                for _ in range(yields):
                    await anyio.sleep(0)
                try:
                    await rt.resume(run_id, {"by": "me"})
                except RunStateError:
                    outcomes[run_id] = "refused"
                else:
                    outcomes[run_id] = "accepted"

            async with anyio.create_task_group() as tg:
                tg.start_soon(rt.cancel, run_id)
                tg.start_soon(resume)
            done = await rt.wait(run_id)
            events = [e async for e in rt.events(run_id)]
            assert done.status == "cancelled" == events[-1].event.removeprefix("run."), (yields, outcomes)
    async with Runtime(tools=[record], store=db, workflows=[spec]) as rt:  # recovers what is unfinished
        assert {(await rt.get_run(f"r{i}")).status for i in range(4)} == {"cancelled"}


@pytest.mark.parametrize("then", ["resume", "cancel"])
async def test_a_run_paused_in_the_store_is_followed_until_it_goes_on(tmp_path: Path, then: str) -> None:
    """After a restart a paused run is in the store only: its event stream used to end after the replay, with no
    terminal event, so followers (the SDK, the web UI) took it for a dropped connection."""
    spec = WorkflowSpec.model_validate(yaml.safe_load(APPROVE))
    db = tmp_path / "runs.db"

    def record(value: Any) -> Any:
        return value

    async with Runtime(tools=[record], store=db) as rt:
        run_id = await rt.start(spec)
        assert (await rt.wait(run_id)).status == "interrupted"
    async with Runtime(tools=[record], store=db, workflows=[spec]) as rt:
        assert not rt.executing(run_id)
        seen: list[str] = []

        async def follow() -> None:
            seen.extend([e.event async for e in rt.events(run_id)])

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            await anyio.sleep(0.2)
            assert seen == []  # still following: nothing new yet, and not ended
            if then == "resume":
                await rt.resume(run_id, {"by": "me"})
            else:
                await rt.cancel(run_id)
        last = {"resume": "run.completed", "cancel": "run.cancelled"}[then]
        assert seen[-1] == last and "run.interrupted" in seen
