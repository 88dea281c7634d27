"""The runtime's task group: a native one under asyncio, anyio's under trio; the same behaviour in both.

The orchestrator tests run on asyncio; the scenarios at the end run a few workflows on trio too,
since the runtime takes the other path there.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
import yaml

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.taskgroup import NativeTaskGroup, task_group

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_the_native_group_is_used_on_asyncio_only(anyio_backend: str) -> None:
    assert isinstance(task_group(), NativeTaskGroup) == (anyio_backend == "asyncio")


async def test_exit_waits_for_every_task_including_ones_started_by_tasks() -> None:
    done: list[int] = []

    async def work(i: int, tg: Any) -> None:
        await anyio.sleep(0.01 * (i % 3))
        if i < 5:
            tg.start_soon(work, i + 10, tg)
        done.append(i)

    async with task_group() as tg:
        for i in range(5):
            tg.start_soon(work, i, tg)
    assert sorted(done) == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


async def test_a_failing_task_cancels_its_siblings_and_the_error_comes_out_in_a_group() -> None:
    cancelled: list[int] = []

    async def sleeper(i: int) -> None:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append(i)
            raise

    async def boom() -> None:
        await anyio.sleep(0.01)
        raise ValueError("boom")

    with anyio.fail_after(10):
        with pytest.raises(BaseExceptionGroup) as caught:
            async with task_group() as tg:
                for i in range(3):
                    tg.start_soon(sleeper, i)
                tg.start_soon(boom)
    assert [type(e) for e in caught.value.exceptions] == [ValueError]
    assert sorted(cancelled) == [0, 1, 2]


async def test_an_outer_cancel_scope_reaches_the_tasks_and_their_own_scopes() -> None:
    cleaned: list[str] = []

    async def task(name: str) -> None:
        try:
            with anyio.fail_after(30):  # a scope of the task's own, inside the group
                await anyio.sleep(30)
        finally:
            cleaned.append(name)

    with anyio.fail_after(10):
        with anyio.move_on_after(0.05) as scope:
            async with task_group() as tg:
                tg.start_soon(task, "a")
                tg.start_soon(task, "b")
    assert scope.cancelled_caught
    assert sorted(cleaned) == ["a", "b"]


async def test_a_timeout_inside_a_task_fails_only_that_task() -> None:
    outcomes: dict[str, str] = {}

    async def slow() -> None:
        try:
            with anyio.fail_after(0.02):
                await anyio.sleep(30)
        except TimeoutError:
            outcomes["slow"] = "timed out"

    async def quick() -> None:
        await anyio.sleep(0.05)
        outcomes["quick"] = "done"

    async with task_group() as tg:
        tg.start_soon(slow)
        tg.start_soon(quick)
    assert outcomes == {"slow": "timed out", "quick": "done"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the native group is the asyncio path
async def test_nothing_new_starts_once_the_native_group_is_failing() -> None:
    started: list[str] = []

    async def spawner(tg: NativeTaskGroup) -> None:
        try:
            await anyio.sleep(30)
        finally:  # cancelled because a sibling failed; what it starts now would outlive the failure
            tg.start_soon(record, "spawned while failing")

    async def record(name: str) -> None:
        started.append(name)

    async def boom() -> None:
        await anyio.sleep(0.01)
        raise KeyError("x")

    with pytest.raises(BaseExceptionGroup) as caught:
        async with NativeTaskGroup() as tg:
            tg.start_soon(spawner, tg)
            tg.start_soon(boom)
    assert [type(e) for e in caught.value.exceptions] == [KeyError]
    assert started == []


FANOUT = """
name: fan
state: {letters: {type: array, reducer: append}}
nodes:
  - {id: src, kind: tool, tool: echo, args: {value: 1}}
  - {id: a, kind: tool, tool: echo, args: {value: a}, writes: letters}
  - {id: b, kind: tool, tool: echo, args: {value: b}, writes: letters}
  - {id: c, kind: tool, tool: echo, args: {value: c}, writes: letters}
  - {id: join, kind: tool, tool: echo, args: {value: "{{ state.letters | sort | join(',') }}"}}
edges: [{from: src, to: a}, {from: src, to: b}, {from: src, to: c}, {from: a, to: join}, {from: b, to: join},
        {from: c, to: join}]
output: join
"""

CANCEL = """
name: stuck
start: [one, two, three]
nodes:
  - {id: one, kind: tool, tool: forever}
  - {id: two, kind: tool, tool: forever}
  - id: three
    kind: map
    over: "[1, 2]"
    body: {nodes: [{id: wait, kind: tool, tool: forever}]}
"""


async def echo(value: Any) -> Any:
    await anyio.sleep(0)
    return value


async def test_a_fan_out_runs_and_joins() -> None:
    async with Runtime(tools=[echo], store=":memory:") as rt:
        record = await rt.run(WorkflowSpec.model_validate(yaml.safe_load(FANOUT)))
    assert record.status == "completed" and record.output == "a,b,c"


async def test_cancelling_a_run_cancels_every_branch() -> None:
    running = 0
    cancelled = 0

    async def forever() -> None:
        nonlocal running, cancelled
        running += 1
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise

    with anyio.fail_after(20):
        async with Runtime(tools=[forever], store=":memory:") as rt:
            run_id = await rt.start(WorkflowSpec.model_validate(yaml.safe_load(CANCEL)))
            while running < 4:
                await anyio.sleep(0.01)
            record = await rt.cancel(run_id, "stop")
    assert record.status == "cancelled" and cancelled == 4
