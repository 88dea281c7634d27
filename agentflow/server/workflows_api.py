"""Workflows: list, get (IR and source), validate, register / update (versioned), delete.

YAML goes in as the raw request body (``Content-Type: application/yaml``; ``text/yaml`` and
``text/plain`` are accepted too); a JSON body is taken as IR (the same document YAML maps to).
Validation errors come back as a 422 whose ``error.details`` lists every issue with its code, JSON
pointer, and for YAML its line and column.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentflow.api import ValidationResult, WorkflowDetail, WorkflowList, WorkflowSummary
from agentflow.dsl.errors import WorkflowValidationError
from agentflow.dsl.ir import WorkflowSpec
from agentflow.server.endpoint import Endpoint, parse_json, query
from agentflow.server.errors import ApiError
from agentflow.server.hooks_api import hook_conflicts
from agentflow.server.registry import Version
from agentflow.server.state import ServerState, state_of, tenant_of

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain")


class VersionQuery(BaseModel):
    version: int | None = Field(default=None, ge=1)


def _summary(versions: list[Version]) -> dict[str, Any]:
    latest = versions[-1]
    return {"name": latest.spec.name, "version": latest.version, "description": latest.spec.description,
            "versions": [v.version for v in versions], "origin": latest.origin, "created_at": latest.created_at}


Parsed = tuple[WorkflowSpec | None, str | None, list[dict[str, Any]]]


async def _parse(request: Request) -> Parsed:
    """The workflow in the body (YAML or JSON IR), its YAML source, and every issue found. Parsed in a worker
    thread: a document of tens of thousands of nodes takes seconds of pure Python, which must not stall
    every other request."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the workflow must be UTF-8 text", code="invalid_encoding") from None
    if not text.strip():
        raise ApiError(400, "the request body is empty; send the workflow as YAML", code="empty_body")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and kind != "application/json" and kind not in YAML_TYPES:
        raise ApiError(415, f"send the workflow as application/yaml (or IR as application/json), not {kind}",
                       code="unsupported_media_type")
    state = state_of(request)
    known = dict(state.runtime.workflows)  # specs, not just names: calls that come back around are refused
    tools = state.runtime.tools  # the registry, not just names: tool nodes' argument names are checked too
    data = parse_json(text) if kind == "application/json" else None
    return await anyio.to_thread.run_sync(_parse_sync, text, data, known, tools)


def _parse_sync(text: str, data: Any, known: dict[str, WorkflowSpec], tools: Any) -> Parsed:
    from agentflow.dsl.validate import validate_data
    from agentflow.dsl.yaml_loader import load_yaml, validate_yaml

    if data is not None:
        spec, issues = validate_data(data, workflows=known, tools=tools)
        return (None if issues else spec), None, [i.model_dump() for i in issues]
    issues = validate_yaml(text, workflows=known, tools=tools)
    if issues:
        return None, text, [i.model_dump() for i in issues]
    try:
        return load_yaml(text, workflows=known, tools=tools), text, []
    except WorkflowValidationError as exc:  # pragma: no cover - validate_yaml said it was fine
        return None, text, [i.model_dump() for i in exc.issues]


def _invalid(issues: list[dict[str, Any]]) -> ApiError:
    first = issues[0]
    where = f" (line {first['line']}, column {first['column']})" if first.get("line") else ""
    return ApiError(422, f"{len(issues)} problem(s) in the workflow; first: {first['code']}: {first['message']}"
                    f"{where}", code="invalid_workflow", param=first.get("pointer") or None, details=issues)


async def list_workflows(request: Request) -> Response:
    registry = state_of(request).registry
    return JSONResponse({"data": [_summary(registry.versions(name)) for name in registry.names()]})


async def get_workflow(request: Request) -> Response:
    name = request.path_params["name"]
    registry = state_of(request).registry
    versions = registry.versions(name)
    if not versions:
        raise ApiError(404, f"no workflow named {name!r}", code="workflow_not_found")
    wanted = query(request, VersionQuery).version
    chosen = versions[-1] if wanted is None else next((v for v in versions if v.version == wanted), None)
    if chosen is None:
        raise ApiError(404, f"workflow {name!r} has no version {wanted} (versions: {[v.version for v in versions]})",
                       code="version_not_found")
    body = {**_summary(versions), "version": chosen.version, "ir": chosen.spec.to_dict(), "source": chosen.source}
    return JSONResponse(body)


async def validate_workflow(request: Request) -> Response:
    spec, _, issues = await _parse(request)
    if issues:
        raise _invalid(issues)
    assert spec is not None
    return JSONResponse({"valid": True, "name": spec.name, "issues": []})


async def register_workflow(request: Request) -> Response:
    spec, source, issues = await _parse(request)
    if issues:
        raise _invalid(issues)
    assert spec is not None
    expected = request.path_params.get("name")
    if expected is not None and spec.name != expected:
        raise ApiError(422, f"the workflow is named {spec.name!r} but the URL says {expected!r}",
                       code="name_mismatch", param="name")
    state = state_of(request)
    registry = state.registry
    _check_triggers(state, spec, tenant_of(request))
    existed = registry.latest(spec.name) is not None
    assert state.runtime.store is not None
    entry = await registry.register(spec, state.runtime.store, source=source)
    status = 200 if existed else 201
    return JSONResponse(_summary(registry.versions(entry.spec.name)), status_code=status,
                        headers={"Location": f"/v1/workflows/{entry.spec.name}"})


def _check_triggers(state: ServerState, spec: WorkflowSpec, tenant: str) -> None:
    """A workflow registered over the API may not take a hook name another workflow has, nor start runs
    for another tenant than the one registering it (with API keys, each tenant owns its runs)."""
    _check_owner(state, spec.name, tenant, "replace")
    taken = hook_conflicts(state.registry, spec)
    if taken:
        raise ApiError(409, f"hook name(s) {taken} are already declared by another workflow", code="hook_conflict",
                       param="triggers")
    for i, trigger in enumerate(spec.triggers):
        if state.keys and trigger.tenant != tenant:
            raise ApiError(422, f"trigger {trigger.name!r} starts runs for tenant {trigger.tenant!r}, but this API "
                           f"key belongs to {tenant!r}; set `tenant: {tenant}` on the trigger",
                           code="trigger_tenant_mismatch", param=f"triggers.{i}.tenant")


def _check_owner(state: ServerState, name: str, tenant: str, action: str) -> None:
    """Workflows are shared by the tenants, but one whose triggers start runs for another tenant belongs to
    that tenant: no one else may replace or delete it (and so take over its webhooks and their payloads)."""
    latest = state.registry.latest(name)
    owners = sorted({t.tenant for t in latest.spec.triggers}) if latest is not None and state.keys else []
    if any(owner != tenant for owner in owners):
        raise ApiError(403, f"workflow {name!r} has triggers that start runs for tenant(s) {owners}; only "
                       f"{'they' if len(owners) > 1 else 'that tenant'} may {action} it", code="workflow_owned",
                       param="name")


async def delete_workflow(request: Request) -> Response:
    name = request.path_params["name"]
    state = state_of(request)
    _check_owner(state, name, tenant_of(request), "delete")
    if not state.registry.remove(name):
        raise ApiError(404, f"no workflow named {name!r}", code="workflow_not_found")
    assert state.runtime.store is not None
    await state.runtime.store.delete_workflow(name)
    return Response(status_code=204)


TAG = "workflows"
_YAML = "application/yaml"
ENDPOINTS = [
    Endpoint("GET", "/v1/workflows", list_workflows, "List workflows", TAG, responses={200: WorkflowList}),
    Endpoint("POST", "/v1/workflows/validate", validate_workflow, "Validate a workflow (YAML) without registering",
             TAG, raw_body=_YAML, responses={200: ValidationResult}, errors=(415,)),
    Endpoint("POST", "/v1/workflows", register_workflow, "Register a workflow (YAML); a known name gets a new "
             "version", TAG, raw_body=_YAML, responses={200: WorkflowSummary, 201: WorkflowSummary},
             errors=(403, 409, 415)),
    Endpoint("GET", "/v1/workflows/{name}", get_workflow, "Get a workflow: IR and source", TAG,
             query=VersionQuery, responses={200: WorkflowDetail}, errors=(404,)),
    Endpoint("PUT", "/v1/workflows/{name}", register_workflow, "Register or update the named workflow (YAML)",
             TAG, raw_body=_YAML, responses={200: WorkflowSummary, 201: WorkflowSummary},
             errors=(403, 409, 415), operation_id="put_workflow"),
    Endpoint("DELETE", "/v1/workflows/{name}", delete_workflow, "Delete a workflow (runs of it go on)", TAG,
             responses={204: None}, errors=(403, 404)),
]

__all__ = ["ENDPOINTS"]
