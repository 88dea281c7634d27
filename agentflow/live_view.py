"""Terminal views of a run for ``agentflow run``: a rich live panel, plain progress lines, or nothing.

::

    view = make_view("live", spec, stream=sys.stderr)   # or "plain" / "quiet"
    view.start()
    async for event in runtime.events(run_id):
        view.handle(event)
    view.stop()

:class:`RunState` folds events into what is shown (node table, streaming text of running LLM
nodes, recent tool calls); it does no I/O, so the views only decide *how* to show it:

- :class:`LiveView` redraws a rich ``Live`` panel: a table of nodes (state, attempt, duration,
  detail), the last ~200 characters each running LLM node has streamed, and the latest tool calls
  with their arguments and results. Refreshes happen on the event loop (``auto_refresh`` off), at
  most :data:`REFRESH_S` apart plus a ticker for the running clocks, so rendering never races the
  state it reads.
- :class:`PlainView` writes one line per event (``llm.delta`` excepted) — for logs and pipes.
- :class:`QuietView` shows nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

import anyio
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime.events import (
    EventBase,
    LLMDelta,
    NodeCompleted,
    NodeFailed,
    NodeRetrying,
    NodeStarted,
    RunCancelled,
    RunCompleted,
    RunFailed,
    RunInterrupted,
    RunResumed,
    RunStarted,
    ToolCall,
    ToolResult,
)

ViewMode = Literal["live", "plain", "quiet"]
STREAM_TAIL = 200
"""Characters of a running LLM node's streamed text the live view shows."""
TOOL_LINES = 8
"""Most recent tool calls the live view lists."""
MAX_NESTED_ROWS = 12
"""Finished nested rows (map items, loop iterations ...) shown before they are summed up in one line."""
REFRESH_S = 0.08
"""Least time between two redraws caused by events."""
PREVIEW = 80
"""Characters of arguments, results and outputs shown on one line."""
_STYLES = {"waiting": "dim", "running": "bold cyan", "retrying": "yellow", "done": "green", "failed": "bold red",
           "handled": "yellow", "interrupted": "bold magenta", "not run": "dim"}


def preview(value: Any, limit: int = PREVIEW) -> str:
    """``value`` as compact one-line JSON (strings as they are), cut to ``limit`` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class NodeRow:
    path: str
    kind: str = ""
    state: str = "waiting"
    attempt: int = 0
    started: float | None = None
    finished: float | None = None
    detail: str = ""

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.finished if self.finished is not None else now) - self.started


@dataclass
class ToolLine:
    node: str
    tool: str
    arguments: Any
    result: str | None = None
    failed: bool = False
    duration: float = 0.0


@dataclass
class RunState:
    """What a view shows, folded from a run's events; pure (event times only, no clock)."""

    workflow: str = ""
    run_id: str = ""
    status: str = "starting"
    started: float | None = None
    finished: float | None = None
    message: str = ""
    """The run's error, cancel reason or interrupt prompt."""
    rows: dict[str, NodeRow] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)
    tools: dict[str, ToolLine] = field(default_factory=dict)
    """Recent tool calls by call id, oldest first (at most :data:`TOOL_LINES`)."""

    @classmethod
    def for_workflow(cls, spec: WorkflowSpec | None) -> RunState:
        """A state with the workflow's top-level nodes listed as waiting."""
        state = cls(workflow=spec.name if spec else "")
        for node in spec.nodes if spec else ():
            state.rows[node.id] = NodeRow(node.id, node.kind)
        return state

    def row(self, path: str) -> NodeRow:
        if path not in self.rows:
            self.rows[path] = NodeRow(path)
        return self.rows[path]

    def apply(self, event: EventBase) -> None:
        self.run_id = event.run_id
        if isinstance(event, (RunStarted, RunResumed, RunInterrupted, RunCompleted, RunFailed, RunCancelled)):
            self._run_event(event)
        elif isinstance(event, NodeStarted) and event.node:
            row = self.row(event.node)
            row.kind, row.state, row.attempt = event.kind, "running", event.attempt or 1
            row.started, row.finished, row.detail = event.time, None, ""
            self.streams.pop(event.node, None)
        elif isinstance(event, LLMDelta) and event.node:
            self.streams[event.node] = (self.streams.get(event.node, "") + event.text)[-4 * STREAM_TAIL:]
        elif isinstance(event, ToolCall):
            self.tools[event.call_id] = ToolLine(event.node or "", event.tool, event.arguments)
            while len(self.tools) > TOOL_LINES:
                del self.tools[next(iter(self.tools))]
        elif isinstance(event, ToolResult) and event.call_id in self.tools:
            line = self.tools[event.call_id]
            line.failed = event.error is not None
            line.result = event.error if event.error is not None else preview(event.result)
            line.duration = event.duration
        elif isinstance(event, (NodeCompleted, NodeFailed, NodeRetrying)) and event.node:
            self._node_end(event, self.row(event.node))

    def _run_event(self, event: EventBase) -> None:
        if isinstance(event, RunStarted):
            self.workflow, self.status, self.started = event.workflow, "running", event.time
        elif isinstance(event, RunResumed):
            self.status = "running"
            self.started = self.started or event.time
            if event.node:
                self.row(event.node).state = "done"
        elif isinstance(event, RunInterrupted):
            self.status, self.message = "interrupted", event.prompt
            if event.node:
                self.row(event.node).state = "interrupted"
        else:
            self.finished = event.time
            self.streams.clear()
            if isinstance(event, RunCompleted):
                self.status, self.message = "completed", ""
            elif isinstance(event, RunFailed):
                self.status, self.message = "failed", event.error
            elif isinstance(event, RunCancelled):
                self.status, self.message = "cancelled", event.reason
            for row in self.rows.values():
                if row.state == "waiting":
                    row.state = "not run"
                elif row.state in ("running", "retrying", "interrupted"):
                    row.state, row.finished = self.status, event.time

    def _node_end(self, event: NodeCompleted | NodeFailed | NodeRetrying, row: NodeRow) -> None:
        self.streams.pop(row.path, None)
        if isinstance(event, NodeCompleted):
            row.state, row.finished = "done", event.time
            row.detail = preview(event.output)
        elif isinstance(event, NodeFailed):
            row.state, row.finished = ("handled" if event.handled else "failed"), event.time
            row.detail = event.error
        else:
            row.state, row.detail = "retrying", f"in {event.delay:.1f}s after: {event.error}"


# ---- rendering -------------------------------------------------------------------------------------------

def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _visible_rows(state: RunState) -> tuple[list[NodeRow], int]:
    """Every top-level row and active nested row; finished nested rows beyond the last few are counted."""
    nested_done = [r for r in state.rows.values() if _nested(r.path) and r.state in ("done", "handled")]
    hidden = {id(r) for r in nested_done[:-MAX_NESTED_ROWS]} if len(nested_done) > MAX_NESTED_ROWS else set()
    return [r for r in state.rows.values() if id(r) not in hidden], len(hidden)


def _nested(path: str) -> bool:
    return any(c in path for c in ".[#")


def render(state: RunState, now: float) -> RenderableType:
    """The live panel for ``state`` at time ``now`` (Unix seconds)."""
    status_style = _STYLES.get({"completed": "done", "cancelled": "failed"}.get(state.status, state.status), "")
    header = Text.assemble(("agentflow run ", "bold"), (state.workflow or "?", "bold"), "  ",
                           (state.run_id, "dim"), "  ", (state.status, status_style or "bold"),
                           f"  {_clock((state.finished or now) - state.started) if state.started else ''}")
    table = Table(box=None, pad_edge=False, expand=False, show_edge=False)
    for name, justify in (("node", "left"), ("kind", "left"), ("state", "left"), ("try", "right"),
                          ("time", "right"), ("detail", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "detail", style="dim" if name == "kind" else None)  # type: ignore[arg-type]
    rows, hidden = _visible_rows(state)
    for row in rows:
        table.add_row(row.path, row.kind, Text(row.state, _STYLES.get(row.state, "")),
                      str(row.attempt) if row.attempt > 1 else "", _clock(row.elapsed(now)),
                      Text(preview(row.detail, 60), "red" if row.state == "failed" else "dim"))
    if hidden:
        table.add_row(Text(f"… {hidden} more nested nodes done", "dim"), "", "", "", "", "")
    parts: list[RenderableType] = [header, table]
    for path, text in list(state.streams.items())[-3:]:
        tail = text[-STREAM_TAIL:]
        parts.append(Panel(Text(("…" if len(text) > len(tail) else "") + tail), title=f"{path} streaming",
                           title_align="left", border_style="cyan"))
    if state.tools:
        parts.append(_tool_table(state.tools.values()))
    if state.message and state.status in ("failed", "cancelled", "interrupted"):
        parts.append(Text(state.message, _STYLES["failed" if state.status != "interrupted" else "interrupted"]))
    return Group(*parts)


def _tool_table(lines: Iterable[ToolLine]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, title="tool calls", title_justify="left",
                  title_style="bold")
    lines = list(lines)
    table.add_column(style="dim", no_wrap=True, min_width=min(30, max(len(line.node) for line in lines)))
    table.add_column(no_wrap=True, overflow="ellipsis")
    for line in lines:
        call = Text.assemble((line.tool, "bold"), ("(", "dim"), preview(line.arguments, 50), (")", "dim"))
        if line.result is None:
            call.append("  …", "cyan")
        else:
            call.append(f"  → {preview(line.result, 60)}", "red" if line.failed else "green")
            call.append(f"  {line.duration:.2f}s", "dim")
        table.add_row(line.node, call)
    return table


# ---- views -----------------------------------------------------------------------------------------------

class View(Protocol):
    """Shows a run's events as they come."""

    state: RunState

    def start(self) -> None: ...

    def handle(self, event: EventBase) -> None: ...

    def pause(self) -> None:
        """Step aside before something else writes to the terminal (an interrupt prompt)."""

    def resume(self) -> None: ...

    def stop(self) -> None:
        """Draw the final state and release the terminal. Idempotent."""

    async def tick(self) -> None:
        """Redraw periodically until cancelled (for the running clocks)."""


class QuietView:
    def __init__(self, spec: WorkflowSpec | None = None) -> None:
        self.state = RunState.for_workflow(spec)

    def start(self) -> None:
        pass

    def handle(self, event: EventBase) -> None:
        self.state.apply(event)

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def stop(self) -> None:
        pass

    async def tick(self) -> None:
        await anyio.sleep_forever()


class PlainView(QuietView):
    """One line per event on ``stream``: ``<node>: <what happened>``."""

    def __init__(self, spec: WorkflowSpec | None, stream: TextIO) -> None:
        super().__init__(spec)
        self.stream = stream

    def handle(self, event: EventBase) -> None:
        self.state.apply(event)
        line = describe(event)
        if line is not None:
            self.stream.write(line + "\n")
            self.stream.flush()


def describe(event: EventBase) -> str | None:
    """One plain line for ``event`` (None for ``llm.delta``)."""
    node = event.node or ""
    if isinstance(event, RunStarted):
        return f"run {event.run_id}: started workflow {event.workflow!r} v{event.version}"
    if isinstance(event, RunResumed):
        return f"{node}: resumed" if node else f"run {event.run_id}: continuing from its checkpoints"
    if isinstance(event, NodeStarted):
        again = f", attempt {event.attempt}" if event.attempt and event.attempt > 1 else ""
        return f"{node}: started ({event.kind}{again})"
    if isinstance(event, ToolCall):
        return f"{node}: calls {event.tool}({preview(event.arguments)})"
    if isinstance(event, ToolResult):
        outcome = f"error: {event.error}" if event.error is not None else preview(event.result)
        return f"{node}: {event.tool} -> {outcome} ({event.duration:.2f}s)"
    if isinstance(event, NodeCompleted):
        return f"{node}: done in {event.duration:.2f}s -> {preview(event.output)}"
    if isinstance(event, NodeFailed):
        handled = " (handled by on_error)" if event.handled else ""
        return f"{node}: failed (attempt {event.attempt or 1}): {event.error}{handled}"
    if isinstance(event, NodeRetrying):
        return f"{node}: retrying in {event.delay:.1f}s after: {event.error}"
    if isinstance(event, RunInterrupted):
        return f"{node}: waiting for a value" + (f": {event.prompt}" if event.prompt else "")
    if isinstance(event, RunCompleted):
        return f"run {event.run_id}: completed"
    if isinstance(event, RunFailed):
        return f"run {event.run_id}: failed: {event.error}"
    if isinstance(event, RunCancelled):
        return f"run {event.run_id}: cancelled" + (f": {event.reason}" if event.reason else "")
    return None


class LiveView(QuietView):
    """A rich ``Live`` panel on ``console``, redrawn on the event loop."""

    def __init__(self, spec: WorkflowSpec | None, console: Console) -> None:
        super().__init__(spec)
        self.console = console
        self._live: Live | None = None
        self._drawn = 0.0

    def start(self) -> None:
        if self._live is None:
            self._live = Live(self._renderable(), console=self.console, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False, transient=False)
            self._live.start()

    def handle(self, event: EventBase) -> None:
        self.state.apply(event)
        if time.monotonic() - self._drawn >= REFRESH_S:
            self._draw()

    def _renderable(self) -> RenderableType:
        return render(self.state, time.time())

    def _draw(self) -> None:
        if self._live is not None:
            self._live.update(self._renderable(), refresh=True)
            self._drawn = time.monotonic()

    def pause(self) -> None:
        self.stop()

    def resume(self) -> None:
        self.start()

    def stop(self) -> None:
        if self._live is not None:
            self._draw()
            self._live.stop()
            self._live = None

    async def tick(self) -> None:
        while True:
            await anyio.sleep(0.25)
            self._draw()


def make_view(mode: ViewMode, spec: WorkflowSpec | None, stream: TextIO) -> View:
    """The view for ``mode``, writing to ``stream`` (stderr)."""
    if mode == "live":
        return LiveView(spec, Console(file=stream))
    if mode == "plain":
        return PlainView(spec, stream)
    return QuietView(spec)


__all__ = ["LiveView", "NodeRow", "PlainView", "QuietView", "RunState", "View", "ViewMode", "describe", "make_view",
           "preview", "render"]
