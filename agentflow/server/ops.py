"""Operations: ``/health``, ``/ready``, ``/metrics``, ``/openapi.json`` and the ``/docs`` page."""

from __future__ import annotations

import json
import logging

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from agentflow import __version__
from agentflow.api import Health, Readiness
from agentflow.server.endpoint import Endpoint
from agentflow.server.state import state_of

log = logging.getLogger(__name__)


async def health(request: Request) -> Response:
    """Alive: the process answers (nothing else is checked)."""
    return JSONResponse({"status": "ok", "version": __version__})


async def ready(request: Request) -> Response:
    """Ready: the store is open and the model loaded; 503 until then."""
    state = state_of(request)
    store = state.runtime.store
    store_ok = store is not None and not getattr(getattr(store, "_writer", None), "closed", False)
    loaded = state.llm is None or state.ready
    ok = bool(store_ok and loaded)
    body = {"ready": ok, "model": state.model_name if state.llm is not None else None, "model_loaded": loaded,
            "store": "open" if store_ok else "closed"}
    return JSONResponse(body, status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "1"})


async def metrics(request: Request) -> Response:
    """Prometheus text format; the engine's gauges are read now, from the local model's snapshot."""
    state = state_of(request)
    stats = None
    stats_of = getattr(state.llm, "stats", None)  # LocalEngine: EngineStats, or None until it is loaded
    if callable(stats_of):
        try:
            stats = await stats_of()
        except Exception:
            log.exception("reading the engine's stats failed")
    state.metrics.set_engine(stats, state.admission)
    body, content_type = state.metrics.render()
    return Response(body, media_type=content_type)


async def openapi_json(request: Request) -> Response:
    return JSONResponse(state_of(request).extra["openapi"])


_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentflow API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
code{background:#f3f3f3;padding:0 .25rem}h2{margin-top:2rem}.m{font-weight:700;display:inline-block;width:4.5rem}
details{margin:.3rem 0}pre{background:#f6f6f6;padding:.5rem;overflow:auto}</style></head>
<body><h1>agentflow API</h1><p>The machine-readable spec is <a href="/openapi.json">/openapi.json</a>.</p>
<div id="ops"></div>
<script>
const doc = __SPEC__;
const out = document.getElementById("ops");
const byTag = {};
for (const [path, item] of Object.entries(doc.paths))
  for (const [method, op] of Object.entries(item)) (byTag[op.tags[0]] ||= []).push([method, path, op]);
for (const [tag, ops] of Object.entries(byTag)) {
  const h = document.createElement("h2"); h.textContent = tag; out.appendChild(h);
  for (const [method, path, op] of ops) {
    const d = document.createElement("details");
    const s = document.createElement("summary");
    s.innerHTML = `<span class="m"></span><code></code> `;
    s.querySelector(".m").textContent = method.toUpperCase();
    s.querySelector("code").textContent = path;
    s.append(op.summary || "");
    d.appendChild(s);
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify({parameters: op.parameters, requestBody: op.requestBody,
                                      responses: Object.keys(op.responses)}, null, 2);
    d.appendChild(pre); out.appendChild(d);
  }
}
</script></body></html>"""


async def docs(request: Request) -> Response:
    spec = json.dumps(state_of(request).extra["openapi"]).replace("</", "<\\/")
    return HTMLResponse(_DOCS.replace("__SPEC__", spec))


ENDPOINTS = [
    Endpoint("GET", "/health", health, "Liveness", "operations", responses={200: Health}, auth=False),
    Endpoint("GET", "/ready", ready, "Readiness: model loaded, store open", "operations",
             responses={200: Readiness, 503: Readiness}, auth=False),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", "operations", responses={200: "text/plain"},
             auth=False),
    Endpoint("GET", "/openapi.json", openapi_json, "This API's OpenAPI document", "operations",
             responses={200: None}, auth=False),
    Endpoint("GET", "/docs", docs, "API docs page", "operations", responses={200: "text/html"}, auth=False),
]

__all__ = ["ENDPOINTS"]
