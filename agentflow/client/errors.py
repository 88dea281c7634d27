"""The SDK's errors: :class:`APIError` (one subclass per kind of refusal) when the server answers
with an error, :class:`APIConnectionError` when it cannot be reached."""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import ValidationError

from agentflow.api import ErrorBody, retry_after_seconds
from agentflow.errors import AgentflowError


class APIError(AgentflowError):
    """The server answered with an error: ``status``, its ``message``, the stable ``code`` (e.g.
    ``workflow_not_found``), the request field at fault in ``param``, and every problem in ``details``
    (workflow validation errors carry their line and column there)."""

    code: str = "api_error"

    def __init__(self, status: int, message: str, *, code: str | None = None, type: str | None = None,
                 param: str | None = None, details: list[dict[str, Any]] | None = None,
                 retry_after: float | None = None, method: str = "", url: str = "") -> None:
        where = f"{method} {url}: " if method else ""
        super().__init__(f"{where}{status} {code or ''}{': ' if code else ''}{message}")
        self.status, self.message, self.type, self.param = status, message, type, param
        self.code = code or self.code
        self.details, self.retry_after = details, retry_after


class BadRequestError(APIError):
    """400, 413, 415 or 422: the request was refused as it is (bad JSON, input against the schema...)."""


class AuthenticationError(APIError):
    """401: the API key is missing or wrong (``api_key=`` or ``$AGENTFLOW_API_KEY``)."""


class NotFoundError(APIError):
    """404: no such workflow, version or run (another tenant's runs answer 404 as well)."""


class ConflictError(APIError):
    """409: the run already finished, is not waiting at an interrupt, a hook name is taken..."""


class RateLimitError(APIError):
    """429, after the client's retries: slow down (``retry_after`` seconds)."""


class OverloadedError(APIError):
    """503, after the client's retries: the server is at its limit (``retry_after`` seconds)."""


class ServerError(APIError):
    """500 or another 5xx: the server failed; its log says why."""


class APIConnectionError(AgentflowError):
    """The server could not be reached (or the connection kept dropping), after the client's retries."""

    code = "connection_error"


class StreamError(AgentflowError):
    """A run's event stream sent something that is not an agentflow event."""

    code = "stream_error"


ERRORS: dict[int, type[APIError]] = {400: BadRequestError, 401: AuthenticationError, 404: NotFoundError,
                                      409: ConflictError, 413: BadRequestError, 415: BadRequestError,
                                      422: BadRequestError, 429: RateLimitError, 503: OverloadedError}


def error_from(response: httpx.Response) -> APIError:
    detail: dict[str, Any] = {}
    try:
        detail = ErrorBody.model_validate_json(response.content).error.model_dump()
    except ValidationError:
        text = response.text.strip()
        detail = {"message": text[:500] or response.reason_phrase or "no message"}
    cls = ERRORS.get(response.status_code, ServerError if response.status_code >= 500 else APIError)
    return cls(response.status_code, detail.pop("message"), retry_after=retry_after(response),
               method=response.request.method, url=str(response.request.url), **detail)


def retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (a number or an HTTP date); None when absent or unreadable."""
    return retry_after_seconds(response.headers.get("retry-after"))


__all__ = [
    "ERRORS", "APIConnectionError", "APIError", "AuthenticationError", "BadRequestError", "ConflictError",
    "NotFoundError", "OverloadedError", "RateLimitError", "ServerError", "StreamError", "error_from", "retry_after",
]
