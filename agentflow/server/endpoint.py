"""``Endpoint``: one route declared once — its handler for Starlette and its entry in ``/openapi.json``.

Request bodies and query strings are pydantic models, parsed by :func:`body` and :func:`query` with
the errors the rest of the server uses (400 for a body that is not JSON, 422 naming the bad field).
The OpenAPI document is generated from the same models, so what the docs promise is what the code
checks.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentflow import jsondata
from agentflow.jsondata import json_problem
from agentflow.server.errors import ApiError, ErrorBody, from_validation

M = TypeVar("M", bound=BaseModel)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
"""A ``\\uD800``-``\\uDFFF`` escape: only then can parsed JSON hold a lone surrogate (UTF-8 input cannot)."""
Handler = Callable[[Request], Awaitable[Response]]
Body = type[BaseModel] | str
ResponseSpec = Body | tuple[Body, ...] | None
"""A response's body: a model (JSON), a media type (``text/event-stream``), several of those (one
status answered in one media type or another, e.g. ``(Completion, SSE)`` for a request that may
ask to stream), or None (no body)."""

SSE = "text/event-stream"
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "title": "ServerSentEvent", "type": "object", "required": ["data"],
    "description": "One event of a text/event-stream response (comment lines, the heartbeats, are not events).",
    "properties": {"id": {"type": "string"}, "event": {"type": "string"},
                   "data": {"type": "string", "description": "The payload; JSON unless the operation says otherwise."},
                   "retry": {"type": "integer", "minimum": 0}},
}

_ERROR_TEXT = {400: "malformed request", 401: "missing or invalid API key", 404: "not found",
               409: "conflict with the resource's state", 413: "request body too large",
               422: "invalid request", 429: "rate limit exceeded (see Retry-After)",
               503: "overloaded (see Retry-After)"}


@dataclass
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    responses: dict[int, ResponseSpec] = field(default_factory=lambda: {200: None})
    errors: Sequence[int] = ()
    """Error statuses this endpoint can answer besides the common ones (400, 401, 413, 422, 429)."""
    auth: bool = True
    raw_body: str | None = None
    """Media type of a body that is not a JSON model (e.g. ``application/yaml``)."""
    description: str | None = None
    operation_id: str | None = None

    def route(self) -> Route:
        return Route(self.path, self.handler, methods=[self.method], name=self.operation_id or self.handler.__name__)


def parse_json(raw: bytes | str, what: str = "the request body", *, lone_surrogates: bool = False) -> Any:
    """``raw`` parsed as strict JSON: no ``NaN`` / ``Infinity``, no number too large for a float, and (unless
    ``lone_surrogates``, for callers that replace them) no string escaping half a surrogate pair.
    Raises ``ApiError`` 400 ``invalid_json`` saying what and where."""
    try:
        data = jsondata.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply", code="invalid_json") from None
    if not lone_surrogates and _SURROGATE_ESCAPE.search(raw if isinstance(raw, bytes) else raw.encode()):
        problem = json_problem(data)
        if problem is not None:
            raise ApiError(400, f"{what} is not valid JSON: at {problem[0] or '/'}: {problem[1]}",
                           code="invalid_json", param=problem[0].lstrip("/").replace("/", ".") or None)
    return data


async def body(request: Request, model: type[M], *, lone_surrogates: bool = False) -> M:
    """The JSON body as ``model``: 400 if it is not JSON (:func:`parse_json`), 422 naming the first bad field."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    data = parse_json(raw, lone_surrogates=lone_surrogates)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def query(request: Request, model: type[M]) -> M:
    """The query string as ``model`` (each parameter once; 422 naming a bad one)."""
    params = request.query_params
    data: dict[str, Any] = {}
    for key in params:
        values = params.getlist(key)
        data[key] = values if len(values) > 1 else values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, where="query") from None


# ---- OpenAPI ------------------------------------------------------------------------------------------------

_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


def openapi(endpoints: Sequence[Endpoint], *, title: str, version: str, auth: bool) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints``."""
    models: set[type[BaseModel]] = {ErrorBody}
    for ep in endpoints:
        specs = [one for spec in ep.responses.values() for one in (spec if isinstance(spec, tuple) else (spec,))]
        models.update(m for m in (ep.body, *specs) if isinstance(m, type))
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, defs = models_json_schema([(m, "validation") for m in ordered],
                                    ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    def ref(model: type[BaseModel]) -> dict[str, Any]:
        return refs[(model, "validation")]

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        path = _PARAM.sub(r"{\1}", ep.path)
        op: dict[str, Any] = {"summary": ep.summary, "tags": [ep.tag],
                              "operationId": ep.operation_id or ep.handler.__name__}
        if ep.description:
            op["description"] = ep.description
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in _PARAM.findall(ep.path)]
        if ep.query is not None:
            schema = ep.query.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            required = set(schema.get("required", ()))
            for name, prop in schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop})
        if params:
            op["parameters"] = params
        if ep.body is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(ep.body)}}}
        elif ep.raw_body is not None:
            op["requestBody"] = {"required": True, "content": {ep.raw_body: {"schema": {"type": "string"}}}}
        responses: dict[str, Any] = {}
        for status, spec in ep.responses.items():
            entry: dict[str, Any] = {"description": "OK" if status < 300 else _ERROR_TEXT.get(status, "response")}
            content: dict[str, Any] = {}
            for one in spec if isinstance(spec, tuple) else (spec,):
                if isinstance(one, type):
                    content["application/json"] = {"schema": ref(one)}
                elif one == SSE:  # OpenAPI < 3.2: an event stream's `schema` describes each event
                    schemas["ServerSentEvent"] = SSE_EVENT_SCHEMA
                    content[one] = {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}
                elif isinstance(one, str):
                    content[one] = {"schema": {"type": "string"}}
            if content:
                entry["content"] = content
            responses[str(status)] = entry
        common = [400, 422, 429]
        if ep.auth and auth:
            common.append(401)
        if ep.body is not None or ep.raw_body is not None:
            common.append(413)
        for status in sorted({*common, *ep.errors} - set(ep.responses)):
            responses[str(status)] = {"description": _ERROR_TEXT.get(status, "error"),
                                      "content": {"application/json": {"schema": ref(ErrorBody)}}}
        op["responses"] = responses
        if ep.auth and auth:
            op["security"] = [{"bearer": []}]
        paths.setdefault(path, {})[ep.method.lower()] = op
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths,
                           "components": {"schemas": schemas}}
    if auth:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return doc


__all__ = ["SSE", "SSE_EVENT_SCHEMA", "Endpoint", "body", "openapi", "query"]
