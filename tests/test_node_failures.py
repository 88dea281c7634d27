"""How a node's failure is handled: retries and ``on_error`` on composite nodes (a failure in a body
is the composite's), the ``error`` each handler sees, state writes that fail, and timeouts. Real
runtime, plain Python tools, in-memory store."""

from __future__ import annotations

from typing import Any

import pytest

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.runtime.events import EventBase
from agentflow.tool import ToolContext
from tests.specs import echo, spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def picky(x: int) -> int:
    if x == 2:
        raise ValueError(f"no {x}")
    return x


async def run(text: str, tools: list[Any], workflows: tuple[WorkflowSpec, ...] = ()) -> tuple[Any, list[EventBase]]:
    async with Runtime(tools=tools, workflows=workflows, store=":memory:") as rt:
        record = await rt.run(spec(text))
        events = [event async for event in rt.events(record.run_id)]
    return record, events


def of(events: list[EventBase], kind: str) -> list[EventBase]:
    return [e for e in events if e.event == kind]  # type: ignore[attr-defined]


MAP_GUARDED = """
name: guarded_map
nodes:
  - id: each
    kind: map
    over: "[1, 2, 3]"
    on_error: handler
    body:
      nodes:
        - {id: check, kind: tool, tool: picky, args: {x: "{{ item }}"}}
  - {id: handler, kind: tool, tool: echo, args: {value: "{{ error }}"}}
output: handler
"""


async def test_on_error_of_a_map_handles_a_failure_in_its_body() -> None:
    record, events = await run(MAP_GUARDED, [picky, echo])
    assert record.status == "completed", record.error
    assert record.output == {"node": "each[1].check", "type": "ValueError", "message": "no 2"}
    failed = {e.node: e for e in of(events, "node.failed")}
    assert failed["each"].handled  # type: ignore[attr-defined]
    assert "each[1].check" in failed["each"].error  # type: ignore[attr-defined]


CHILD = """
name: child
nodes:
  - {id: inner, kind: tool, tool: picky, args: {x: 2}}
"""

CALLER = """
name: caller
nodes:
  - {id: call, kind: workflow, workflow: child, on_error: h}
  - {id: h, kind: tool, tool: echo, args: {value: "{{ error.node }}: {{ error.message }}"}}
output: h
"""


async def test_on_error_of_a_workflow_node_handles_a_failure_in_the_sub_workflow() -> None:
    record, _ = await run(CALLER, [picky, echo], (spec(CHILD),))
    assert record.status == "completed", record.error
    assert record.output == "call/inner: no 2"


async def test_a_composite_without_on_error_still_fails_the_run_naming_the_inner_node() -> None:
    record, events = await run(MAP_GUARDED.replace("on_error: handler", "description: unguarded"), [picky, echo])
    assert record.status == "failed"
    assert record.error == "node 'each[1].check': ValueError: no 2"
    assert of(events, "run.failed")[0].node == "each[1].check"
    assert {e.node for e in of(events, "node.failed")} >= {"each[1].check", "each"}  # the map failed too


PARALLEL_RETRY = """
name: retried
nodes:
  - id: both
    kind: parallel
    retry: {max_attempts: 3, initial_delay: 0, jitter: 0}
    branches:
      work:
        nodes: [{id: once, kind: tool, tool: steady}, {id: flaky, kind: tool, tool: flaky}]
        edges: [{from: once, to: flaky}]
output: both
"""
# One branch, a chain: `once` is checkpointed before `flaky` starts. (Two branches raced: a sibling still running
# when `flaky` failed was cancelled before its checkpoint, and so ran again, rightly, on the retry.)


async def test_retry_of_a_parallel_node_runs_its_failed_body_again() -> None:
    steady_calls: list[str] = []
    flaky_keys: list[str] = []

    def steady() -> str:
        steady_calls.append("ran")
        return "ok"

    def flaky(ctx: ToolContext) -> str:
        flaky_keys.append(ctx.idempotency_key)
        if len(flaky_keys) < 3:
            raise ConnectionError("down")
        return "up"

    record, events = await run(PARALLEL_RETRY, [steady, flaky])
    assert record.status == "completed", record.error
    assert record.output == {"work": "up"}  # a branch gives its last node's output
    assert [e.attempt for e in of(events, "node.retrying") if e.node == "both"] == [1, 2]
    assert steady_calls == ["ran"]  # a completed part of the body is not run again
    assert len(set(flaky_keys)) == 3  # each try of the failed node is a new attempt, with its own key


ERRORS = """
name: two_handlers
start: [b, c]
nodes:
  - {id: b, kind: tool, tool: fail, args: {msg: "B failed"}, on_error: hb}
  - {id: c, kind: tool, tool: echo, args: {value: c}}
  - {id: a, kind: tool, tool: fail, args: {msg: "A failed"}, on_error: ha}
  - {id: ha, kind: tool, tool: echo, args: {value: "ha sees {{ error.message }}"}}
  - {id: hb, kind: tool, tool: echo, args: {value: "hb sees {{ error.message }}"}}
edges: [{from: c, to: a}, {from: ha, to: hb}]
output: {ha: ha, hb: hb}
"""


def fail(msg: str) -> None:
    raise RuntimeError(msg)


async def test_each_handler_sees_the_error_of_its_own_failed_node() -> None:
    # b fails first; a fails later and its handler ha runs before hb (hb waits for ha)
    record, _ = await run(ERRORS, [fail, echo])
    assert record.status == "completed", record.error
    assert record.output == {"ha": "ha sees A failed", "hb": "hb sees B failed"}


MERGE = """
name: bad_merge
state: {info: {type: object, reducer: merge, default: {kept: true}}}
nodes:
  - {id: b, kind: tool, tool: echo, args: {value: [1]}, writes: info, on_error: h}
  - {id: h, kind: tool, tool: echo, args: {value: "{{ error.node }}: {{ error.message }}"}}
output: {h: h, info: state.info}
"""


async def test_a_write_that_does_not_fit_its_reducer_fails_the_node() -> None:
    record, events = await run(MERGE, [echo])
    assert record.status == "completed", record.error
    assert record.output["info"] == {"kept": True}
    assert record.output["h"].startswith("b: ") and "info" in record.output["h"]
    assert "merges dicts, got list" in record.output["h"]
    assert [e.node for e in of(events, "node.failed")] == ["b"]

    unguarded, events = await run(MERGE.replace(", on_error: h", ""), [echo])
    assert unguarded.status == "failed"
    assert of(events, "run.failed")[0].node == "b"


TIMEOUT = """
name: upstream
nodes:
  - {id: a, kind: tool, tool: connect, timeout: 100, on_error: h}
  - {id: h, kind: tool, tool: echo, args: {value: "{{ error.type }}: {{ error.message }}"}}
output: h
"""


async def test_a_timeout_error_raised_by_a_tool_is_not_the_node_timing_out() -> None:
    def connect() -> None:
        raise TimeoutError("upstream connect timeout")

    record, _ = await run(TIMEOUT, [connect, echo])
    assert record.output == "TimeoutError: upstream connect timeout"
