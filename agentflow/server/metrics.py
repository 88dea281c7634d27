"""Prometheus metrics (``GET /metrics``), on a registry of the app's own.

Labels are bounded: ``route`` is the route's path template (``/v1/runs/{run_id}``), never the raw
path, and anything unmatched is ``other``; workflows, nodes and tools are named by their definitions
(a node by its id: ``summaries[3].fetch`` and ``refine#2.fetch`` both count as ``fetch``), and each
of those labels takes at most ``max_label_values`` distinct values, the rest counted as ``other``.

Three sources feed the registry:

- :class:`HttpMetrics` (middleware): requests and latencies per route;
- :meth:`Metrics.observe_event`, a listener on the runtime's event bus (:meth:`Metrics.watch`):
  runs, nodes and tool calls;
- :meth:`Metrics.set_engine`, called by the ``/metrics`` handler just before rendering: the local
  engine's snapshot (running / waiting requests, KV cache use, prefix-cache hits, token counters).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentflow.runtime.events import (
    EventBase,
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
    ToolResult,
)

if TYPE_CHECKING:
    from agentflow.runtime import Runtime
    from agentflow.server.limits import Admission
    from engine.stats import EngineStats

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_FINISHED: dict[type[EventBase], str] = {RunCompleted: "completed", RunFailed: "failed", RunCancelled: "cancelled"}
OTHER = "other"
"""The label value of everything past a label's budget of distinct values."""
UNKNOWN = "unknown"
"""The workflow of a run this process did not see start (and no longer executes)."""


class BoundedLabel:
    """The first ``limit`` distinct values of a label pass through (cut to ``max_length``); later
    ones become ``other``, so a stream of new names cannot grow the registry without bound."""

    def __init__(self, limit: int, max_length: int = 128) -> None:
        self.limit, self.max_length = limit, max_length
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        value = value[: self.max_length]
        self._seen.add(value)
        return value


_INDEX = re.compile(r"(?:\[\d+\]|#\d+)+$")


def node_id(path: str) -> str:
    """The node's id in its workflow from a node path: ``summaries[3].fetch`` -> ``fetch``,
    ``refine#2`` -> ``refine``, ``call/inner`` -> ``inner``."""
    last = path.rsplit("/", 1)[-1].rsplit(".", 1)[-1]
    return _INDEX.sub("", last) or path


@dataclass
class _Run:
    workflow: str
    started: float | None
    """The run.started event's time (None when this process saw the run only later)."""
    nodes: dict[str, float] = field(default_factory=dict)
    """path -> when its current attempt started (monotonic), for the duration of failed attempts."""


class Metrics:
    def __init__(self, *, max_label_values: int = 100) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("agentflow_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("agentflow_http_request_duration_seconds",
                                 "Time to the response's first byte, by route and method", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=r)

        self.ttft = Histogram("agentflow_time_to_first_token_seconds",
                              "Generation requests: time from arrival to the first generated text",
                              ["api"], buckets=LATENCY_BUCKETS, registry=r)
        self.inter_token = Histogram("agentflow_inter_token_seconds",
                                     "Generation requests: time between successive streamed pieces of text",
                                     ["api"], buckets=LATENCY_BUCKETS, registry=r)

        # runs, nodes, tool calls (from the runtime's events)
        self.runs_started = Counter("agentflow_runs_started_total", "Runs started, by workflow", ["workflow"],
                                    registry=r)
        self.runs_finished = Counter("agentflow_runs_finished_total",
                                     "Runs finished, by workflow and status (completed, failed, cancelled)",
                                     ["workflow", "status"], registry=r)
        self.run_duration = Histogram("agentflow_run_duration_seconds",
                                      "Runs finished: time from run.started to the terminal event (runs started by "
                                      "this process), by workflow and status", ["workflow", "status"],
                                      buckets=RUN_BUCKETS, registry=r)
        self.runs_interrupted = Counter("agentflow_runs_interrupted_total",
                                        "Times a run paused at an interrupt (approval, human input), by workflow",
                                        ["workflow"], registry=r)
        self.runs_active = Gauge("agentflow_runs_active", "Runs executing in this process now (including runs "
                                 "paused at an interrupt)", registry=r)
        self.runs_active.set_function(lambda: len(self._runs))
        self.node_duration = Histogram("agentflow_node_duration_seconds",
                                       "Node attempts that ended, by workflow, node id and status (completed, "
                                       "failed); map items and loop iterations count under their node's id",
                                       ["workflow", "node", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.node_retries = Counter("agentflow_node_retries_total", "Node attempts that failed and were retried, "
                                    "by workflow and node id", ["workflow", "node"], registry=r)
        self.tool_calls = Counter("agentflow_tool_calls_total", "Tool calls finished, by tool and outcome (ok, "
                                  "error)", ["tool", "outcome"], registry=r)
        self.tool_duration = Histogram("agentflow_tool_call_duration_seconds",
                                       "Tool call durations, by tool and outcome (ok, error)", ["tool", "outcome"],
                                       buckets=LATENCY_BUCKETS, registry=r)

        self._workflows = BoundedLabel(max_label_values)
        self._nodes = BoundedLabel(max_label_values * 4)
        self._tools = BoundedLabel(max_label_values)
        self._runs: dict[str, _Run] = {}
        self._node_ids: dict[str, str] = {}  # node path -> its (bounded) node label
        self._node_children: dict[tuple[str, str, str], Any] = {}  # labelled children, looked up once
        self._tool_children: dict[tuple[str, bool], tuple[Any, Any]] = {}
        self._resolve: Callable[[str], str | None] = lambda run_id: None
        self._handlers: dict[type[EventBase], Callable[[Any], None]] = {
            RunStarted: self._run_started, RunResumed: self._run_seen, NodeStarted: self._node_started,
            NodeCompleted: self._node_completed, NodeFailed: self._node_failed, NodeRetrying: self._node_retrying,
            ToolResult: self._tool_result, RunInterrupted: self._run_interrupted, RunCompleted: self._run_finished,
            RunFailed: self._run_finished, RunCancelled: self._run_finished,
        }

        # the local engine (a snapshot set by the /metrics handler)
        self._engine: EngineStats | None = None
        self._admission: Admission | None = None
        r.register(_EngineCollector(self))

    # -- runtime events ----------------------------------------------------------------------

    def watch(self, runtime: Runtime) -> None:
        """Count ``runtime``'s runs, nodes and tool calls from its events (from now on)."""

        def workflow_of(run_id: str) -> str | None:
            # runs resumed from the store before the listener was attached: ask the runtime
            live = getattr(runtime, "_live", {}).get(run_id)
            return live.execution.spec.name if live is not None else None

        self._resolve = workflow_of
        runtime.bus.add_listener(self.observe_event)

    def observe_event(self, event: EventBase) -> None:
        """The bus listener: one dict lookup for the events it ignores (``llm.delta`` ...)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _run(self, run_id: str) -> _Run:
        run = self._runs.get(run_id)
        if run is None:
            name = self._resolve(run_id)
            run = _Run(self._workflows(name) if name is not None else UNKNOWN, None)
            if name is not None:  # executing here: its terminal event will remove it
                self._runs[run_id] = run
        return run

    def _run_started(self, event: RunStarted) -> None:
        run = self._runs[event.run_id] = _Run(self._workflows(event.workflow), event.time)
        self.runs_started.labels(run.workflow).inc()

    def _run_seen(self, event: EventBase) -> None:
        self._run(event.run_id)

    def _run_interrupted(self, event: RunInterrupted) -> None:
        self.runs_interrupted.labels(self._run(event.run_id).workflow).inc()

    def _run_finished(self, event: EventBase) -> None:
        run = self._runs.pop(event.run_id, None) or self._run(event.run_id)
        status = _FINISHED[type(event)]
        self.runs_finished.labels(run.workflow, status).inc()
        if run.started is not None:
            self.run_duration.labels(run.workflow, status).observe(max(0.0, event.time - run.started))

    def _node_started(self, event: NodeStarted) -> None:
        if event.node is not None:
            self._run(event.run_id).nodes[event.node] = time.monotonic()

    def _node_observe(self, workflow: str, path: str, status: str, duration: float) -> None:
        node = self._node_ids.get(path)
        if node is None:
            if len(self._node_ids) >= 4096:  # map items and loop iterations make many paths per node
                self._node_ids.clear()
            node = self._node_ids[path] = self._nodes(node_id(path))
        key = (workflow, node, status)
        child = self._node_children.get(key)
        if child is None:
            child = self._node_children[key] = self.node_duration.labels(workflow, node, status)
        child.observe(duration)

    def _node_completed(self, event: NodeCompleted) -> None:
        run = self._run(event.run_id)
        if event.node is not None:
            run.nodes.pop(event.node, None)
            self._node_observe(run.workflow, event.node, "completed", event.duration)

    def _node_failed(self, event: NodeFailed) -> None:
        run = self._run(event.run_id)
        if event.node is not None:
            started = run.nodes.pop(event.node, None)
            duration = time.monotonic() - started if started is not None else 0.0
            self._node_observe(run.workflow, event.node, "failed", duration)

    def _node_retrying(self, event: NodeRetrying) -> None:
        run = self._run(event.run_id)
        if event.node is not None:
            started = run.nodes.pop(event.node, None)
            self.node_retries.labels(run.workflow, self._nodes(node_id(event.node))).inc()
            duration = time.monotonic() - started if started is not None else 0.0
            self._node_observe(run.workflow, event.node, "failed", duration)

    def _tool_result(self, event: ToolResult) -> None:
        key = (event.tool, event.error is None)
        children = self._tool_children.get(key)
        if children is None:
            if len(self._tool_children) >= 4096:
                self._tool_children.clear()
            tool, outcome = self._tools(event.tool), "ok" if event.error is None else "error"
            children = self._tool_children[key] = (self.tool_calls.labels(tool, outcome),
                                                   self.tool_duration.labels(tool, outcome))
        children[0].inc()
        children[1].observe(event.duration)

    # -- the engine -----------------------------------------------------------------------------

    def set_engine(self, stats: EngineStats | None, admission: Admission | None = None) -> None:
        """The engine snapshot (and admission counts) the next render shows; None: no engine metrics."""
        self._engine, self._admission = stats, admission

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector(Collector):
    """Engine gauges and counters from the snapshot :meth:`Metrics.set_engine` left (a collector
    cannot await ``LocalEngine.stats()`` itself)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        admission = self.metrics._admission
        if admission is not None:
            yield GaugeMetricFamily("agentflow_generation_requests_in_flight",
                                    "Generation requests (OpenAI API, /generate) admitted and not finished",
                                    value=admission.in_flight)
            yield CounterMetricFamily("agentflow_generation_requests_rejected",
                                      "Generation requests refused with 503 (at the admission limit)",
                                      value=admission.rejected)
        stats = self.metrics._engine
        if stats is None:
            return

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"agentflow_engine_{name}", doc, value=value)

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"agentflow_engine_{name}", doc, value=value)

        yield gauge("requests_running", "Requests in the running batch", stats.running)
        yield gauge("requests_waiting", "Requests queued for admission", stats.waiting)
        yield gauge("kv_cache_used_slots", "KV cache slots not free (running requests and the prefix cache)",
                    stats.kv_used)
        yield gauge("kv_cache_total_slots", "KV cache slots (tokens) in all", stats.kv_total)
        yield gauge("kv_cache_usage_ratio", "Share of KV cache slots not free (0 to 1)",
                    stats.kv_used / stats.kv_total if stats.kv_total else 0.0)
        yield gauge("prefix_cache_tokens", "KV slots held by the prefix cache", stats.cached_tokens)
        yield gauge("prefix_cache_evictable_tokens", "Prefix-cache slots no request holds (evictable)",
                    stats.evictable_tokens)
        yield gauge("prefix_cache_hit_ratio", "Share of admitted prompt tokens served from the prefix cache, "
                    "since start (0 to 1)", stats.cached_hit_tokens / stats.prompt_tokens if stats.prompt_tokens
                    else 0.0)
        yield counter("prompt_tokens", "Prompt tokens of admitted requests", stats.prompt_tokens)
        yield counter("prefix_cache_hit_tokens", "Prompt tokens served from the prefix cache",
                      stats.cached_hit_tokens)
        yield counter("generated_tokens", "Tokens generated (including fast-forwarded ones)", stats.generated_tokens)
        yield counter("retractions", "Requests retracted (preempted) for lack of KV cache", stats.retractions)
        yield counter("chunked_prefills", "Prefill chunks run", stats.chunked_prefills)
        yield counter("steps", "Forward passes run", stats.steps)


class HttpMetrics:
    """ASGI middleware: counts each request and times it to the response's start, labelled by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = _route_template(scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        started = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(route, method, str(status)).inc()


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _route_template(scope: Scope) -> str:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", ()):
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", "other"))
    return "other"


__all__ = ["CONTENT_TYPE_LATEST", "BoundedLabel", "HttpMetrics", "Metrics", "node_id"]
