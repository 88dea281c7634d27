"""One run's execution: walk the graph level by level, run ready nodes as tasks, checkpoint each.

A run is a tree of *levels*: the workflow's top-level graph, and one level per execution of a
composite node's body (a parallel branch, a map item, a loop iteration, a sub-workflow call). Each
level runs every ready node at once in a task group; when a node finishes, the pure
:class:`~agentflow.runtime.graph.Frontier` says what became ready.

Durability: every completed node is checkpointed (its output and the state writes it made) in the
same store transaction as its ``node.completed`` event. The commit is queued, not awaited: the
node's successors may prepare while it is in flight (take their next step in the graph, log
``node.started``, render their arguments), but nothing leaves the process before every checkpoint
its predecessors queued is committed. :meth:`RunExecution.durable` is that barrier; a tool call,
an LLM request, an interrupt and the run's end wait on it. A node waits for the checkpoints queued
before it became ready (its predecessors' among them), not for those of siblings that finished
after, so a fan-out's branches do not wait on each other's commits. Values that steer execution
but are not node outputs (a map's item list, a loop's "go again") are recorded as *decisions*. A
resumed run replays checkpoints: done nodes return their recorded output without running, so
nothing completed runs twice, and the node that was in flight re-runs with the same attempt number
(and so the same idempotency key).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from agentflow.dsl.ir import (
    AgentNode,
    AnyNode,
    Body,
    Edge,
    EndNode,
    InterruptNode,
    LLMNode,
    LoopNode,
    MapNode,
    ParallelNode,
    SwitchNode,
    ToolNode,
    WorkflowNode,
    WorkflowSpec,
)
from agentflow.dsl.templates import evaluate, render, render_value
from agentflow.llm.base import LLM
from agentflow.runtime import nodes as leaf
from agentflow.runtime.errors import CheckpointLost, InvalidInputError, NodeError, NodeTimeoutError
from agentflow.runtime.events import (
    EventBase,
    NodeCompleted,
    NodeFailed,
    NodeRetrying,
    NodeStarted,
    RunInterrupted,
    RunResumed,
)
from agentflow.runtime.failures import EndRun, NodeFailure, describe, describe_failure, first_error, retry_after
from agentflow.runtime.graph import Frontier, Plan
from agentflow.runtime.state import apply_write, initial_state, stage_writes
from agentflow.runtime.store import NodeRecord, PendingWrite, RunStore
from agentflow.runtime.taskgroup import NativeTaskGroup, task_group
from agentflow.schemas import schema_error, with_defaults
from agentflow.tool import ToolRegistry

logger = logging.getLogger(__name__)


YIELD_EVERY_S = 0.0005
"""A run yields to the event loop at its barrier at least this often (see ``RunExecution.durable``)."""

FALLBACK = "!fallback"
"""Suffix of the decision that says a switch took its ``default`` (needed when a case is named ``default`` too)."""

MAX_WORKFLOW_DEPTH = 32
"""How deeply ``workflow`` nodes may nest (a sub-workflow calling a sub-workflow ...); a deeper call
fails its node, which stops a workflow that (directly or not) calls itself."""


@dataclass
class Frame:
    """A workflow being executed: the run's own, or a sub-workflow called by a ``workflow`` node."""

    spec: WorkflowSpec
    input: Any
    state: dict[str, Any]
    prefix: str
    """Path prefix of this frame's nodes and state keys in checkpoints (``""`` at the top)."""
    caller: Frame | None = None
    """The frame whose ``workflow`` node called this one (None for the run's own)."""

    def chain(self) -> list[str]:
        """The workflow names from the run's own down to this one."""
        names = [self.spec.name]
        frame = self.caller
        while frame is not None:
            names.append(frame.spec.name)
            frame = frame.caller
        return names[::-1]


@dataclass
class Scope:
    """One level's outputs and bound variables; templates see the chain up to the frame's root."""

    frame: Frame
    prefix: str
    parent: Scope | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Any] = field(default_factory=dict)
    """Handler node id -> the failure (``{node, type, message}``) its ``on_error`` edge brings: each
    handler sees the error of the node that leads to it, bound as ``error`` while it runs."""

    def child(self, prefix: str, **variables: Any) -> Scope:
        return Scope(self.frame, prefix, self, {}, variables)

    def namespace(self, **extra: Any) -> dict[str, Any]:
        ns = {**self.outputs, **self.vars} if self.parent is None else \
            {**self.parent.namespace(), **self.outputs, **self.vars}
        ns["input"] = self.frame.input  # a scope and its parents share one frame
        ns["state"] = self.frame.state
        ns.update(extra)
        return ns


@dataclass
class Services:
    """What a run needs from the runtime."""

    store: RunStore
    tools: ToolRegistry
    llm_for: Callable[[str | None], LLM]
    workflow_for: Callable[[str], WorkflowSpec]
    publish: Callable[[EventBase], None]
    interrupted: Callable[[RunExecution, str, dict[str, Any]], Any]
    """Called when an interrupt node starts waiting: ``(execution, path, info)``; awaitable."""


class RunExecution:
    """Executes one run (fresh, or resumed from its checkpoints)."""

    def __init__(self, run_id: str, spec: WorkflowSpec, run_input: Any, services: Services, *,
                 records: Sequence[NodeRecord] = (), last_seq: int = 0,
                 attempts: dict[str, int] | None = None) -> None:
        self.run_id = run_id
        self.spec = spec
        self.services = services
        self.tools = services.tools
        self.llm_for = services.llm_for
        self.seq = last_seq
        self.done: dict[str, NodeRecord] = {}
        self.decisions: dict[str, Any] = {}
        self.resume_attempts = dict(attempts or {})
        self._rounds: dict[str, int] = {}
        """Path -> first attempt number of its next round of tries: a node that failed for good inside a
        composite body, should the composite be retried (attempt numbers, and so idempotency keys, go on)."""
        self.resume_values: dict[str, Any] = {}
        self.waiters: dict[str, anyio.Event] = {}
        self.waiting: dict[str, dict[str, Any]] = {}
        """What each waiter waits for (as stored in the run's ``interrupt``), by path."""
        self.frame = Frame(spec, run_input, initial_state(spec), "")
        self._frames: dict[str, Frame] = {"": self.frame}
        self._pending_writes: dict[str, list[tuple[str, Any]]] = {}
        self._commits: deque[tuple[int, PendingWrite]] = deque()  # (number, write): not yet seen committed
        self._queued = 0  # checkpoints queued so far; a node waits for those numbered below its ticket
        self._yielded_at = 0.0
        for record in records:
            if record.kind == "decision":
                self.decisions[record.path] = record.output
            else:
                self.done[record.path] = record
                for qualified, value in record.writes:
                    prefix, _, key = qualified.rpartition("/")
                    self._pending_writes.setdefault(prefix + "/" if prefix else "", []).append((key, value))
        for key, value in self._pending_writes.pop("", []):
            apply_write(spec, self.frame.state, key, value)

    # -- events and checkpoints ----------------------------------------------------------------

    def emit(self, cls: type[EventBase], *, node: str | None = None, attempt: int | None = None,
             **fields: Any) -> EventBase:
        """Publish an event now and queue it for the store (no wait)."""
        self.seq += 1  # make_event, inlined: this runs several times per node
        event = cls(run_id=self.run_id, seq=self.seq, time=time.time(), node=node, attempt=attempt, **fields)
        self.services.publish(event)
        self.services.store.append_nowait(self.run_id, (event,))
        return event

    def make_event(self, cls: type[EventBase], **fields: Any) -> EventBase:
        """The run's next event (next seq), published live; the caller logs it to the store."""
        self.seq += 1
        event = cls(run_id=self.run_id, seq=self.seq, time=time.time(), **fields)
        self.services.publish(event)
        return event

    def checkpoint(self, record: NodeRecord, event_cls: type[EventBase], **fields: Any) -> None:
        """Queue the node's final event and its checkpoint as one transaction; :meth:`durable` waits for it."""
        event = self.make_event(event_cls, node=record.path, attempt=record.attempt, **fields)
        self._queue([event], [record])
        self.done[record.path] = record

    def _queue(self, events: list[EventBase], records: list[NodeRecord]) -> int:
        """Queue one write (FIFO with every other); :meth:`durable` waits for it. Returns the ticket that
        covers it: the count queued so far."""
        self._commits.append((self._queued, self.services.store.append_soon(self.run_id, events, records)))
        self._queued += 1
        return self._queued

    async def durable(self, ticket: int | None = None) -> None:
        """The barrier before anything leaves the process: return once the checkpoints numbered below
        ``ticket`` (default: all queued so far) are committed; raise ``CheckpointLost`` if one failed. A
        node's ticket is the count queued when it became ready, so it covers its predecessors. Commits
        are FIFO, so waiting for the newest one needed covers the older ones.

        It is also the run's cooperative yield point: a chain of tools that never block would otherwise
        never let other tasks run (nor be cancelled), and yielding on every node would cost a loop
        iteration each (a sixth of an in-memory node). So it yields once ``YIELD_EVERY_S`` has passed
        since the run last waited here (the idea of tokio's cooperative budget)."""
        commits = self._commits
        limit = self._queued if ticket is None else ticket
        while commits and commits[0][0] < limit:
            first, head = commits[0]
            if head.done():
                commits.popleft()
                error = head.error()
                if error is not None:
                    raise CheckpointLost(f"a checkpoint of this run was not stored: {describe(error)}") from error
                continue
            newest = commits[min(limit - 1 - first, len(commits) - 1)][1]
            try:
                await newest.wait()
            except Exception as exc:
                raise CheckpointLost(f"a checkpoint of this run was not stored: {describe(exc)}") from exc
            self._yielded_at = time.monotonic()
        now = time.monotonic()
        if now - self._yielded_at >= YIELD_EVERY_S:
            self._yielded_at = now
            await anyio.lowlevel.checkpoint()

    def decide(self, path: str, compute: Callable[[], Any]) -> Any:
        """A recorded decision: computed once, replayed on resume."""
        if path in self.decisions:
            return self.decisions[path]
        value = leaf.jsonable(compute())
        self.decisions[path] = value
        self._queue([], [NodeRecord(self.run_id, path, "decision", output=value)])
        return value

    # -- levels ------------------------------------------------------------------------------------

    async def execute(self) -> Any:
        """Run the workflow to its end; return the run's output."""
        scope = Scope(self.frame, "")
        try:
            await self.run_level(self.spec.nodes, self.spec.edges, self.spec.start, scope)
        except EndRun as end:
            if end.frame is not self.frame:
                raise
        await self.durable()
        return self.frame_output(scope)

    def frame_output(self, scope: Scope) -> Any:
        spec = scope.frame.spec
        ns = scope.namespace()
        if isinstance(spec.output, str):
            return leaf.jsonable(evaluate(spec.output, ns, field="output"))
        if isinstance(spec.output, dict):
            return {name: leaf.jsonable(evaluate(expr, ns, field=f"output.{name}"))
                    for name, expr in spec.output.items()}
        if spec.state:
            return leaf.jsonable(scope.frame.state)
        plan = Plan.build(spec.nodes, spec.edges, spec.start)
        return {node_id: scope.outputs.get(node_id) for node_id, out in plan.out.items()
                if not out and node_id in scope.outputs}

    async def run_level(self, level_nodes: Sequence[AnyNode], edges: Sequence[Edge], start: Sequence[str] | None,
                        scope: Scope) -> Frontier:
        plan = Plan.build(level_nodes, edges, start)
        frontier = Frontier(plan)
        with first_error():
            await self._walk(plan, frontier, scope)
        return frontier

    async def _walk(self, plan: Plan, frontier: Frontier, scope: Scope) -> None:
        async with task_group() as tg:
            for node_id in frontier.initial():
                tg.start_soon(self._advance, tg, plan, frontier, scope, node_id, self._queued)

    async def _advance(self, tg: NativeTaskGroup | TaskGroup, plan: Plan, frontier: Frontier, scope: Scope,
                       node_id: str, ticket: int) -> None:
        """Run ``node_id``, then what it makes ready: a chain continues in this task, only extra ready
        nodes get new tasks. (A method, not a closure that names itself: such a closure is a reference
        cycle that would keep the whole run alive until the garbage collector's next full pass.)"""
        while True:
            live = await self.run_node(plan, node_id, scope, ticket)
            ready = frontier.resolve(node_id, live)
            if not ready:
                return
            ticket = self._queued  # the checkpoints the ready nodes wait for, before they run
            for other in ready[1:]:
                tg.start_soon(self._advance, tg, plan, frontier, scope, other, ticket)
            node_id = ready[0]

    async def body_result(self, body: Body, scope: Scope) -> Any:
        frontier = await self.run_level(body.nodes, body.edges, body.start, scope)
        if body.output is not None:
            return leaf.jsonable(evaluate(body.output, scope.namespace(), field="body.output"))
        sinks = [node_id for node_id, out in frontier.plan.out.items() if not out]
        if len(sinks) == 1:
            return scope.outputs.get(sinks[0])
        return {node_id: scope.outputs.get(node_id) for node_id in sinks}

    # -- one node ----------------------------------------------------------------------------------

    async def run_node(self, plan: Plan, node_id: str, scope: Scope, ticket: int) -> set[str]:
        """Run (or replay) one node with retries; return the targets its outcome makes live. ``ticket``:
        the checkpoints it waits for before calling out (see :meth:`durable`)."""
        node = plan.nodes[node_id]
        path = scope.prefix + node.id
        record = self.done.get(path)
        if record is None:
            error = scope.errors.get(node.id)
            node_scope = scope if error is None else scope.child(scope.prefix, error=error)
            record = await self._attempts(node, path, node_scope, ticket)
        return self._settle(plan, node, record, scope)

    def _settle(self, plan: Plan, node: AnyNode, record: NodeRecord, scope: Scope) -> set[str]:
        scope.outputs[node.id] = record.output
        if record.kind == "failed":
            if node.on_error is not None:  # several failures may lead to one handler: it sees the first
                scope.errors.setdefault(node.on_error, record.output)
            return plan.live_targets(node.id, outcome="error")
        if isinstance(node, EndNode):
            raise EndRun(scope.frame)
        case_target = None
        if isinstance(node, SwitchNode):
            fell_back = record.output not in node.cases or self.recall(scope.prefix + node.id + FALLBACK)[1] is True
            case_target = node.default if fell_back else node.cases[record.output]
        return plan.live_targets(node.id, outcome="ok", case_target=case_target)

    async def _attempts(self, node: AnyNode, path: str, scope: Scope, ticket: int) -> NodeRecord:
        """Try ``node`` until it succeeds or its retries run out. A failure inside a composite node's
        body (a ``NodeFailure`` from a map item, a branch, a sub-workflow ...) is the composite's own
        failure: its ``retry`` runs the body again and its ``on_error`` handles it."""
        defaults = scope.frame.spec.defaults
        policy = node.retry or defaults.retry
        timeout = node.timeout or defaults.timeout
        first = self._rounds.pop(path, 1)
        attempt = max(first, self.resume_attempts.pop(path, 1))
        while True:
            self.emit(NodeStarted, node=path, attempt=attempt, kind=node.kind)
            started = time.monotonic()
            try:
                output = await self._attempt(node, path, attempt, scope, ticket, timeout)
                writes = self._writes(node, output, scope)
                staged = stage_writes(scope.frame.spec, scope.frame.state, writes, path)
            except (EndRun, CheckpointLost):
                raise
            except Exception as exc:
                failure = exc if isinstance(exc, NodeFailure) else NodeFailure(path, exc)
                if attempt - first + 1 < policy.max_attempts:
                    delay = policy.delay(attempt - first + 1, random.random())
                    asked = retry_after(failure)  # a rate-limited LLM server said when to come back
                    if asked is not None:
                        delay = max(delay, min(asked, policy.max_delay))
                    self.emit(NodeRetrying, node=path, attempt=attempt, error=describe_failure(failure, path),
                              delay=delay)
                    await anyio.sleep(delay)
                    attempt += 1
                    continue
                return self._failed(node, path, attempt, failure)
            scope.frame.state.update(staged)
            record = NodeRecord(self.run_id, path, "completed", attempt, output=output,
                                writes=[(scope.frame.prefix + key, value) for key, value in writes])
            self.checkpoint(record, NodeCompleted, output=output, duration=time.monotonic() - started)
            return record

    async def _attempt(self, node: AnyNode, path: str, attempt: int, scope: Scope, ticket: int,
                       timeout: float | None) -> Any:
        """One attempt's output. ``NodeTimeoutError`` only when the node's own deadline fired: a
        ``TimeoutError`` raised by a tool is that tool's failure."""
        if not timeout:
            return leaf.jsonable(await self.execute_kind(node, path, attempt, scope, ticket))
        with anyio.move_on_after(timeout):
            return leaf.jsonable(await self.execute_kind(node, path, attempt, scope, ticket))
        raise NodeTimeoutError(f"timed out after {timeout:g} s", node=path)

    def _failed(self, node: AnyNode, path: str, attempt: int, failure: NodeFailure) -> NodeRecord:
        """``node`` failed for good: checkpoint the failure for its ``on_error`` handler, or raise it."""
        error = failure.error
        fields = {"error": describe_failure(failure, path), "error_type": type(error).__name__}
        if node.on_error is None:
            self.emit(NodeFailed, node=path, attempt=attempt, **fields)
            self._rounds[path] = attempt + 1  # should an enclosing composite be retried
            if failure.path == path:
                raise failure from error
            raise failure
        info = {"node": failure.path, "type": type(error).__name__, "message": str(error)}
        record = NodeRecord(self.run_id, path, "failed", attempt, output=info)
        self.checkpoint(record, NodeFailed, handled=True, **fields)
        return record

    def _writes(self, node: AnyNode, output: Any, scope: Scope) -> list[tuple[str, Any]]:
        if node.writes is None:
            return []
        if isinstance(node.writes, str):
            return [(node.writes, output)]
        ns = scope.namespace(output=output)
        return [(key, leaf.jsonable(evaluate(expr, ns, node=node.id, field=f"writes.{key}")))
                for key, expr in node.writes.items()]

    async def execute_kind(self, node: AnyNode, path: str, attempt: int, scope: Scope, ticket: int) -> Any:
        ns = scope.namespace()
        if isinstance(node, ToolNode | LLMNode | AgentNode) or (isinstance(node, SwitchNode) and node.prompt):
            call = leaf.NodeCall(self, path, attempt, scope.frame.spec.defaults, ticket)
            if isinstance(node, ToolNode):
                return await leaf.run_tool(node, ns, call)
            if isinstance(node, LLMNode):
                return await leaf.run_llm(node, ns, call)
            if isinstance(node, AgentNode):
                return await leaf.run_agent(node, ns, call)
            assert isinstance(node, SwitchNode)
            return await leaf.choose_case(node, ns, call)
        if isinstance(node, SwitchNode):
            assert node.expression is not None
            return self._switch_case(node, path, evaluate(node.expression, ns, node=node.id, field="expression"))
        if isinstance(node, ParallelNode):
            return await self._parallel(node, path, scope)
        if isinstance(node, MapNode):
            return await self._map(node, path, scope, ns)
        if isinstance(node, LoopNode):
            return await self._loop(node, path, scope)
        if isinstance(node, WorkflowNode):
            return await self._subworkflow(node, path, scope.frame, ns)
        if isinstance(node, InterruptNode):
            return await self._interrupt(node, path, ns)
        assert isinstance(node, EndNode)
        return None

    # -- control-flow kinds ------------------------------------------------------------------------

    def _switch_case(self, node: SwitchNode, path: str, value: Any) -> str:
        """The case ``value`` selects, or ``"default"`` when none does and the switch has a ``default``.
        When a case is also named ``default``, which of the two was taken is recorded (for a resumed run)."""
        key = value if isinstance(value, str) else json.dumps(value)
        if key in node.cases or node.default is not None:
            if "default" in node.cases and node.default is not None:
                self.remember(path + FALLBACK, key not in node.cases)
            return key if key in node.cases else "default"
        raise NodeError(f"no case matches {key!r} (cases: {sorted(node.cases)}) and there is no default", node=node.id)

    async def _parallel(self, node: ParallelNode, path: str, scope: Scope) -> dict[str, Any]:
        results: dict[str, Any] = {}

        async def branch(name: str, body: Body) -> None:
            results[name] = await self.body_result(body, scope.child(f"{path}.{name}."))

        with first_error():
            async with task_group() as tg:
                for name, body in node.branches.items():
                    tg.start_soon(branch, name, body)
        return {name: results[name] for name in node.branches}

    async def _map(self, node: MapNode, path: str, scope: Scope, ns: dict[str, Any]) -> list[Any]:
        items = self.decide(path, lambda: evaluate(node.over, ns, node=node.id, field="over"))
        if not isinstance(items, list):
            raise NodeError(f"`over` must give a list, got {type(items).__name__}", node=path)
        results: list[Any] = [None] * len(items)
        limiter = anyio.CapacityLimiter(node.concurrency)

        async def one(index: int, item: Any) -> None:
            async with limiter:
                results[index] = await self.body_result(node.body, scope.child(f"{path}[{index}].", item=item,
                                                                               index=index))

        with first_error():
            async with task_group() as tg:
                for index, item in enumerate(items):
                    tg.start_soon(one, index, item)
        return results

    async def _loop(self, node: LoopNode, path: str, scope: Scope) -> Any:
        last: Any = None
        for iteration in range(node.max_iterations):
            body_scope = scope.child(f"{path}#{iteration}.", iteration=iteration, last=last)
            last = await self.body_result(node.body, body_scope)
            ns = body_scope.namespace(last=last)

            def condition(ns: dict[str, Any] = ns) -> bool:
                return bool(evaluate(node.condition, ns, node=node.id, field="condition"))

            again = self.decide(f"{path}#{iteration}", condition)
            if not again:
                break
        return last

    async def _subworkflow(self, node: WorkflowNode, path: str, caller: Frame, ns: dict[str, Any]) -> Any:
        chain = [*caller.chain(), node.workflow]
        if len(chain) - 1 > MAX_WORKFLOW_DEPTH:
            raise NodeError(f"workflow nodes nest deeper than {MAX_WORKFLOW_DEPTH} levels (does a workflow call "
                            f"itself?): {' -> '.join(chain[:4])} -> ... -> {' -> '.join(chain[-4:])}", node=path)
        spec = self.services.workflow_for(node.workflow)
        sub_input = render_value(node.input, ns, node=node.id, field="input")
        sub_input = validate_input(spec, sub_input)
        prefix = f"{path}/"
        frame = self._frames.get(prefix)
        if frame is None:
            frame = Frame(spec, sub_input, initial_state(spec), prefix, caller)
            for key, value in self._pending_writes.pop(prefix, []):
                apply_write(spec, frame.state, key, value)
            self._frames[prefix] = frame
        scope = Scope(frame, prefix)
        try:
            await self.run_level(spec.nodes, spec.edges, spec.start, scope)
        except EndRun as end:
            if end.frame is not frame:
                raise
        return self.frame_output(scope)

    async def _interrupt(self, node: InterruptNode, path: str, ns: dict[str, Any]) -> Any:
        if path in self.resume_values:
            return self.resume_values.pop(path)
        prompt = str(render(node.prompt, ns, node=node.id, field="prompt")) if node.prompt else ""
        return await self.pause(path, prompt, node.value_schema)

    async def pause(self, path: str, prompt: str, schema: dict[str, Any] | None, **extra: Any) -> Any:
        """Pause the run at ``path`` (an interrupt node, or a tool call awaiting approval) until
        :meth:`deliver` hands it a value; the run is stored as interrupted meanwhile."""
        if path in self.resume_values:  # resumed from the store with this value
            return self.resume_values.pop(path)
        info = {"node": path, "prompt": prompt, "schema": schema, **extra}
        await self.durable()
        waiter = self.waiters[path] = anyio.Event()
        self.waiting[path] = info
        self.emit(RunInterrupted, node=path, prompt=prompt, value_schema=schema)
        await self.services.interrupted(self, path, info)
        await waiter.wait()
        value = self.resume_values.pop(path)
        self.emit(RunResumed, node=path)
        return value

    def recall(self, key: str) -> tuple[bool, Any]:
        """``(True, value)`` if :meth:`remember` stored ``key`` in this run (this process or a previous one)."""
        return (True, self.decisions[key]) if key in self.decisions else (False, None)

    def remember(self, key: str, value: Any) -> int:
        """Record ``value`` under ``key`` in the run's store, so a resumed run replays it instead of redoing
        the work (an agent's LLM turns and tool results). Returns the :meth:`durable` ticket that covers the
        record: the caller waits on it before its next side effect, so a crash can never leave a tool run
        whose turn (and so whose idempotency key) is not stored."""
        value = leaf.jsonable(value)
        self.decisions[key] = value
        return self._queue([], [NodeRecord(self.run_id, key, "decision", output=value)])

    def deliver(self, path: str, value: Any) -> None:
        """Hand a resume value to the interrupt node waiting at ``path``."""
        self.resume_values[path] = value
        self.waiting.pop(path, None)
        waiter = self.waiters.pop(path, None)
        if waiter is not None:
            waiter.set()


def validate_input(spec: WorkflowSpec, value: Any) -> Any:
    """A run's input with the input schema's defaults filled in, checked against the schema; raise
    ``InvalidInputError``."""
    value = with_defaults(spec.input, value)
    check_against(spec.input, value, f"{spec.name} input", field="input")
    return value


def check_against(schema: dict[str, Any], value: Any, what: str, *, field: str = "value") -> None:
    error = schema_error(schema, value)
    if error is not None:
        pointer = error[0].strip("/")
        raise InvalidInputError(f"{what} does not match its schema at {error[0]}: {error[1]}",
                                param=".".join([field, *pointer.split("/")]) if pointer else field)


__all__ = ["EndRun", "Frame", "NodeFailure", "RunExecution", "Scope", "Services", "apply_write", "check_against",
           "initial_state", "validate_input"]
