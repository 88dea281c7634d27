"""What the sync and async clients share: each API request as a :class:`Call` value, when to retry
one (:class:`Retry`), reading bodies into the API's models, and following a run's event stream across
reconnects (:class:`Follow`)."""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from agentflow.client.errors import APIConnectionError, APIError, StreamError, retry_after
from agentflow.runtime.events import EVENT_ADAPTER, TERMINAL_EVENTS, AnyEvent

if TYPE_CHECKING:
    from agentflow.dsl.builder import Workflow
    from agentflow.dsl.ir import WorkflowSpec

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
MAX_PAGE = 500
"""The most runs the server sends in one page of ``GET /v1/runs``."""
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Call:
    """One API request, built once and sent by the sync or the async transport."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True
    """Safe to send again after the connection dropped mid-request (the server may have acted on it)."""

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"params": {k: v for k, v in (self.params or {}).items() if v is not None},
                               "headers": self.headers}
        if self.content is not None:
            out["content"] = self.content.encode("utf-8")
        elif self.json is not None:
            out["json"] = self.json
        return out


def base_url_of(base_url: str | None, http_client: httpx.Client | httpx.AsyncClient | None) -> str:
    """The server's URL: ``base_url``, else the ``base_url`` of the httpx client given, else
    ``$AGENTFLOW_URL``, else :data:`DEFAULT_URL`; without a trailing slash."""
    given = str(http_client.base_url) if http_client is not None and str(http_client.base_url) else None
    return (base_url or given or os.environ.get("AGENTFLOW_URL") or DEFAULT_URL).rstrip("/")


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``api_key`` (default ``$AGENTFLOW_API_KEY``), sent with each request
    (a client passed in as ``http_client`` is left as it is)."""
    key = api_key if api_key is not None else os.environ.get("AGENTFLOW_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def segment(value: str) -> str:
    """A path segment: workflow names and run ids are checked here, not trusted to the URL."""
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"not a valid name or id for a URL path: {value!r}")
    return quote(value, safe="")


def workflow_body(source: str | Path | Mapping[str, Any] | WorkflowSpec | Workflow) -> tuple[str | None, Any]:
    """(YAML text, or None and the IR as JSON) for any way a workflow can be given."""
    from agentflow.dsl.builder import Workflow
    from agentflow.dsl.ir import WorkflowSpec

    if isinstance(source, Path):
        text = source.read_text(encoding="utf-8")
        return (None, json_file(text, source)) if source.suffix == ".json" else (text, None)
    if isinstance(source, str):
        return source, None
    if isinstance(source, Workflow):
        return source.to_yaml(), None
    if isinstance(source, WorkflowSpec):
        return None, source.to_dict()
    if isinstance(source, Mapping):
        return None, dict(source)
    raise TypeError(f"a workflow is YAML text, a Path, IR as a dict, a WorkflowSpec or a Workflow, "
                    f"not {type(source).__name__}")


def json_file(text: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None


def register_call(method: str, path: str, source: Any) -> Call:
    text, data = workflow_body(source)
    if text is not None:
        return Call(method, path, content=text, headers={"Content-Type": "application/yaml"}, idempotent=False)
    return Call(method, path, json=data, idempotent=False)


class Calls:
    """Every request of the API, as :class:`Call` values (the sync and async clients send them)."""

    @staticmethod
    def list_workflows() -> Call:
        return Call("GET", "/v1/workflows")

    @staticmethod
    def get_workflow(name: str, version: int | None) -> Call:
        return Call("GET", f"/v1/workflows/{segment(name)}", params={"version": version})

    @staticmethod
    def validate_workflow(source: Any) -> Call:
        return replace(register_call("POST", "/v1/workflows/validate", source), idempotent=True)

    @staticmethod
    def register_workflow(source: Any, name: str | None) -> Call:
        return register_call("PUT", f"/v1/workflows/{segment(name)}", source) if name else \
            register_call("POST", "/v1/workflows", source)

    @staticmethod
    def delete_workflow(name: str) -> Call:
        return Call("DELETE", f"/v1/workflows/{segment(name)}")

    @staticmethod
    def create_run(workflow: str, run_input: Mapping[str, Any] | None, idempotency_key: str | None,
                   wait: bool) -> Call:
        key = idempotency_key or f"sdk-{uuid.uuid4()}"
        return Call("POST", f"/v1/workflows/{segment(workflow)}/runs", params={"wait": "true" if wait else None},
                     json={"input": dict(run_input or {})}, headers={"Idempotency-Key": key})

    @staticmethod
    def get_run(run_id: str) -> Call:
        return Call("GET", f"/v1/runs/{segment(run_id)}")

    @staticmethod
    def list_runs(status: str | None, workflow: str | None, limit: int, cursor: str | None) -> Call:
        return Call("GET", "/v1/runs", params={"status": status, "workflow": workflow, "limit": limit,
                                                 "cursor": cursor})

    @staticmethod
    def cancel_run(run_id: str, reason: str | None) -> Call:
        return Call("POST", f"/v1/runs/{segment(run_id)}/cancel",
                     json={"reason": reason} if reason else None, idempotent=False)

    @staticmethod
    def resume_run(run_id: str, value: Any, node: str | None) -> Call:
        return Call("POST", f"/v1/runs/{segment(run_id)}/resume", json={"value": value, "node": node},
                     idempotent=False)


class Retry:
    """When to send a request again: network errors (reads, and any request that never reached the server)
    and 429/503 answers, at most ``max_retries`` times, waiting ``Retry-After`` or an exponential backoff."""

    def __init__(self, max_retries: int) -> None:
        self.max_retries, self.attempt = max_retries, 0

    def after_error(self, call: Call, exc: httpx.TransportError) -> float:
        """The delay before the next try; raises :class:`APIConnectionError` when it should not be retried."""
        sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
        if self.attempt >= self.max_retries or (sent and not call.idempotent):
            raise APIConnectionError(f"{call.method} {call.path}: {type(exc).__name__}: {exc or 'no detail'}"
                                     + (" (not retried: the server may have acted on it)" if sent and
                                        not call.idempotent else "")) from exc
        return self._next(None)

    def after_answer(self, response: httpx.Response) -> float | None:
        """The delay before the next try for a 429/503, or None when the answer is final."""
        if response.status_code not in (429, 503) or self.attempt >= self.max_retries:
            return None
        return self._next(retry_after(response))

    def _next(self, hint: float | None) -> float:
        self.attempt += 1
        return min(30.0, hint if hint is not None else 0.25 * 2 ** (self.attempt - 1) * (1 + random.random() / 4))


def parse(model: type[M], response: httpx.Response) -> M:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise APIError(response.status_code, f"unexpected response body ({exc.error_count()} problem(s): "
                       f"{exc.errors()[0]['msg']})", code="unexpected_response", method=response.request.method,
                       url=str(response.request.url)) from None


# ------------------------------------------------------------------------------------ event streams


class Follow:
    """Following one run's events across reconnects: parses SSE lines, remembers the last ``seq``
    (sent back as ``Last-Event-ID``), and gives up after ``max_reconnects`` tries in a row that
    brought nothing new."""

    def __init__(self, run_id: str, after: int, max_reconnects: int) -> None:
        self.path = f"/v1/runs/{segment(run_id)}/events"
        self.last_seq, self.max_reconnects = after, max_reconnects
        self.failures, self.done = 0, False
        self._event = ""
        self._data: list[str] = []

    def headers(self) -> dict[str, str]:
        return {"Accept": "text/event-stream", "Last-Event-ID": str(self.last_seq)}

    def check(self, response: httpx.Response) -> None:
        """Raise :class:`APIError` for a 2xx answer that is not an event stream (a proxy's page, a wrong
        ``base_url``): reconnecting would only get the same page again."""
        kind = response.headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() != "text/event-stream":
            raise APIError(response.status_code, f"expected an event stream (text/event-stream), got "
                           f"{kind or 'no Content-Type'}: is the base URL an agentflow server?",
                           code="unexpected_response", method=response.request.method,
                           url=str(response.request.url))

    def feed(self, line: str) -> AnyEvent | None:
        """One line of the stream; the event it completes, if any (repeats of seen events are dropped)."""
        if line == "":
            data, self._data = self._data, []
            if not data:
                return None
            try:
                event = EVENT_ADAPTER.validate_json("\n".join(data))
            except ValidationError as exc:
                raise StreamError(f"{self.path}: an event that is not agentflow's ({self._event or 'no name'}): "
                                  f"{exc.errors()[0]['msg']}") from None
            if event.seq <= self.last_seq:
                return None
            self.last_seq, self.failures = event.seq, 0
            self.done = event.event in TERMINAL_EVENTS
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None

    def dropped(self, why: str) -> float:
        """The stream ended before the run did; the delay before reconnecting, or raise when it keeps failing."""
        self.failures += 1
        self._data = []
        if self.failures > self.max_reconnects:
            raise APIConnectionError(f"{self.path}: the event stream kept dropping ({why}); last event seen: "
                                     f"{self.last_seq}")
        log.info("%s: stream dropped (%s); reconnecting after event %d", self.path, why, self.last_seq)
        return min(10.0, 0.2 * 2 ** (self.failures - 1))


def page_size_of(page_size: int, limit: int | None) -> int:
    """The ``limit`` of each page of ``runs.list`` (the server takes 1 to 500), checked here so that the
    error names the SDK's parameters."""
    if not 1 <= page_size <= MAX_PAGE:
        raise ValueError(f"page_size must be between 1 and {MAX_PAGE}, got {page_size}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    return page_size if limit is None else max(1, min(page_size, limit))


def wait_timeout(timeout: float, wait: float | None) -> httpx.Timeout:
    """A ``?wait=true`` request's timeout: the client's for connecting and sending, ``wait`` (None: no
    limit) for the answer."""
    return httpx.Timeout(timeout, read=wait)


def check_deadline(deadline: float | None, run_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"run {run_id} did not finish or pause in time")


__all__ = [
    "DEFAULT_URL", "MAX_PAGE", "Call", "Calls", "Follow", "Retry", "auth_headers", "base_url_of", "check_deadline",
    "page_size_of", "parse", "segment", "wait_timeout", "workflow_body",
]
