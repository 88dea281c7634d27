"""The orchestrator on real parts: tools are plain Python functions, the store a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from agentflow.runtime import InvalidInputError, RunStateError, Runtime
from agentflow.runtime.events import EventBase
from agentflow.tool import ToolContext
from tests.specs import echo, spec

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def collect(rt: Runtime, run_id: str, after: int = 0) -> list[EventBase]:
    return [event async for event in rt.events(run_id, after=after)]


def names(events: list[EventBase], kind: str) -> list[str | None]:
    return [e.node for e in events if e.event == kind]  # type: ignore[attr-defined]


CHAIN = """
name: chain
input: {type: object, properties: {n: {type: integer}}, required: [n]}
state:
  total: {type: integer, default: 0}
  log: {type: array, reducer: append}
  info: {type: object, reducer: merge}
nodes:
  - {id: double, kind: tool, tool: double, args: {x: "{{ input.n }}"}, writes: total}
  - {id: note, kind: tool, tool: echo, args: {value: "got {{ double }}"}, writes: log}
  - id: more
    kind: tool
    tool: echo
    args: {value: ["a", "b"]}
    writes: {log: "output", info: "{'k': state.total}"}
edges: [{from: double, to: note}, {from: note, to: more}]
output: {total: state.total, log: state.log, info: state.info}
"""


def double(x: int) -> int:
    return 2 * x


async def test_chain_state_reducers_and_output(tmp_path: Path) -> None:
    async with Runtime(tools=[double, echo], store=tmp_path / "runs.db") as rt:
        record = await rt.run(spec(CHAIN), {"n": 21})
        assert record.status == "completed", record.error
        assert record.output == {"total": 42, "log": ["got 42", "a", "b"], "info": {"k": 42}}
        events = await collect(rt, record.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].event == "run.started" and events[-1].event == "run.completed"  # type: ignore[attr-defined]
    assert names(events, "node.completed") == ["double", "note", "more"]


async def test_bad_input_is_rejected_before_any_run_exists(tmp_path: Path) -> None:
    async with Runtime(tools=[double, echo], store=tmp_path / "runs.db") as rt:
        with pytest.raises(InvalidInputError, match="/n"):
            await rt.start(spec(CHAIN), {"n": "many"})
        runs, _ = await rt.store.list_runs()  # type: ignore[union-attr]
        assert runs == []


DEFAULTS = """
name: greet
start: [say, inner]
input:
  type: object
  required: [name]
  properties:
    name: {type: string}
    times: {type: integer, minimum: 1, default: 2}
    style: {type: object, properties: {loud: {type: boolean, default: false}}, default: {}}
    items: {type: array, items: {type: object, properties: {qty: {type: integer, default: 1}}}}
nodes:
  - id: say
    kind: tool
    tool: echo
    args:
      value: >-
        {{ input.name }} x{{ input.times }} loud={{ input.style.loud }}
        qty={{ input['items'] | map(attribute='qty') | list }}
  - {id: inner, kind: workflow, workflow: sub, input: {who: "{{ input.name }}"}}
output: {said: say, inner: inner}
"""

SUB = """
name: sub
input: {type: object, properties: {who: {type: string}, greeting: {type: string, default: hello}}}
nodes:
  - {id: hi, kind: tool, tool: echo, args: {value: "{{ input.greeting }} {{ input.who }}"}}
output: hi
"""


async def test_the_input_schema_defaults_fill_what_the_input_leaves_out() -> None:
    given = {"name": "Ada", "items": [{"qty": 3}, {}]}
    async with Runtime(tools=[echo], workflows=[spec(SUB)], store=":memory:") as rt:
        record = await rt.run(spec(DEFAULTS), given)
        events = await collect(rt, record.run_id)
    assert record.status == "completed", record.error
    assert record.output == {"said": "Ada x2 loud=False qty=[3, 1]", "inner": "hello Ada"}
    filled = {"name": "Ada", "times": 2, "style": {"loud": False}, "items": [{"qty": 3}, {"qty": 1}]}
    assert record.input == filled and events[0].input == filled  # type: ignore[attr-defined]
    assert given == {"name": "Ada", "items": [{"qty": 3}, {}]}  # the caller's dict is left alone
    async with Runtime(tools=[echo], workflows=[spec(SUB)], store=":memory:") as rt:
        with pytest.raises(InvalidInputError) as bad:
            await rt.start(spec(DEFAULTS), {"name": "Ada", "items": [{"qty": "three"}]})
    assert bad.value.param == "input.items.0.qty"


FANOUT = """
name: fanout
start: [slow_a, slow_b]
nodes:
  - {id: slow_a, kind: tool, tool: nap, args: {name: a}}
  - {id: slow_b, kind: tool, tool: nap, args: {name: b}}
  - {id: join, kind: tool, tool: echo, args: {value: "{{ [slow_a, slow_b] }}"}}
edges: [{from: slow_a, to: join}, {from: slow_b, to: join}]
output: join
"""


async def nap(name: str) -> str:
    await anyio.sleep(0.2)
    return name


async def test_ready_nodes_run_concurrently_and_join_waits(tmp_path: Path) -> None:
    async with Runtime(tools=[nap, echo], store=tmp_path / "runs.db") as rt:
        record = await rt.run(spec(FANOUT))
        events = await collect(rt, record.run_id)
    assert record.output == ["a", "b"]
    start = {e.node: e.time for e in events if e.event == "node.started"}  # type: ignore[attr-defined]
    end = {e.node: e.time for e in events if e.event == "node.completed"}  # type: ignore[attr-defined]
    assert start["slow_a"] < end["slow_b"] and start["slow_b"] < end["slow_a"]  # the intervals overlap
    assert start["join"] >= max(end["slow_a"], end["slow_b"])


SWITCH = """
name: route
input: {type: object, properties: {kind: {type: string}}}
nodes:
  - {id: pick, kind: switch, expression: input.kind, cases: {bug: bug, question: answer}, default: other}
  - {id: bug, kind: tool, tool: echo, args: {value: filed}}
  - {id: answer, kind: tool, tool: echo, args: {value: answered}}
  - {id: other, kind: tool, tool: echo, args: {value: "{{ pick }}"}}
  - {id: done, kind: tool, tool: echo, args: {value: finished}}
edges: [{from: bug, to: done}, {from: answer, to: done}, {from: other, to: done}]
"""


@pytest.mark.parametrize(("kind", "ran"), [("bug", "bug"), ("question", "answer"), ("spam", "other")])
async def test_switch_runs_one_case_and_skips_the_others(tmp_path: Path, kind: str, ran: str) -> None:
    async with Runtime(tools=[echo], store=":memory:") as rt:
        record = await rt.run(spec(SWITCH), {"kind": kind})
        events = await collect(rt, record.run_id)
    completed = names(events, "node.completed")
    assert completed == ["pick", ran, "done"]
    assert record.status == "completed"


SWITCH_NAMED_DEFAULT = """
name: route_default
input: {type: object, properties: {v: {type: string}}}
nodes:
  - {id: pick, kind: switch, expression: input.v, cases: {default: named, x: ex}, default: fallback}
  - {id: named, kind: tool, tool: echo, args: {value: named}}
  - {id: ex, kind: tool, tool: echo, args: {value: ex}}
  - {id: fallback, kind: tool, tool: echo, args: {value: fallback}}
  - {id: hold, kind: interrupt}
edges: [{from: named, to: hold}, {from: ex, to: hold}, {from: fallback, to: hold}]
output: pick
"""


@pytest.mark.parametrize(("value", "ran"), [("zzz", "fallback"), ("default", "named"), ("x", "ex")])
async def test_a_case_named_default_is_not_the_fallback(tmp_path: Path, value: str, ran: str) -> None:
    db = tmp_path / "runs.db"
    async with Runtime(tools=[echo], store=db) as rt:
        run_id = await rt.start(spec(SWITCH_NAMED_DEFAULT), {"v": value})
        assert (await rt.wait(run_id)).status == "interrupted"
    async with Runtime(tools=[echo], store=db) as rt:  # the switch is replayed: it must route the same way
        await rt.resume(run_id, None)
        record = await rt.wait(run_id)
        events = await collect(rt, run_id)
    assert record.status == "completed", record.error
    assert record.output == ("default" if value == "zzz" else value)  # the fallback's output stays "default"
    assert [n for n in names(events, "node.started") if n in ("named", "ex", "fallback")] == [ran]


async def test_map_over_a_range() -> None:
    over_range = spec("""
name: counted
nodes:
  - id: each
    kind: map
    over: range(3)
    body: {nodes: [{id: e, kind: tool, tool: echo, args: {value: "{{ item * 10 }}"}}]}
output: each
""")
    async with Runtime(tools=[echo], store=":memory:") as rt:
        record = await rt.run(over_range)
    assert record.status == "completed", record.error
    assert record.output == [0, 10, 20]


async def test_a_start_node_listed_twice_runs_once() -> None:
    calls: list[str] = []

    def count() -> str:
        calls.append("a")
        return "a"

    async with Runtime(tools=[count], store=":memory:") as rt:
        record = await rt.run(spec("{name: twice, start: [a, a], nodes: [{id: a, kind: tool, tool: count}]}"))
    assert record.status == "completed", record.error
    assert calls == ["a"]


MAP = """
name: fan
input: {type: object, properties: {items: {type: array}}}
nodes:
  - id: each
    kind: map
    over: input["items"]
    concurrency: 2
    body:
      nodes:
        - {id: work, kind: tool, tool: counted, args: {x: "{{ item }}", i: "{{ index }}"}}
        - {id: shape, kind: tool, tool: echo, args: {value: "{{ {'x': work, 'i': index} }}"}}
      edges: [{from: work, to: shape}]
output: each
"""


async def test_map_keeps_order_and_respects_its_concurrency(tmp_path: Path) -> None:
    running = 0
    peak = 0

    async def counted(x: int, i: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02 * (5 - i))  # later items finish first
        running -= 1
        return x * 10

    tools: dict[str, Any] = {"counted": counted, "echo": echo}
    async with Runtime(tools=tools, store=tmp_path / "r.db") as rt:
        record = await rt.run(spec(MAP), {"items": [1, 2, 3, 4, 5]})
        events = await collect(rt, record.run_id)
    assert record.output == [{"x": 10 * x, "i": i} for i, x in enumerate([1, 2, 3, 4, 5])]
    assert peak == 2
    assert "each[4].shape" in names(events, "node.completed")


LOOP = """
name: refine
state:
  count: {type: integer, default: 0}
nodes:
  - id: again
    kind: loop
    condition: state.count < 3 and iteration < 10
    max_iterations: 5
    body:
      nodes:
        - {id: bump, kind: tool, tool: bump, args: {n: "{{ state.count }}", last: "{{ last }}"}, writes: count}
output: {count: state.count, last: again}
"""


def bump(n: int, last: Any) -> int:
    return n + 1


async def test_loop_repeats_while_its_condition_holds() -> None:
    async with Runtime(tools=[bump], store=":memory:") as rt:
        record = await rt.run(spec(LOOP))
        events = await collect(rt, record.run_id)
    assert record.output == {"count": 3, "last": 3}
    assert names(events, "node.completed")[:3] == ["again#0.bump", "again#1.bump", "again#2.bump"]


async def test_loop_stops_at_max_iterations() -> None:
    capped = spec(LOOP.replace("state.count < 3 and iteration < 10", "iteration >= 0"))
    async with Runtime(tools=[bump], store=":memory:") as rt:
        record = await rt.run(capped)
    assert record.output == {"count": 5, "last": 5}


PARALLEL_SUB = """
name: outer
nodes:
  - id: both
    kind: parallel
    branches:
      left: {nodes: [{id: l, kind: tool, tool: echo, args: {value: L}}]}
      right:
        nodes:
          - {id: call, kind: workflow, workflow: inner, input: {word: "hi"}}
  - {id: after, kind: tool, tool: echo, args: {value: "{{ both.left }}-{{ both.right.shout }}"}}
edges: [{from: both, to: after}]
output: after
"""

INNER = """
name: inner
input: {type: object, properties: {word: {type: string}}, required: [word]}
nodes:
  - {id: shout, kind: tool, tool: upper, args: {s: "{{ input.word }}"}}
"""


def upper(s: str) -> str:
    return s.upper()


async def test_parallel_branches_and_a_sub_workflow() -> None:
    async with Runtime(tools=[echo, upper], workflows=[spec(INNER)], store=":memory:") as rt:
        record = await rt.run(spec(PARALLEL_SUB))
        events = await collect(rt, record.run_id)
    assert record.status == "completed", record.error
    assert record.output == "L-HI"
    assert "both.right.call/shout" in names(events, "node.completed")


RETRY = """
name: flaky
defaults: {retry: {max_attempts: 3, initial_delay: 0.01, jitter: 0}}
nodes:
  - {id: call, kind: tool, tool: flaky}
"""


async def test_retries_with_backoff_then_success() -> None:
    keys: list[str] = []

    def flaky(ctx: ToolContext) -> str:
        keys.append(ctx.idempotency_key)
        if ctx.attempt < 3:
            raise ConnectionError("upstream down")
        return "ok"

    async with Runtime(tools=[flaky], store=":memory:") as rt:
        record = await rt.run(spec(RETRY))
        events = await collect(rt, record.run_id)
    assert record.output == {"call": "ok"}
    assert [k.rsplit(":", 1)[1] for k in keys] == ["1", "2", "3"]
    retrying = [e for e in events if e.event == "node.retrying"]  # type: ignore[attr-defined]
    assert [e.attempt for e in retrying] == [1, 2]
    assert "upstream down" in retrying[0].error  # type: ignore[attr-defined]


ON_ERROR = """
name: guarded
nodes:
  - {id: risky, kind: tool, tool: boom, timeout: 0.05, on_error: fallback}
  - {id: next, kind: tool, tool: echo, args: {value: never}}
  - {id: fallback, kind: tool, tool: echo, args: {value: "recovered from {{ error.type }}"}}
edges: [{from: risky, to: next}]
output: fallback
"""


async def boom() -> None:
    await anyio.sleep(5)


async def test_timeout_then_on_error_routing() -> None:
    async with Runtime(tools=[boom, echo], store=":memory:") as rt:
        record = await rt.run(spec(ON_ERROR))
        events = await collect(rt, record.run_id)
    assert record.status == "completed"
    assert record.output == "recovered from NodeTimeoutError"
    failed = [e for e in events if e.event == "node.failed"]  # type: ignore[attr-defined]
    assert failed and failed[0].handled  # type: ignore[attr-defined]
    assert "next" not in names(events, "node.started")


async def test_unhandled_failure_fails_the_run_with_the_node_named() -> None:
    unguarded = spec(ON_ERROR.replace(", on_error: fallback", ""))
    async with Runtime(tools=[boom, echo], store=":memory:") as rt:
        record = await rt.run(unguarded)
        events = await collect(rt, record.run_id)
    assert record.status == "failed"
    assert "risky" in (record.error or "") and "timed out" in (record.error or "")
    assert events[-1].event == "run.failed"  # type: ignore[attr-defined]


CANCEL = """
name: long
start: [wait_a, wait_b]
nodes:
  - {id: wait_a, kind: tool, tool: forever}
  - {id: wait_b, kind: tool, tool: forever}
"""


async def test_cancel_reaches_every_running_tool() -> None:
    started = 0
    cancelled = 0

    async def forever() -> None:
        nonlocal started, cancelled
        started += 1
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise

    async with Runtime(tools=[forever], store=":memory:") as rt:
        run_id = await rt.start(spec(CANCEL))
        while started < 2:
            await anyio.sleep(0.01)
        record = await rt.cancel(run_id, "user pressed stop")
        events = await collect(rt, run_id)
        with pytest.raises(RunStateError):
            await rt.cancel(run_id)
    assert record.status == "cancelled" and cancelled == 2
    assert events[-1].event == "run.cancelled"  # type: ignore[attr-defined]


END = """
name: early
start: [fast, slow]
nodes:
  - {id: fast, kind: tool, tool: echo, args: {value: 1}, writes: got}
  - {id: stop, kind: end}
  - {id: slow, kind: tool, tool: forever}
edges: [{from: fast, to: stop}]
state: {got: {}}
output: state.got
"""


async def test_end_node_finishes_the_run_and_cancels_other_branches() -> None:
    async def forever() -> None:
        await anyio.sleep(60)

    async with Runtime(tools=[echo, forever], store=":memory:") as rt:
        with anyio.fail_after(10):
            record = await rt.run(spec(END))
    assert record.status == "completed" and record.output == 1


INTERRUPT = """
name: approve
nodes:
  - {id: draft, kind: tool, tool: counted_echo, args: {value: "draft"}}
  - {id: ask, kind: interrupt, prompt: "Approve {{ draft }}?", schema: {type: object, required: [ok]}}
  - {id: final, kind: tool, tool: counted_echo, args: {value: "{{ ask.ok }}"}}
edges: [{from: draft, to: ask}, {from: ask, to: final}]
output: final
"""


async def test_interrupt_pauses_and_resume_continues_without_rerunning(tmp_path: Path) -> None:
    calls: list[Any] = []

    def counted_echo(value: Any) -> Any:
        calls.append(value)
        return value

    db = tmp_path / "runs.db"
    async with Runtime(tools=[counted_echo], store=db) as rt:
        run_id = await rt.start(spec(INTERRUPT))
        record = await rt.wait(run_id)
        assert record.status == "interrupted"
        assert record.interrupt == {"node": "ask", "prompt": "Approve draft?", "schema": {"type": "object",
                                                                                        "required": ["ok"]}}
        with pytest.raises(InvalidInputError):
            await rt.resume(run_id, {"nope": 1})
    # a new process: the run waits in the store; resuming it does not re-run `draft`
    async with Runtime(tools=[counted_echo], store=db) as rt:
        assert (await rt.get_run(run_id)).status == "interrupted"
        await rt.resume(run_id, {"ok": True})
        record = await rt.wait(run_id)
        events = await collect(rt, run_id)
    assert record.status == "completed" and record.output is True
    assert calls == ["draft", True]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


DURABLE = """
name: steps
nodes:
  - {id: one, kind: tool, tool: step, args: {n: 1}}
  - {id: two, kind: tool, tool: step, args: {n: 2}}
  - {id: three, kind: tool, tool: step, args: {n: 3}}
edges: [{from: one, to: two}, {from: two, to: three}]
output: three
"""


async def test_a_suspended_run_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    calls: list[tuple[int, str]] = []
    gate = anyio.Event()

    async def step(n: int, ctx: ToolContext) -> int:
        calls.append((n, ctx.idempotency_key))
        if n == 2 and not gate.is_set():
            await anyio.sleep(60)  # the "crash" happens while node two is in flight
        return n

    db = tmp_path / "runs.db"
    async with Runtime(tools=[step], store=db) as rt:
        run_id = await rt.start(spec(DURABLE))
        while len(calls) < 2:
            await anyio.sleep(0.01)
    gate.set()
    async with Runtime(tools=[step], store=db) as rt:  # recovers unfinished runs on entry
        record = await rt.wait(run_id)
        events = await collect(rt, run_id)
    assert record.status == "completed" and record.output == 3
    assert [n for n, _ in calls] == [1, 2, 2, 3]  # `one` did not run again; `two` re-ran
    assert calls[1][1] == calls[2][1]  # ... with the same idempotency key
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert names(events, "node.completed") == ["one", "two", "three"]


async def test_replay_from_any_seq_and_live_subscription() -> None:
    async with Runtime(tools=[nap, echo], store=":memory:") as rt:
        run_id = await rt.start(spec(FANOUT))
        live = await collect(rt, run_id)  # subscribes while the run is going
        replay = await collect(rt, run_id, after=3)
    assert [e.seq for e in live] == list(range(1, len(live) + 1))
    assert replay == live[3:]


async def test_recovery_resumes_the_attempt_after_a_logged_retry(tmp_path: Path) -> None:
    """Killed after `node.retrying` was stored but before the next `node.started`: attempt 2 runs next,
    with its own idempotency key, and the run does not get an extra attempt."""
    import time as _time

    from agentflow.runtime.events import NodeRetrying, NodeStarted, RunStarted
    from agentflow.runtime.store import RunRecord, open_store

    flaky_spec = spec(RETRY)
    store = open_store(tmp_path / "runs.db")
    now = _time.time()
    await store.create_run(RunRecord(run_id="r1", workflow="flaky", status="running", input={},
                                     spec=flaky_spec.model_dump(mode="json", by_alias=True),
                                     created_at=now, updated_at=now))
    await store.append("r1", [RunStarted(run_id="r1", seq=1, time=now, workflow="flaky", version=1, input={}),
                              NodeStarted(run_id="r1", seq=2, time=now, node="call", attempt=1, kind="tool"),
                              NodeRetrying(run_id="r1", seq=3, time=now, node="call", attempt=1, error="x",
                                           delay=0.01)])
    await store.aclose()
    seen: list[int] = []

    def flaky(ctx: ToolContext) -> str:
        seen.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ConnectionError("still down")
        return "ok"

    async with Runtime(tools=[flaky], store=tmp_path / "runs.db") as rt:
        record = await rt.wait("r1")
        events = await collect(rt, "r1")
    assert seen == [2, 3]
    assert record.status == "completed"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_finished_run_is_freed_without_the_garbage_collector() -> None:
    """Once a run ends nothing it built stays alive in a reference cycle: the run's execution, its node
    records and its tasks go as soon as they are dropped, not at some later collection that has to
    walk them (the cost every run would add to all of a busy process's collections)."""
    import gc

    from agentflow.runtime.run import RunExecution

    workflows = [(spec(FANOUT), None), (spec(PARALLEL_SUB), {"word": "hi"}), (spec(CHAIN), {"n": 2})]
    async with Runtime(tools=[nap, echo, upper, double], workflows=[spec(INNER)], store=":memory:") as rt:
        for workflow, run_input in workflows:  # warm: what first use caches is not garbage
            await rt.run(workflow, run_input)
        gc.collect()
        gc.disable()
        try:
            for workflow, run_input in workflows:
                record = await rt.run(workflow, run_input)
                assert record.status == "completed", record.error
            left = [obj for obj in gc.get_objects() if type(obj) is RunExecution]
        finally:
            gc.enable()
    assert left == []


async def test_lone_surrogates_in_a_tool_result_become_replacement_characters(tmp_path: Path) -> None:
    # a file name decoded with surrogateescape: its event used to fail to serialize, the run failed on a
    # PydanticSerializationError and its log skipped a seq; the server's event stream broke with a 500
    def listing() -> Any:
        return {"name": "r\udce9sum\u00e9.txt", "k\ud800": ["ok", "\udcff"], "n": 1}

    async with Runtime(tools=[listing], store=tmp_path / "runs.db") as rt:
        done = await rt.run(spec("name: ls\nnodes: [{id: ls, kind: tool, tool: listing}]\noutput: ls\n"))
        assert done.status == "completed", done.error
        assert done.output == {"name": "r\ufffdsum\u00e9.txt", "k\ufffd": ["ok", "\ufffd"], "n": 1}
        events = [e async for e in rt.events(done.run_id)]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert all(e.model_dump_json() for e in events)


async def test_a_recovered_run_does_not_register_its_workflow_again(tmp_path: Path) -> None:
    # the stored spec of a recovered run used to be put into the registry: a workflow deleted while the run
    # was live came back after a restart (callers could be registered against it, and called it)
    started = anyio.Event()

    async def slow(value: Any) -> Any:
        started.set()
        await anyio.sleep(30)
        return value

    async def quick(value: Any) -> Any:
        return value

    ghost = spec("name: ghost\nnodes: [{id: s, kind: tool, tool: slow, args: {value: 1}}]\noutput: s\n")
    async with Runtime(tools=[slow], store=tmp_path / "runs.db", workflows=[ghost]) as rt:
        run_id = await rt.start("ghost")
        await started.wait()  # then the runtime stops: the run is suspended mid-node
    async with Runtime(tools={"slow": quick}, store=tmp_path / "runs.db") as rt:
        assert "ghost" not in rt.workflows
        assert (await rt.wait(run_id)).output == 1  # recovered from its stored workflow all the same
        assert "ghost" not in rt.workflows
