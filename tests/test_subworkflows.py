"""Workflow nodes: how deep sub-workflows may nest, workflows that call themselves, and resuming an
interrupt inside a sub-workflow (its schema, and the workflows the run needs). Real runtime and
store, plain Python tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow import Workflow
from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import InvalidInputError, Runtime
from agentflow.runtime.errors import WorkflowNotFoundError
from agentflow.runtime.paths import node_at
from agentflow.runtime.run import MAX_WORKFLOW_DEPTH
from tests.specs import spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


PING = "{name: ping, nodes: [{id: to_pong, kind: workflow, workflow: pong}]}"
PONG = "{name: pong, nodes: [{id: to_ping, kind: workflow, workflow: ping}]}"


async def test_workflows_that_call_each_other_stop_at_the_nesting_limit() -> None:
    async with Runtime(workflows=[spec(PING), spec(PONG)], store=":memory:") as rt:
        record = await rt.run("ping")
    assert record.status == "failed"
    error = record.error or ""
    assert f"nest deeper than {MAX_WORKFLOW_DEPTH} levels" in error
    assert "ping -> pong -> ping" in error
    assert error.count("to_pong/") + error.count("to_ping/") > MAX_WORKFLOW_DEPTH  # the path names the chain


async def test_registering_builder_workflows_that_call_each_other() -> None:
    ping, pong = Workflow("ping"), Workflow("pong")
    ping.workflow("to_pong", pong)
    pong.workflow("to_ping", ping)
    async with Runtime(workflows=[ping], store=":memory:") as rt:
        assert set(rt.workflows) == {"ping", "pong"}
        record = await rt.run("ping")
    assert record.status == "failed" and "nest deeper" in (record.error or "")


CHILD = """
name: child
nodes:
  - id: each
    kind: map
    over: "[1]"
    body:
      nodes:
        - {id: ask, kind: interrupt, prompt: "number?", schema: {type: integer}}
output: each
"""

PARENT = """
name: parent
nodes:
  - {id: ask, kind: interrupt, prompt: "any", schema: {type: string}}
  - {id: call, kind: workflow, workflow: child}
edges: [{from: ask, to: call}]
output: call
"""


def test_node_at_follows_paths_into_bodies_and_sub_workflows() -> None:
    workflows: dict[str, WorkflowSpec] = {"child": spec(CHILD)}
    parent = spec(PARENT)
    assert node_at(parent, "ask", workflows.get).value_schema == {"type": "string"}  # type: ignore[union-attr]
    inner = node_at(parent, "call/each[0].ask", workflows.get)
    assert inner is not None and inner.value_schema == {"type": "integer"}
    assert node_at(parent, "call/each#0.ask", workflows.get) is None  # `each` is a map, not a loop
    assert node_at(parent, "call/nope", workflows.get) is None
    none: dict[str, WorkflowSpec] = {}
    assert node_at(parent, "call/each[0].ask", none.get) is None


async def test_a_resume_value_inside_a_sub_workflow_is_checked_against_its_schema(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with Runtime(workflows=[spec(CHILD)], store=db) as rt:
        run_id = await rt.start(spec(PARENT))
        await rt.wait(run_id)
        await rt.resume(run_id, "go")
        record = await rt.wait(run_id)
        assert record.interrupt is not None and record.interrupt["node"] == "call/each[0].ask"
        with pytest.raises(InvalidInputError, match="integer"):  # the run is live here
            await rt.resume(run_id, "abc")
    async with Runtime(workflows=[spec(CHILD)], store=db) as rt:  # and loaded from the store
        with pytest.raises(InvalidInputError, match="integer"):
            await rt.resume(run_id, "abc")
        await rt.resume(run_id, 5)
        record = await rt.wait(run_id)
    assert record.status == "completed" and record.output == [5]


async def test_resuming_without_a_needed_workflow_leaves_the_run_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with Runtime(workflows=[spec(CHILD)], store=db) as rt:
        run_id = await rt.start(spec(PARENT))
        assert (await rt.wait(run_id)).status == "interrupted"
    async with Runtime(store=db) as rt:  # `child` is not registered
        with pytest.raises(WorkflowNotFoundError, match="'child'"):
            await rt.resume(run_id, "go")
        assert (await rt.get_run(run_id)).status == "interrupted"
    async with Runtime(workflows=[spec(CHILD)], store=db) as rt:
        await rt.resume(run_id, "go")
        assert (await rt.wait(run_id)).status == "interrupted"  # now at the child's interrupt
