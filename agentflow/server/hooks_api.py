"""Webhook triggers: ``POST /hooks/{hook}`` starts a run of the workflow whose ``triggers:`` declare the hook.

In order, nothing started until the last step:

1. the hook is looked up among the newest versions of the registered workflows (404 if none has it);
2. its secret is read from the environment variable the trigger names (503 and a logged error when
   it is unset or unusable — a configuration problem, and senders retry 5xx);
3. the signature is checked on the raw body (:mod:`agentflow.server.signatures`; 401 when missing
   or wrong, the body not even parsed);
4. a delivery id seen before (``webhook-id``; ``X-GitHub-Delivery`` for GitHub) answers with the run
   it started (``duplicate: true``): the run id is derived from the tenant, hook and delivery id;
5. the body is parsed as JSON (400), the trigger's ``input`` templates are rendered over ``payload``
   and ``headers`` and the result checked against the workflow's input schema (422);
6. the run starts under the trigger's ``tenant``: 202 with the run and ``Location: /v1/runs/{id}``.

The route needs no API key: the signature is the authentication. See docs/server-hooks.md.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentflow.api import RunView
from agentflow.dsl.errors import TemplateError
from agentflow.dsl.ir import Trigger, WorkflowSpec
from agentflow.dsl.templates import render, render_value
from agentflow.jsondata import json_problem
from agentflow.runtime.errors import InvalidInputError
from agentflow.runtime.store import RunRecord
from agentflow.server.endpoint import Endpoint, parse_json
from agentflow.server.errors import ApiError
from agentflow.server.registry import Registry
from agentflow.server.runs_api import RunJSON, idempotent_run_id, owned_run, start_run, view
from agentflow.server.signatures import SecretError, SignatureError, decode_secret, verify_github, verify_standard
from agentflow.server.state import DEFAULT_TENANT, ServerState, state_of

log = logging.getLogger(__name__)

HIDDEN_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Request headers the input templates do not see."""
MAX_DELIVERY_ID = 255


class HookRun(RunView):
    hook: str
    duplicate: bool = Field(description="True when this delivery id was received before: the run it started is "
                            "returned and nothing new starts.")


@dataclass(frozen=True)
class Hook:
    """A trigger and the workflow it starts."""

    workflow: str
    trigger: Trigger


def find_hooks(registry: Registry, name: str) -> list[Hook]:
    """Every trigger named ``name`` among the newest versions of the registered workflows (one, when
    hook names are unique as they should be)."""
    found = []
    for workflow in registry.names():
        latest = registry.latest(workflow)
        if latest is not None:
            found += [Hook(workflow, t) for t in latest.spec.triggers if t.name == name]
    return found


def hook_conflicts(registry: Registry, spec: WorkflowSpec) -> list[str]:
    """The hook names ``spec`` declares that another registered workflow already declares (a caller
    registering ``spec`` should refuse it then: a delivery must start exactly one workflow)."""
    return [t.name for t in spec.triggers
            if any(hook.workflow != spec.name for hook in find_hooks(registry, t.name))]


def _secret(hook: Hook, name: str) -> bytes:
    trigger = hook.trigger
    value = os.environ.get(trigger.secret_env)
    if not value or not value.strip():
        log.error("hook %r (workflow %r): environment variable %s is not set; refusing deliveries", name,
                  hook.workflow, trigger.secret_env)
        raise ApiError(503, "this hook is not configured on the server", code="hook_not_configured")
    try:
        return decode_secret(value, scheme=trigger.scheme)
    except SecretError as exc:
        log.error("hook %r (workflow %r): the secret in %s is unusable: %s; refusing deliveries", name,
                  hook.workflow, trigger.secret_env, exc)
        raise ApiError(503, "this hook is not configured on the server", code="hook_not_configured") from None


def _verify(request: Request, trigger: Trigger, secret: bytes, raw: bytes, tolerance_s: float) -> str | None:
    """The delivery id after checking the signature (None: a GitHub delivery without X-GitHub-Delivery)."""
    if trigger.scheme == "github":
        verify_github(secret, request.headers, raw)
        delivery = request.headers.get("x-github-delivery", "").strip()
        if len(delivery) > MAX_DELIVERY_ID:
            raise ApiError(400, f"X-GitHub-Delivery must be at most {MAX_DELIVERY_ID} characters",
                           code="bad_delivery_id", param="X-GitHub-Delivery")
        return delivery or None
    return verify_standard(secret, request.headers, raw, tolerance_s=tolerance_s)


def _payload(raw: bytes) -> Any:
    if not raw.strip():
        raise ApiError(400, "the webhook body is empty; send JSON", code="invalid_json")
    return parse_json(raw, "the webhook body")


def render_input(trigger: Trigger, payload: Any, headers: dict[str, str]) -> dict[str, Any]:
    """The run's input for a delivery: the trigger's ``input`` rendered over ``payload`` and ``headers``
    (or the payload itself). Raises ``ApiError`` 422 when a template fails or the result is no object."""
    namespace = {"payload": payload, "headers": headers}
    where = f"trigger {trigger.name!r} input"
    try:
        if trigger.input is None:
            value = payload
        elif isinstance(trigger.input, str):
            value = render(trigger.input, namespace, field="input")
        else:
            value = render_value(trigger.input, namespace, field="input")
    except TemplateError as exc:
        raise ApiError(422, f"{where}: {exc}", code="hook_input_error") from None
    if not isinstance(value, dict):
        raise ApiError(422, f"{where} must give a JSON object, got {type(value).__name__}", code="hook_input_error")
    try:
        value = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise ApiError(422, f"{where} is not plain JSON data", code="hook_input_error") from None
    problem = json_problem(value)
    if problem is not None:
        raise ApiError(422, f"{where} is not plain JSON data: at {problem[0] or '/'}: {problem[1]}",
                       code="hook_input_error")
    return value  # type: ignore[no-any-return]


def _accepted(record: RunRecord, hook: str, duplicate: bool) -> JSONResponse:
    return RunJSON({**view(record), "hook": hook, "duplicate": duplicate}, status_code=202,
                        headers={"Location": f"/v1/runs/{record.run_id}"})


async def _seen(state: ServerState, run_id: str, tenant: str) -> RunRecord | None:
    store = state.runtime.store
    assert store is not None
    record = await store.get_run(run_id)
    return record if record is not None and (record.tenant or DEFAULT_TENANT) == tenant else None


async def receive_hook(request: Request) -> Response:
    state = state_of(request)
    name = request.path_params["hook"]
    hooks = find_hooks(state.registry, name) if len(name) <= 64 else []
    if not hooks:
        raise ApiError(404, f"no hook named {name[:64]!r}", code="hook_not_found")
    if len(hooks) > 1:
        log.error("hook %r is declared by several workflows (%s); refusing deliveries until one is removed", name,
                  ", ".join(h.workflow for h in hooks))
        raise ApiError(409, f"hook {name!r} is declared by several workflows", code="hook_conflict")
    hook = hooks[0]
    trigger = hook.trigger
    secret = _secret(hook, name)
    raw = await request.body()
    try:
        delivery = _verify(request, trigger, secret, raw, state.config.webhook_tolerance_s)
    except SignatureError as exc:
        log.warning("hook %r: refused a delivery from %s: %s", name,
                    request.client.host if request.client else "?", exc.code)
        raise ApiError(401, exc.message, code=exc.code) from None
    tenant = trigger.tenant
    run_id = idempotent_run_id(f"hooks:{tenant}:{name}", delivery) if delivery is not None else None
    if run_id is not None:
        seen = await _seen(state, run_id, tenant)
        if seen is not None:
            log.info("hook %r: delivery %s was received before (run %s)", name, delivery, run_id)
            return _accepted(seen, name, duplicate=True)
    headers = {k: v for k, v in request.headers.items() if k not in HIDDEN_HEADERS}
    run_input = render_input(trigger, _payload(raw), headers)
    try:
        record, new = await start_run(state, hook.workflow, run_input, tenant, run_id=run_id)
    except InvalidInputError as exc:
        raise ApiError(422, f"trigger {name!r}: {exc}", code="invalid_input") from None
    except ApiError as exc:
        if exc.code != "idempotency_key_reused" or run_id is None:
            raise
        record, new = await owned_run(state, run_id, tenant), False  # the same delivery, concurrently
    log.info("hook %r: delivery %s %s run %s of %r", name, delivery or "-", "started" if new else "matched",
             record.run_id, hook.workflow)
    return _accepted(record, name, duplicate=not new)


TAG = "hooks"
ENDPOINTS = [
    Endpoint("POST", "/hooks/{hook}", receive_hook, "Deliver a webhook: start a run of the workflow declaring it",
             TAG, raw_body="application/json", responses={202: HookRun}, errors=(401, 404, 409, 503), auth=False,
             description="Signed with Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature) or, for a "
             "github trigger, X-Hub-Signature-256; no API key. 401 for a missing or wrong signature or a timestamp "
             "out of tolerance, nothing started; a delivery id seen before answers 202 with the same run "
             "(duplicate: true). 422 when the trigger's input templates fail or the input does not match the "
             "workflow's schema; 503 when the hook's secret is not configured."),
]

__all__ = ["ENDPOINTS", "Hook", "HookRun", "find_hooks", "hook_conflicts", "render_input"]
