"""Error bodies: one shape for every route, OpenAI's: ``{"error": {"message", "type", "param", "code"}}``.

Route code raises :class:`ApiError` (or an ``AgentflowError``, mapped by its class); anything else
becomes a logged 500 with no internals in the body.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from agentflow.api import ErrorBody, ErrorDetail
from agentflow.errors import AgentflowError

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error", 413: "invalid_request_error",
          415: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
          503: "overloaded_error"}


class ApiError(Exception):
    """An error response: status, message and the stable ``code``."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.details, self.headers = details, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, code=self.code, param=self.param, details=self.details,
                              headers=self.headers)


def error_response(status: int, message: str, *, code: str | None = None, param: str | None = None,
                   details: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    detail: dict[str, Any] = {"message": message, "type": _TYPES.get(status, "api_error" if status >= 500
                                                                     else "invalid_request_error"),
                              "param": param, "code": code}
    if details is not None:
        detail["details"] = details
    return _SafeJSON({"error": detail}, status_code=status, headers=headers)


class _SafeJSON(JSONResponse):
    """JSON whose strings may hold what a client sent, lone surrogates included (as ``?``): an error
    about a bad request must never fail to encode."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                          default=str).encode("utf-8", "replace")


_TYPE_ERRORS = frozenset({"string_type", "int_type", "float_type", "bool_type", "dict_type", "list_type",
                          "model_type", "model_attributes_type", "none_required", "is_instance_of"})
"""Errors that only say "not this type": where a union field failed every branch, another branch's error
(``too_long``, a bad literal deeper in) says what is wrong."""
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


def _field_path(loc: tuple[Any, ...]) -> list[str]:
    """``loc`` without pydantic's names of union branches (``constrained-str``, ``list[TextPart]``,
    ``NamedToolChoice``, a message's role tag): the path a client wrote."""
    path: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, str):
            if any(c in item for c in "[]-'") or item in ("str", "int", "float", "bool", "none") or item[:1].isupper():
                continue
            if item in _ROLES and i > 0 and isinstance(loc[i - 1], int):
                continue
        path.append(str(item))
    return path


def from_validation(exc: ValidationError, *, where: str = "body") -> ApiError:
    """A pydantic error on a request body: 422 naming the first bad field, every problem in details."""
    errors = exc.errors()
    problems = [{"loc": _field_path(e["loc"]), "message": e["msg"], "type": e["type"]} for e in errors]
    telling = [p for p in problems if p["type"] not in _TYPE_ERRORS]
    first = (telling or problems or [{"loc": [], "message": str(exc)}])[0]
    param = ".".join(first["loc"]) or None
    message = f"{where}: {param + ': ' if param else ''}{first['message']}"
    return ApiError(422, message, code="invalid_request", param=param, details=problems)


def _status_of(exc: AgentflowError) -> int:
    from agentflow.runtime.errors import (
        InvalidInputError,
        RunExistsError,
        RunNotFoundError,
        RunStateError,
        WorkflowNotFoundError,
    )

    if isinstance(exc, (RunNotFoundError, WorkflowNotFoundError)):
        return 404
    if isinstance(exc, (RunStateError, RunExistsError)):
        return 409
    if isinstance(exc, InvalidInputError):
        return 422
    return 500


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def handle_agentflow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentflowError)
    status = _status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s", request.method, request.url.path, exc, exc_info=exc)
        return error_response(500, "internal error", code=exc.code)
    return error_response(status, str(exc), code=exc.code, param=getattr(exc, "param", None))


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:  # Starlette names only the first matching route's methods
        headers["Allow"] = ", ".join(allowed_methods(request)) or headers.get("Allow", "")
    return error_response(exc.status_code, message, code="not_found" if exc.status_code == 404 else None,
                          headers=headers or None)


def allowed_methods(request: Request) -> list[str]:
    """The methods served at the request's path: those of every route with the path template of the
    first route that matches it (a template's methods are often several routes; a literal path such as
    ``/v1/workflows/validate`` comes before the template ``/v1/workflows/{name}`` that also matches)."""
    template: str | None = None
    methods: set[str] = set()
    for route in getattr(request.app.router, "routes", ()):
        match, _ = route.matches(request.scope)
        path = getattr(route, "path", None)
        if match is not Match.NONE and template is None:
            template = path
        if template is not None and path == template:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


async def handle_client_disconnect(request: Request, exc: Exception) -> Response:
    """The client left while its request body was being read: nothing failed here, and no one reads the
    answer; recorded as 499 (nginx's "client closed request"), not as a 500 with a traceback."""
    log.debug("%s %s: the client disconnected before sending its whole request", request.method, request.url.path)
    return Response(status_code=499)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error", code="internal_error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ApiError: handle_api_error,
    AgentflowError: handle_agentflow_error,
    HTTPException: handle_http_exception,
    ClientDisconnect: handle_client_disconnect,
    Exception: handle_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "ErrorBody", "ErrorDetail", "error_response", "from_validation"]
