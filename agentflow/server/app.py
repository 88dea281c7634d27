"""``create_app``: the Starlette application behind ``agentflow serve``.

    app = create_app(ServerConfig(model="demo", workflows=[Path("workflows")]))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Route groups live one per module (``ops``, ``workflows_api``, ``runs_api``, ``hooks_api``,
``openai_api``, ``generate_api``), each a list of :class:`~agentflow.server.endpoint.Endpoint`; this
module wires them to the runtime, the model and the limits, and builds ``/openapi.json`` from them.
The web UI's static files (``ui``) are plain routes after them, outside the document.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response

from agentflow import __version__
from agentflow.dsl.ir import WorkflowSpec
from agentflow.llm.base import LLM
from agentflow.runtime import Runtime
from agentflow.server import generate_api, hooks_api, openai_api, ops, runs_api, ui, workflows_api
from agentflow.server.config import ServerConfig
from agentflow.server.endpoint import Endpoint, Handler, openapi
from agentflow.server.errors import EXCEPTION_HANDLERS, error_response
from agentflow.server.hooks_api import hook_conflicts
from agentflow.server.limits import Admission, BodyLimit, RateLimiter
from agentflow.server.metrics import HttpMetrics, Metrics
from agentflow.server.registry import Registry
from agentflow.server.state import ServerState, state_of
from agentflow.tool import Tool, ToolRegistry

log = logging.getLogger(__name__)

MODULES = (ops, workflows_api, runs_api, hooks_api, openai_api, generate_api)


def endpoints() -> list[Endpoint]:
    return [ep for module in MODULES for ep in module.ENDPOINTS]


def create_app(config: ServerConfig | None = None, *, llm: LLM | None = None,
               tools: ToolRegistry | Sequence[Tool | Any] | None = None) -> Starlette:
    """The app. ``llm``: a backend to use instead of ``LocalEngine(config.model)`` (left open at
    shutdown); ``tools``: tools to add to those of ``config.tools`` and the workflow folders."""
    config = config or ServerConfig()
    metrics = Metrics()
    eps = endpoints()
    document = openapi(eps, title="agentflow", version=__version__, auth=bool(config.api_keys))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            model = llm
            if model is None and config.model is not None:
                from agentflow.llm.local import LocalEngine

                model = LocalEngine(config.model, **config.engine)
                stack.push_async_callback(model.aclose)
            registry_tools = _tools(config, tools)
            runtime = await stack.enter_async_context(Runtime(llm=model, tools=registry_tools, store=config.store))
            state = ServerState(config=config, runtime=runtime, registry=Registry(runtime), metrics=metrics,
                                llm=model, model_name=config.model_name or config.model,
                                keys={key.digest(): key.tenant for key in config.api_keys},
                                limiter=RateLimiter(config.rate_limit_per_s, config.rate_limit_burst),
                                admission=Admission(config.max_queue))
            metrics.watch(runtime)
            state.extra["openapi"] = document
            _load_workflows(state, config.workflows)
            assert runtime.store is not None
            restored = await state.registry.restore(runtime.store, lambda spec: _no_hook_clash(state, spec))
            if restored:
                log.info("restored %d workflow version(s) registered over the API", restored)
            app.state.agentflow = state
            async with anyio.create_task_group() as tg:
                tg.start_soon(_warm_up, state)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()

    middleware = [Middleware(HttpMetrics, metrics=metrics), Middleware(BodyLimit, max_bytes=config.max_body_bytes)]
    if config.cors_origins:
        middleware.append(Middleware(_CORS, allow_origins=config.cors_origins, allow_credentials=False,
                                     allow_methods=["GET", "POST", "PUT", "DELETE"],
                                     allow_headers=["Authorization", "Content-Type", "Idempotency-Key",
                                                    "Last-Event-ID"],
                                     expose_headers=["Location", "Retry-After"]))
    routes = [ep.route() for ep in _guarded(eps)] + ui.routes(config)  # the UI's files: not in the document
    return Starlette(routes=routes, middleware=middleware, exception_handlers=EXCEPTION_HANDLERS,
                     lifespan=lifespan)


def _guarded(eps: list[Endpoint]) -> list[Endpoint]:
    """Each endpoint's handler behind the API-key check (and rate limit) when it needs auth."""
    out = []
    for ep in eps:
        if ep.auth:
            ep = Endpoint(**{**ep.__dict__, "handler": _with_auth(ep.handler),
                             "operation_id": ep.operation_id or ep.handler.__name__})
        out.append(ep)
    return out


def _with_auth(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        request.state.tenant = state_of(request).tenant_for(request)
        return await handler(request)

    guarded.__name__ = handler.__name__
    return guarded


def _tools(config: ServerConfig, extra: ToolRegistry | Sequence[Tool | Any] | None) -> ToolRegistry:
    from agentflow.discovery import load_tools

    auto = next((d / "tools.py" for d in map(Path, config.workflows) if d.is_dir() and (d / "tools.py").is_file()),
                None)
    registry, _ = load_tools(config.tools, auto)
    if extra is not None:
        registry = registry.merged(extra if isinstance(extra, ToolRegistry) else ToolRegistry(extra))
    return registry


class _CORS(CORSMiddleware):
    """Starlette's CORS, with a refused preflight (origin, method or header not allowed) answered in the error
    shape of every other route instead of plain text."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return error_response(400, f"CORS preflight refused: {bytes(response.body).decode()}",
                              code="cors_refused", headers=headers)


def _load_workflows(state: ServerState, paths: Sequence[Path]) -> None:
    """The workflow files to serve, each checked against the server's tools (names and arguments); files that
    share a workflow name, and workflows whose calls come back around, are skipped (as ``agentflow run`` does)."""
    from agentflow.discovery import without_cycles, without_duplicates
    from agentflow.dsl.errors import WorkflowValidationError
    from agentflow.dsl.yaml_loader import load_yaml

    files: list[Path] = []
    for path in paths:
        path = Path(path)
        files += sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
    loaded: dict[Path, WorkflowSpec] = {}
    texts: dict[Path, str] = {}
    for file in files:
        try:
            texts[file] = file.read_text(encoding="utf-8")
            loaded[file] = load_yaml(texts[file], source=str(file), tools=state.runtime.tools)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("skipping workflow %s: %s", file, exc)
        except WorkflowValidationError as exc:
            log.warning("skipping workflow %s: %d problem(s), first: %s", file, len(exc.issues),
                        exc.issues[0] if exc.issues else "?")
    for file, spec in without_cycles(without_duplicates(loaded)).items():
        text = texts[file]
        taken = hook_conflicts(state.registry, spec)
        if taken:
            log.warning("skipping workflow %s: hook name(s) %s already declared by another workflow", file, taken)
            continue
        state.registry.add(spec, source=text, origin=f"file:{file}")
    log.info("serving %d workflow(s)", len(state.registry.names()))


def _no_hook_clash(state: ServerState, spec: Any) -> bool:
    taken = hook_conflicts(state.registry, spec)
    if taken:
        log.warning("skipping stored workflow %s: hook name(s) %s already declared by another workflow", spec.name,
                    taken)
    return not taken


async def _warm_up(state: ServerState) -> None:
    """Load the local model before the first request needs it; ``/ready`` turns true when done."""
    engine = getattr(state.llm, "engine", None)
    if callable(engine):
        try:
            await engine()
        except Exception:
            log.exception("the local model failed to load; generation requests will fail")
            return
    state.ready = True


__all__ = ["create_app", "endpoints"]
