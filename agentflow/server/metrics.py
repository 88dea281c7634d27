"""Prometheus metrics (``GET /metrics``), on a registry of the app's own.

Labels are bounded: ``route`` is the route's path template (``/v1/runs/{run_id}``), never the raw
path, and anything unmatched is ``other``; workflows, nodes and tools are named by their definitions.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("agentflow_http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("agentflow_http_request_duration_seconds",
                                 "Time to the response's first byte, by route and method", ["route", "method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

        self.ttft = Histogram("agentflow_time_to_first_token_seconds",
                              "Generation requests: time from arrival to the first generated text",
                              ["api"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inter_token = Histogram("agentflow_inter_token_seconds",
                                     "Generation requests: time between successive streamed pieces of text",
                                     ["api"], buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


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


__all__ = ["CONTENT_TYPE_LATEST", "HttpMetrics", "Metrics"]
