"""Runs: create (202 + ``Location``; ``Idempotency-Key``; ``?wait=true``), get, list, cancel, resume,
and the run's events as Server-Sent Events.

The event stream: ``id:`` is the run's ``seq``, ``event:`` the event name, ``data:`` the event as
JSON. A client that reconnects with ``Last-Event-ID: N`` (or ``?after=N``) gets every event after
``N`` — replayed from the store, then live — with nothing missed or repeated; comment lines are sent
every ``heartbeat_s``; the stream ends after the run's terminal event. A run goes on when its
subscriber leaves.

Runs belong to the tenant of the API key that created them: another tenant's run ids answer 404.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import anyio
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from agentflow import jsondata
from agentflow.api import RunList, RunView
from agentflow.runtime import Runtime
from agentflow.runtime.errors import RunExistsError
from agentflow.runtime.events import EventBase
from agentflow.runtime.store import RunRecord
from agentflow.schemas import with_defaults
from agentflow.server.endpoint import Endpoint, body, query
from agentflow.server.errors import ApiError
from agentflow.server.generation import client_gone, until_disconnect, watching
from agentflow.server.state import DEFAULT_TENANT, ServerState, state_of, tenant_of

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255
MAX_SEQ = 2**62
"""Event ids beyond any a run can reach (SQLite integers are 64-bit)."""




class CreateRun(BaseModel):
    input: dict[str, Any] = Field(default_factory=dict, description="The run's input (checked against the "
                                  "workflow's input schema).")


class CreateQuery(BaseModel):
    wait: bool = Field(default=False, description="Answer when the run finishes (or pauses at an interrupt).")


class ListQuery(BaseModel):
    status: str | None = Field(default=None, pattern="^(pending|running|interrupted|completed|failed|cancelled)$")
    workflow: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=512)


class ResumeRun(BaseModel):
    value: Any = Field(default=None, description="The value the interrupt waits for (an approval: "
                       "{\"approved\": true})")
    node: str | None = Field(default=None, description="Which interrupt, when several wait.")


class CancelRun(BaseModel):
    reason: str = Field(default="cancelled by request", max_length=1000)


class EventsQuery(BaseModel):
    after: int | None = Field(default=None, ge=0, le=MAX_SEQ,
                              description="Replay events after this seq (as Last-Event-ID).")


class RunJSON(JSONResponse):
    """A body holding run data: a NaN or ±Infinity that a run produced (an output computed by a template,
    a value stored before tool results were made finite) is written as null, never a 500."""

    def render(self, content: Any) -> bytes:
        return jsondata.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def view(record: RunRecord, runtime: Runtime | None = None) -> dict[str, Any]:
    blocked = None
    if runtime is not None and record.status in ("pending", "running") and not runtime.executing(record.run_id):
        reason = runtime.unrecovered.get(record.run_id)
        blocked = None if reason is None else str(reason)
    return {"run_id": record.run_id, "workflow": record.workflow, "version": record.version,
            "status": record.status, "input": record.input, "output": record.output, "error": record.error,
            "interrupt": record.interrupt, "blocked": blocked, "created_at": record.created_at,
            "updated_at": record.updated_at, "events_url": f"/v1/runs/{record.run_id}/events"}


async def owned_run(state: ServerState, run_id: str, tenant: str) -> RunRecord:
    """The run if it belongs to ``tenant``; 404 otherwise (whether it exists for another tenant or not)."""
    store = state.runtime.store
    assert store is not None
    record = await store.get_run(run_id) if len(run_id) <= 128 else None
    if record is None or (record.tenant or DEFAULT_TENANT) != tenant:
        raise ApiError(404, f"no run {run_id!r}", code="run_not_found")
    return record


def idempotent_run_id(scope: str, key: str) -> str:
    """The run id a client's key maps to: same tenant and key, same run."""
    return hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()[:32]


async def start_run(state: ServerState, workflow: str, run_input: dict[str, Any], tenant: str, *,
                    run_id: str | None = None) -> tuple[RunRecord, bool]:
    """Start a run (or find the one ``run_id`` already names); return it and whether it is new. A
    stored run with the same id but another workflow or input is a 422 (a reused key)."""
    runtime = state.runtime
    if state.registry.latest(workflow) is None:
        raise ApiError(404, f"no workflow named {workflow!r}", code="workflow_not_found")
    try:
        started = await runtime.start(workflow, run_input, run_id=run_id, tenant=tenant)
    except RunExistsError:
        assert run_id is not None
        record = await owned_run(state, run_id, tenant)
        stored_schema = (record.spec or {}).get("input")
        if record.workflow != workflow or record.input not in (run_input, with_defaults(stored_schema, run_input)):
            raise ApiError(422, "this Idempotency-Key was used for a different request (another workflow or "
                           "input); use a new key", code="idempotency_key_reused") from None
        return record, False
    return await runtime.get_run(started), True


async def create_run(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    workflow = request.path_params["name"]
    options = query(request, CreateQuery)
    payload = await body(request, CreateRun)
    key = request.headers.get("idempotency-key")
    run_id = None
    if key is not None:
        if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
            raise ApiError(400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", code="bad_key",
                           param="Idempotency-Key")
        run_id = idempotent_run_id(f"runs:{tenant}", key)
    record, _ = await start_run(state, workflow, payload.input, tenant, run_id=run_id)
    headers = {"Location": f"/v1/runs/{record.run_id}"}
    if options.wait:  # a client that leaves stops only the waiting: the run goes on
        finished = await until_disconnect(request, lambda: state.runtime.wait(record.run_id))
        if finished is None:
            return client_gone()
        return RunJSON(view(finished), headers=headers)
    return RunJSON(view(record), status_code=202, headers=headers)


async def get_run(request: Request) -> Response:
    state = state_of(request)
    record = await owned_run(state, request.path_params["run_id"], tenant_of(request))
    return RunJSON(view(record, state.runtime))


async def list_runs(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    options = query(request, ListQuery)
    store = state.runtime.store
    assert store is not None
    try:
        runs, cursor = await store.list_runs(status=options.status, workflow=options.workflow, limit=options.limit,
                                             cursor=options.cursor, tenant=tenant)
    except ValueError as exc:
        raise ApiError(422, str(exc), code="invalid_cursor", param="cursor") from None
    return RunJSON({"data": [view(r, state.runtime) for r in runs], "next_cursor": cursor})


async def cancel_run(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    run_id = request.path_params["run_id"]
    record = await owned_run(state, run_id, tenant)
    reason = (await body(request, CancelRun)).reason if (await request.body()).strip() else "cancelled by request"
    if record.status in ("completed", "failed", "cancelled"):
        raise ApiError(409, f"run {run_id!r} is already {record.status}", code="run_finished")
    record = await state.runtime.cancel(run_id, reason)
    return RunJSON(view(record))


async def resume_run(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    run_id = request.path_params["run_id"]
    await owned_run(state, run_id, tenant)
    payload = await body(request, ResumeRun)
    await state.runtime.resume(run_id, payload.value, node=payload.node)
    return RunJSON(view(await state.runtime.get_run(run_id)), status_code=202,
                        headers={"Location": f"/v1/runs/{run_id}"})


def _last_event_id(request: Request) -> int:
    after = query(request, EventsQuery).after or 0
    header = request.headers.get("last-event-id", "").strip()
    if header:
        if not (header.isascii() and header.isdigit()) or len(header) > 19 or int(header) > MAX_SEQ:
            raise ApiError(400, f"Last-Event-ID must be an event's id (an integer in [0, {MAX_SEQ}]), "
                           f"got {header[:40]!r}", code="bad_last_event_id", param="Last-Event-ID")
        after = max(after, int(header))
    return after


async def run_events(request: Request) -> Response:
    state, tenant = state_of(request), tenant_of(request)
    run_id = request.path_params["run_id"]
    await owned_run(state, run_id, tenant)
    after = _last_event_id(request)
    return RunEventStream(state, run_id, after)


_HEARTBEAT = b": keep-alive\n\n"
_FRAMES: dict[tuple[str, int], bytes] = {}
"""Recent events' SSE frames: a live event reaches every subscriber of its run, and is written once."""
_FRAMES_KEPT = 8192


def _frame(event: EventBase) -> bytes:
    key = (event.run_id, event.seq)
    frame = _FRAMES.get(key)
    if frame is None:
        name = getattr(event, "event", type(event).__name__)
        frame = f"id: {event.seq}\nevent: {name}\ndata: {event.model_dump_json()}\n\n".encode()
        if len(_FRAMES) >= _FRAMES_KEPT:
            _FRAMES.clear()
        _FRAMES[key] = frame
    return frame


class RunEventStream(Response):
    """A run's events as ``text/event-stream``: the events that are ready go out as one write, a
    comment line goes out when nothing happened for ``heartbeat_s``, and the response ends after the
    terminal event. A client that leaves cancels only its own stream."""

    media_type = "text/event-stream"

    def __init__(self, state: ServerState, run_id: str, after: int) -> None:
        self.state, self.run_id, self.after = state, run_id, after
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        heartbeat = self.state.config.heartbeat_s
        sending = anyio.Lock()
        last_sent = time.monotonic()

        async def write(body: bytes, more: bool = True) -> None:
            nonlocal last_sent
            async with sending:  # the heartbeat task writes too; writes must not interleave
                await send({"type": "http.response.body", "body": body, "more_body": more})
                last_sent = time.monotonic()

        async def beat() -> None:
            while True:
                await anyio.sleep(max(0.0, last_sent + heartbeat - time.monotonic()))
                if time.monotonic() - last_sent >= heartbeat:
                    await write(_HEARTBEAT)

        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async with anyio.create_task_group() as tg:
                tg.start_soon(beat)
                tg.start_soon(end_when_draining, tg.cancel_scope)
                async for batch in self.state.runtime.event_batches(self.run_id, after=self.after):
                    await write(b"".join(_frame(event) for event in batch))
                tg.cancel_scope.cancel()
            await write(b"", more=False)

        async def end_when_draining(scope: anyio.CancelScope) -> None:
            await self.state.draining.wait()  # the server stops: the client reconnects (Last-Event-ID) to the next
            scope.cancel()

        await watching(receive, stream)


TAG = "runs"
ENDPOINTS = [
    Endpoint("POST", "/v1/workflows/{name}/runs", create_run, "Start a run", TAG, body=CreateRun, query=CreateQuery,
             responses={200: RunView, 202: RunView}, errors=(404,),
             description="202 with Location; with ?wait=true, 200 once the run finishes or pauses. The "
             "Idempotency-Key header makes retries safe: same key and body, same run; same key with "
             "another body, 422."),
    Endpoint("GET", "/v1/runs", list_runs, "List runs (newest first, cursor pagination)", TAG, query=ListQuery,
             responses={200: RunList}),
    Endpoint("GET", "/v1/runs/{run_id}", get_run, "Get a run", TAG, responses={200: RunView}, errors=(404,)),
    Endpoint("POST", "/v1/runs/{run_id}/cancel", cancel_run, "Cancel a run", TAG, responses={200: RunView},
             errors=(404, 409)),
    Endpoint("POST", "/v1/runs/{run_id}/resume", resume_run, "Resume a run waiting at an interrupt", TAG,
             body=ResumeRun, responses={202: RunView}, errors=(404, 409)),
    Endpoint("GET", "/v1/runs/{run_id}/events", run_events, "Follow a run's events (SSE)", TAG, query=EventsQuery,
             responses={200: "text/event-stream"}, errors=(404,),
             description="id: is the event's seq; reconnect with Last-Event-ID (or ?after=) to resume."),
]

__all__ = ["ENDPOINTS", "RunJSON", "idempotent_run_id", "owned_run", "start_run", "view"]
