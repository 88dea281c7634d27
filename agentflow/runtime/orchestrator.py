"""The ``Runtime``: starts runs, keeps them going, and lets callers wait, cancel, resume and follow.

::

    async with Runtime(llm=LocalEngine("demo"), tools=[lookup], store="runs.db") as rt:
        rt.register(spec)
        run_id = await rt.start("triage", {"ticket": "..."})
        async for event in rt.events(run_id):      # replay + live, ends after the terminal event
            ...
        record = await rt.wait(run_id)

Runs are tasks in the runtime's task group, so every run's ready nodes run at once and one run's
tool I/O overlaps another's generation. Leaving the ``async with`` block *suspends* unfinished
runs (they stay ``running`` in the store); the next runtime on the same store resumes them from
their checkpoints (``recover=True``, the default).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from agentflow.dsl.ir import AgentNode, ToolNode, WorkflowNode, WorkflowSpec
from agentflow.llm.base import LLM
from agentflow.runtime.bus import EventBus
from agentflow.runtime.errors import (
    NoLLMError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    StoreError,
    ToolNotFoundError,
    WorkflowNotFoundError,
)
from agentflow.runtime.events import (
    TERMINAL_EVENTS,
    EventBase,
    NodeRetrying,
    NodeStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunResumed,
    RunStarted,
)
from agentflow.runtime.paths import node_at
from agentflow.runtime.run import NodeFailure, RunExecution, Services, check_against, validate_input
from agentflow.runtime.store import FINISHED, RunRecord, RunStore, open_store
from agentflow.runtime.store.base import UNFINISHED
from agentflow.tool import Tool, ToolRegistry, builtin_module

logger = logging.getLogger(__name__)

LLMSource = LLM | Mapping[str, LLM] | Callable[[str | None], LLM] | None
ToolSource = ToolRegistry | Iterable[Tool | Callable[..., Any]] | Mapping[str, Tool | Callable[..., Any]]


@dataclass
class _Live:
    """A run this runtime is executing now."""

    execution: RunExecution
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    finished: anyio.Event = field(default_factory=anyio.Event)
    changed: anyio.Event = field(default_factory=anyio.Event)
    """Set (and replaced) whenever the run pauses at an interrupt or finishes."""
    cancel_reason: str | None = None

    def signal(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class Runtime:
    """Runs workflows. See the module docstring for the lifecycle."""

    def __init__(self, *, llm: LLMSource = None, tools: ToolSource = (),
                 workflows: Iterable[Any] = (), store: RunStore | str | Path | None = None,
                 recover: bool = True, mcp_servers: Iterable[Any] = ()) -> None:
        """``mcp_servers``: ``tools.mcp.MCPServer`` configurations; agents reach their tools as
        ``"mcp:NAME/PATTERN"``, each server connected on first use and closed with the runtime."""
        self._llm = llm
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        servers = list(mcp_servers)
        if servers:
            # only with MCP servers: the mcp SDK is then needed
            self.tools.mcp = builtin_module("mcp").MCPManager(servers)
        self.workflows: dict[str, WorkflowSpec] = {}
        for workflow in workflows:
            self.register(workflow)
        self._store_target = store
        self.store: RunStore | None = store if isinstance(store, RunStore) else None
        self._recover = recover
        self.bus = EventBus()
        self._live: dict[str, _Live] = {}
        self._resuming: set[tuple[str, str | None]] = set()
        """(run id, interrupt path) of resumes between their checks and their delivery; (run id, None) while a
        stored run is being loaded to resume."""
        self._spec_cache: dict[int, tuple[WorkflowSpec, dict[str, Any]]] = {}
        self._tg: TaskGroup | None = None
        self.unrecovered: dict[str, Exception] = {}
        """Unfinished runs :meth:`recover` left alone, with why: :class:`RunStateError` (executing in another
        process), :class:`ToolNotFoundError`, :class:`WorkflowNotFoundError`, or whatever loading it raised."""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        self.store = self.store or open_store(self._store_target)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        if self.tools.mcp is not None:
            self.tools.mcp.attach(self._tg)
        if self._recover:
            await self.recover()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()  # suspend unfinished runs; they resume from the store next time
        if self.tools.mcp is not None:
            with anyio.CancelScope(shield=True):
                await self.tools.mcp.aclose()
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None
            self.bus.close_all()
            self._live.clear()
            if self.store is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.store.aclose()
                    except StoreError as exc:  # a write nobody awaited failed: its run resumes from its checkpoint
                        logger.error("closing the run store: %s", exc)

    # -- registry ----------------------------------------------------------------------------------

    def register(self, workflow: Any) -> WorkflowSpec:
        """Register a workflow: a ``WorkflowSpec``, or a builder ``Workflow`` (its Python tools and the
        ``Workflow`` objects its ``workflow`` nodes run come along)."""
        return self._register(workflow, set())

    def _register(self, workflow: Any, seen: set[int]) -> WorkflowSpec:
        if isinstance(workflow, WorkflowSpec):
            spec = workflow
        else:
            seen.add(id(workflow))  # a workflow that calls itself (or its caller) is registered once
            spec = workflow.build()
            self.tools = self.tools.merged(workflow.tools)
            for sub in getattr(workflow, "subworkflows", {}).values():
                if id(sub) not in seen:
                    self._register(sub, seen)
        self.workflows[spec.name] = spec
        return spec

    def _workflow(self, name: str) -> WorkflowSpec:
        try:
            return self.workflows[name]
        except KeyError:
            known = ", ".join(sorted(self.workflows)) or "none"
            raise WorkflowNotFoundError(f"unknown workflow {name!r} (registered: {known})") from None

    def _llm_for(self, model: str | None) -> LLM:
        source = self._llm
        if source is None:
            raise NoLLMError(f"a node needs an LLM (model {model!r}) but the runtime has none; pass llm= to Runtime "
                             "(e.g. LocalEngine('demo')) or --model on the command line")
        if isinstance(source, Mapping):
            llm = source.get(model or "default") or source.get("default")
            if llm is None:
                raise NoLLMError(f"no LLM named {model!r} (configured: {sorted(source)})")
            return llm
        if callable(source) and not isinstance(source, LLM):
            return source(model)
        return source

    # -- runs --------------------------------------------------------------------------------------

    def _services(self, own: WorkflowSpec | None = None) -> Services:
        """``own``: the stored workflow of a run loaded from the store, which may call itself by name although
        no workflow of that name is registered (it is not put in the registry: a deleted one stays deleted)."""
        assert self.store is not None
        workflow_for = self._workflow if own is None else \
            lambda name: self.workflows.get(name) or (own if name == own.name else self._workflow(name))
        return Services(self.store, self.tools, self._llm_for, workflow_for, self.bus.publish, self._on_interrupt)

    def _require_open(self) -> tuple[TaskGroup, RunStore]:
        if self._tg is None or self.store is None:
            raise RuntimeError("use the Runtime inside `async with Runtime(...) as rt:`")
        return self._tg, self.store

    async def start(self, workflow: WorkflowSpec | str | Any, input: Any = None, *,
                    run_id: str | None = None, tenant: str | None = None) -> str:
        """Validate the input, record the run, start it in the background; return its id. ``tenant``
        is stored with the run (the server scopes runs by it). A ``run_id`` already stored raises
        ``RunExistsError`` and starts nothing."""
        tg, store = self._require_open()
        if isinstance(workflow, str):
            spec = self._workflow(workflow)
        elif isinstance(workflow, WorkflowSpec):
            spec = workflow
        else:
            spec = self.register(workflow)
        run_input = validate_input(spec, {} if input is None else input)  # defaults filled in, as stored
        run_id = run_id or uuid.uuid4().hex
        now = time.time()
        record = RunRecord(run_id=run_id, workflow=spec.name, version=spec.version, status="running",
                           input=run_input, spec=self._spec_json(spec), created_at=now, updated_at=now,
                           tenant=tenant)
        if not store.claim(run_id):
            raise RunExistsError(f"run {run_id!r} already exists and is executing in another process")
        try:
            await store.create_run(record)
        except BaseException:
            store.release(run_id)
            raise
        execution = RunExecution(run_id, spec, run_input, self._services())
        self._launch(tg, execution)
        execution.emit(RunStarted, workflow=spec.name, version=spec.version, input=run_input)
        return run_id

    def _spec_json(self, spec: WorkflowSpec) -> dict[str, Any]:
        """The IR as stored with each run; dumped once per spec object."""
        cached = self._spec_cache.get(id(spec))
        if cached is None or cached[0] is not spec:
            cached = self._spec_cache[id(spec)] = (spec, spec.model_dump(mode="json", by_alias=True))
        return cached[1]

    def _launch(self, tg: TaskGroup, execution: RunExecution) -> _Live:
        live = _Live(execution)
        self._live[execution.run_id] = live
        tg.start_soon(self._drive, live)
        return live

    async def _drive(self, live: _Live) -> None:
        execution = live.execution
        store = execution.services.store
        run_id = execution.run_id
        outcome: tuple[type[EventBase], dict[str, Any], dict[str, Any]] | None = None
        try:
            with live.scope:
                try:
                    output = await execution.execute()
                    outcome = (RunCompleted, {"output": output}, {"status": "completed", "output": output})
                except NodeFailure as failure:
                    message = f"{type(failure.error).__name__}: {failure.error}"
                    fields = {"node": failure.path, "error": message, "error_type": type(failure.error).__name__}
                    outcome = (RunFailed, fields, {"status": "failed", "error": f"node {failure.path!r}: {message}"})
                except Exception as exc:  # a template error outside any node, a bug ...
                    logger.exception("run %s failed", run_id)
                    error = f"{type(exc).__name__}: {exc}"
                    outcome = (RunFailed, {"error": error, "error_type": type(exc).__name__},
                               {"status": "failed", "error": error})
            if outcome is None and live.cancel_reason is not None:
                outcome = (RunCancelled, {"reason": live.cancel_reason}, {"status": "cancelled"})
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    if outcome is not None:
                        event_cls, fields, run_fields = outcome
                        event = execution.make_event(event_cls, **fields)
                        try:
                            await store.append(run_id, [event],
                                               run={**run_fields, "interrupt": None, "updated_at": time.time()})
                        except Exception:  # a full disk, a dead writer: this run's end is lost, not the runtime
                            logger.exception("run %s: recording its end (%s) failed; it stays unfinished in the "
                                             "store and resumes from its last checkpoint next time", run_id,
                                             run_fields["status"])
                        self.bus.close(run_id)
                    # else: the runtime is shutting down; the run stays `running` and resumes next time
                finally:
                    self._live.pop(run_id, None)
                    store.release(run_id)
                    live.finished.set()
                    live.signal()

    async def _on_interrupt(self, execution: RunExecution, path: str, info: dict[str, Any]) -> None:
        assert self.store is not None
        await self.store.update_run(execution.run_id, status="interrupted", interrupt=info, updated_at=time.time())
        live = self._live.get(execution.run_id)
        if live is not None:
            live.signal()

    def executing(self, run_id: str) -> bool:
        """Whether this runtime executes the run now (running, or paused at an interrupt in memory)."""
        return run_id in self._live

    async def wait(self, run_id: str) -> RunRecord:
        """Wait until the run is finished (or interrupted) and return its record."""
        while True:
            live = self._live.get(run_id)
            if live is None:
                return await self.get_run(run_id)
            changed = live.changed
            if live.execution.waiters:  # paused at an interrupt
                record = await self.get_run(run_id)
                if record.status == "interrupted":
                    return record
            await changed.wait()

    async def run(self, workflow: WorkflowSpec | str | Any, input: Any = None, **kw: Any) -> RunRecord:
        """Start a run and wait for it."""
        return await self.wait(await self.start(workflow, input, **kw))

    async def get_run(self, run_id: str) -> RunRecord:
        _, store = self._require_open()
        record = await store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return record

    async def cancel(self, run_id: str, reason: str = "cancelled by request") -> RunRecord:
        """Cancel a run: all its running nodes see cancellation. An interrupted run not in memory is marked too."""
        live = self._live.get(run_id)
        if live is not None:
            live.cancel_reason = reason
            live.scope.cancel()
            await live.finished.wait()
            return await self.get_run(run_id)
        record = await self.get_run(run_id)
        if record.status in FINISHED:
            raise RunStateError(f"run {run_id!r} is already {record.status}")
        _, store = self._require_open()
        self._claim_stored(store, run_id, "cancel")
        try:
            record = await self.get_run(run_id)  # as it is now that no one else may change it
            if record.status in FINISHED:
                raise RunStateError(f"run {run_id!r} is already {record.status}")
            seq = await store.last_seq(run_id) + 1
            event = RunCancelled(run_id=run_id, seq=seq, time=time.time(), reason=reason)
            await store.append(run_id, [event],
                               run={"status": "cancelled", "interrupt": None, "updated_at": time.time()})
            self.bus.publish(event)  # to those following the paused run (event_batches)
            self.bus.close(run_id)
        finally:
            store.release(run_id)
        return await self.get_run(run_id)

    @staticmethod
    def _claim_stored(store: RunStore, run_id: str, action: str) -> None:
        if not store.claim(run_id):
            raise RunStateError(f"run {run_id!r} is executing in another process (another server or command on "
                                f"this store); {action} it there")

    async def resume(self, run_id: str, value: Any = None, *, node: str | None = None) -> None:
        """Give a value to the run's pending interrupt (``node`` picks one when several wait)."""
        tg, store = self._require_open()
        live = self._live.get(run_id)
        # A resume claims its interrupt before its first await, so of concurrent resumes exactly one delivers;
        # the others are refused (not told 202 while another value wins). A run loaded from the store is
        # claimed whole (None) until it is live.
        if (run_id, None) in self._resuming:
            raise RunStateError(f"run {run_id!r} is being resumed by another request")
        if live is not None:
            # Checked with no await before the status write below is queued: a cancel that comes later queues its
            # terminal write after ours, so the stored status never goes back from `cancelled` to `running`.
            if live.cancel_reason is not None or live.finished.is_set():
                raise RunStateError(f"run {run_id!r} is being cancelled")
            waiters = list(live.execution.waiters)
            waiting = [p for p in waiters if (run_id, p) not in self._resuming]
            taken = (node in waiters and node not in waiting) if node is not None else (bool(waiters) and not waiting)
            if taken:
                raise RunStateError(f"run {run_id!r} is being resumed by another request")
            path = self._pick_interrupt(run_id, waiting, node)
            with self._claim(run_id, path):
                self._check_resume_value(live.execution.spec, path, value)
                others = [p for p in live.execution.waiting if p != path]
                if others:  # parallel branches wait at several interrupts: the run still waits at the next
                    await store.update_run(run_id, status="interrupted", interrupt=live.execution.waiting[others[0]],
                                           updated_at=time.time())
                else:
                    await store.update_run(run_id, status="running", interrupt=None, updated_at=time.time())
                live.execution.deliver(path, value)
            return
        with self._claim(run_id, None):
            record = await self.get_run(run_id)
            if record.status != "interrupted" or not record.interrupt:
                raise RunStateError(f"run {run_id!r} is {record.status}, not waiting at an interrupt")
            self._claim_stored(store, run_id, "resume")
            try:
                record = await self.get_run(run_id)  # another process may have resumed it before our claim
                if record.status != "interrupted" or not record.interrupt:
                    raise RunStateError(f"run {run_id!r} is {record.status}, not waiting at an interrupt")
                path = self._pick_interrupt(run_id, [record.interrupt["node"]], node)
                execution = await self._load(record)
                self._check_resume_value(execution.spec, path, value)
                execution.resume_values[path] = value
                await store.update_run(run_id, status="running", interrupt=None, updated_at=time.time())
            except BaseException:
                store.release(run_id)
                raise
            self._launch(tg, execution)
        execution.emit(RunResumed, node=path)

    @contextlib.contextmanager
    def _claim(self, run_id: str, path: str | None) -> Iterator[None]:
        self._resuming.add((run_id, path))
        try:
            yield
        finally:
            self._resuming.discard((run_id, path))

    @staticmethod
    def _pick_interrupt(run_id: str, waiting: list[str], node: str | None) -> str:
        if node is not None:
            if node not in waiting:
                raise RunStateError(f"run {run_id!r} is not waiting at {node!r} (waiting: {waiting})")
            return node
        if not waiting:
            raise RunStateError(f"run {run_id!r} is not waiting at an interrupt")
        if len(waiting) != 1:
            raise RunStateError(f"run {run_id!r} is waiting at {len(waiting)} interrupts {waiting}; name one")
        return waiting[0]

    def _check_resume_value(self, spec: WorkflowSpec, path: str, value: Any) -> None:
        """Check ``value`` against the schema of the interrupt at ``path``, in ``spec`` or in a
        sub-workflow it calls."""
        from agentflow.dsl.ir import InterruptNode
        from agentflow.runtime.agent import APPROVAL_MARK, APPROVAL_SCHEMA

        if APPROVAL_MARK in path:
            check_against(APPROVAL_SCHEMA, value, f"approval for {path!r}")
            return
        node = node_at(spec, path, lambda name: self.workflows.get(name) or (spec if name == spec.name else None))
        if isinstance(node, InterruptNode) and node.value_schema:
            check_against(node.value_schema, value, f"resume value for {path!r}")

    def _missing_workflows(self, spec: WorkflowSpec) -> list[str]:
        """The workflows that ``spec``'s workflow nodes call (directly or through sub-workflows) and
        that are not registered."""
        missing: list[str] = []
        seen, todo = {spec.name}, [spec]
        while todo:
            for node in _walk(todo.pop().nodes):
                if isinstance(node, WorkflowNode) and node.workflow not in seen:
                    seen.add(node.workflow)
                    sub = self.workflows.get(node.workflow)
                    if sub is None:
                        missing.append(node.workflow)
                    else:
                        todo.append(sub)
        return missing

    def _unknown_tools(self, spec: WorkflowSpec) -> list[str]:
        """The tools that ``spec`` (and the registered sub-workflows it calls) uses and this runtime lacks."""
        unknown: list[str] = []
        seen, todo = {spec.name}, [spec]
        while todo:
            current = todo.pop()
            for node in _walk(current.nodes):
                names = [node.tool] if isinstance(node, ToolNode) else node.tools if isinstance(node, AgentNode) else []
                unknown += [name for name in names if name not in self.tools and name not in unknown]
                sub = self.workflows.get(node.workflow) if isinstance(node, WorkflowNode) else None
                if sub is not None and sub.name not in seen:
                    seen.add(sub.name)
                    todo.append(sub)
        return unknown

    async def _load(self, record: RunRecord) -> RunExecution:
        """Rebuild a run's execution from its checkpoints and event log."""
        assert self.store is not None
        if record.spec is None:
            raise RunStateError(f"run {record.run_id!r} has no stored workflow; cannot resume")
        spec = WorkflowSpec.model_validate(record.spec)
        missing = self._missing_workflows(spec)
        if missing:  # refused before the run changes: it would fail at the first call
            known = ", ".join(sorted(self.workflows))
            raise WorkflowNotFoundError(f"run {record.run_id!r} calls workflow(s) {', '.join(map(repr, missing))}, "
                                        f"which are not registered (registered: {known}); the run is unchanged")
        unknown = self._unknown_tools(spec)
        if unknown:  # the same for tools: the node would fail for good on "unknown tool"
            raise ToolNotFoundError(f"run {record.run_id!r} uses tool(s) {', '.join(map(repr, unknown))}, which "
                                    "are not registered here; the run is unchanged")
        records = await self.store.node_records(record.run_id)
        events = await self.store.events(record.run_id)
        done = {r.path for r in records if r.kind != "decision"}
        # the attempt in flight at the crash: the last one started, or the one after the last retry notice
        attempts: dict[str, int] = {}
        for e in events:
            if e.node and e.attempt and e.node not in done:
                if isinstance(e, NodeStarted):
                    attempts[e.node] = max(attempts.get(e.node, 1), e.attempt)
                elif isinstance(e, NodeRetrying):
                    attempts[e.node] = max(attempts.get(e.node, 1), e.attempt + 1)
        last_seq = events[-1].seq if events else 0
        return RunExecution(record.run_id, spec, record.input, self._services(spec), records=records,
                            last_seq=last_seq, attempts=attempts)

    async def recover(self) -> list[str]:
        """Resume every unfinished (not interrupted) run in the store; return their ids."""
        tg, store = self._require_open()
        resumed = []
        for record in await store.unfinished_runs():
            if record.run_id in self._live:
                continue
            if not store.claim(record.run_id):
                logger.info("run %s is executing in another process; leaving it there", record.run_id)
                self.unrecovered[record.run_id] = RunStateError("it is executing in another process")
                continue
            try:
                record = await self.get_run(record.run_id)  # as its last executor left it
                if record.status not in UNFINISHED:
                    store.release(record.run_id)
                    continue
                execution = await self._load(record)
            except Exception as exc:
                store.release(record.run_id)
                logger.error("cannot resume run %s: %s", record.run_id, exc)
                self.unrecovered[record.run_id] = exc
                continue
            self.unrecovered.pop(record.run_id, None)
            self._launch(tg, execution)
            if execution.seq == 0:  # killed between recording the run and logging its start
                execution.emit(RunStarted, workflow=execution.spec.name, version=execution.spec.version,
                               input=record.input)
            else:
                execution.emit(RunResumed)
            resumed.append(record.run_id)
        if resumed:
            logger.info("resumed %d unfinished run(s)", len(resumed))
        return resumed

    async def events(self, run_id: str, *, after: int = 0) -> AsyncIterator[EventBase]:
        """Every event of the run with ``seq > after``: first replayed from the store, then live, ending
        after the terminal event (or at the end of the log when the run is not executing here)."""
        batches = self.event_batches(run_id, after=after)
        try:
            async for batch in batches:
                for event in batch:
                    yield event
        finally:
            await batches.aclose()

    async def event_batches(self, run_id: str, *, after: int = 0,
                            replay_batch: int = 512) -> AsyncGenerator[list[EventBase], None]:
        """:meth:`events` in batches: the stored log in slices of ``replay_batch``, then each live
        event together with those already queued behind it (a busy run's subscriber wakes once for
        several events)."""
        _, store = self._require_open()
        live = run_id in self._live
        if not live:  # paused in the store only (say, after a restart): followed until resumed or cancelled here
            record = await store.get_run(run_id)
            live = record is not None and record.status == "interrupted"
        subscription = self.bus.subscribe(run_id) if live else None
        try:
            last = after
            stored = await store.events(run_id, after=after)  # a read waits for the writes queued before it
            for start in range(0, len(stored), replay_batch):
                batch = stored[start:start + replay_batch]
                end = _terminal_index(batch)
                if end is not None:
                    yield batch[:end + 1]
                    return
                yield batch
                last = batch[-1].seq
            if subscription is None:
                if not stored and await store.get_run(run_id) is None:
                    raise RunNotFoundError(f"no run {run_id!r}")
                return
            receive = subscription[1]
            async for first in receive:
                batch = [first]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                fresh = [event for event in batch if event.seq > last]
                end = _terminal_index(fresh)
                if end is not None:
                    yield fresh[:end + 1]
                    return
                if fresh:
                    yield fresh
                    last = fresh[-1].seq
        finally:
            if subscription is not None:
                self.bus.unsubscribe(run_id, subscription[0])
                subscription[1].close()


def _terminal_index(batch: list[EventBase]) -> int | None:
    for i, event in enumerate(batch):
        if event.event in TERMINAL_EVENTS:  # type: ignore[attr-defined]
            return i
    return None


def _walk(nodes: Iterable[Any]) -> Iterable[Any]:
    for node in nodes:
        yield node
        for body in [getattr(node, "body", None), *getattr(node, "branches", {}).values()]:
            if body is not None:
                yield from _walk(body.nodes)


__all__ = ["Runtime"]
