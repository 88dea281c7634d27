"""The synchronous client: :class:`Client`, with ``client.workflows`` and ``client.runs``."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from agentflow.api import (
    Health,
    Readiness,
    RunList,
    RunView,
    ValidationResult,
    WorkflowDetail,
    WorkflowList,
    WorkflowSummary,
)
from agentflow.client.errors import APIConnectionError, error_from
from agentflow.client.requests import (
    Call,
    Calls,
    Follow,
    Retry,
    auth_headers,
    base_url_of,
    check_deadline,
    page_size_of,
    parse,
    wait_timeout,
)
from agentflow.runtime.events import TERMINAL_EVENTS, AnyEvent

if TYPE_CHECKING:
    from agentflow.dsl.builder import Workflow
    from agentflow.dsl.ir import WorkflowSpec


class Client:
    """A synchronous client. ``base_url`` defaults to ``$AGENTFLOW_URL`` or ``http://127.0.0.1:8000``;
    ``api_key`` to ``$AGENTFLOW_API_KEY`` (sent as ``Authorization: Bearer``). ``timeout`` bounds each
    request (``?wait=true`` and ``wait()`` have their own); ``max_retries`` the tries after the first.
    ``http_client``: your own ``httpx.Client`` (its ``base_url`` is used when ``base_url`` is not given; it is
    left open by :meth:`close`, and its headers as they are)."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, max_reconnects: int = 5, http_client: httpx.Client | None = None) -> None:
        self.base_url = base_url_of(base_url, http_client)
        self.max_retries, self.max_reconnects, self.timeout = max_retries, max_reconnects, timeout
        self._headers = auth_headers(api_key)
        self._owned = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self.workflows = Workflows(self)
        self.runs = Runs(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def health(self) -> Health:
        return parse(Health, self._send(Call("GET", "/health")))

    def ready(self) -> Readiness:
        """Whether the server's model is loaded and its store open (a 503 answer is read, not raised)."""
        response = self._send(Call("GET", "/ready"), ok=(200, 503))
        return parse(Readiness, response)

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Readiness:
        """Poll ``/ready`` until the server is up and ready, or raise :class:`TimeoutError`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.ready()
                if state.ready:
                    return state
            except APIConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} was not ready after {timeout} s")
            time.sleep(interval)

    def _send(self, call: Call, *, ok: tuple[int, ...] = (), timeout: httpx.Timeout | None = None) -> httpx.Response:
        """Send ``call``, retrying as :class:`Retry` says. ``timeout``: a ``?wait=true`` call's, whose read
        timeout raises :class:`TimeoutError` (the run goes on) instead of being retried."""
        retry = Retry(self.max_retries)
        while True:
            try:
                kwargs = call.kwargs()
                kwargs["headers"] = {**self._headers, **kwargs["headers"]}
                response = self._http.request(call.method, self.base_url + call.path, **kwargs,
                                              timeout=timeout or self.timeout)
            except httpx.ReadTimeout as exc:
                if timeout is not None:
                    raise TimeoutError(f"{call.method} {call.path}: no answer within {timeout.read} s "
                                       "(the run goes on)") from exc
                time.sleep(retry.after_error(call, exc))
                continue
            except httpx.TransportError as exc:
                time.sleep(retry.after_error(call, exc))
                continue
            if response.is_success or response.status_code in ok:
                return response
            delay = retry.after_answer(response)
            if delay is None:
                raise error_from(response)
            time.sleep(delay)


class Workflows:
    """``client.workflows``: list, get, validate, register (a new version for a known name), delete."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def list(self) -> list[WorkflowSummary]:
        return parse(WorkflowList, self._c._send(Calls.list_workflows())).data

    def get(self, name: str, *, version: int | None = None) -> WorkflowDetail:
        return parse(WorkflowDetail, self._c._send(Calls.get_workflow(name, version)))

    def validate(self, source: str | Path | Mapping[str, Any] | WorkflowSpec | Workflow) -> ValidationResult:
        """Check a workflow against the server's tools and workflows without registering it. Problems raise
        :class:`BadRequestError` whose ``details`` list each with its code, pointer, line and column."""
        return parse(ValidationResult, self._c._send(Calls.validate_workflow(source)))

    def register(self, source: str | Path | Mapping[str, Any] | WorkflowSpec | Workflow, *,
                 name: str | None = None) -> WorkflowSummary:
        """Register a workflow: YAML text, a ``.yaml``/``.json`` Path, IR as a dict, a ``WorkflowSpec`` or a
        Python ``Workflow``. A known name gets a new version. ``name``: refuse it unless it has this name."""
        return parse(WorkflowSummary, self._c._send(Calls.register_workflow(source, name)))

    def delete(self, name: str) -> None:
        self._c._send(Calls.delete_workflow(name))


class Runs:
    """``client.runs``: create, get, list, cancel, resume, follow events, wait."""

    def __init__(self, client: Client) -> None:
        self._c = client

    def create(self, workflow: str, input: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None,
               wait: bool = False, timeout: float | None = None) -> RunView:
        """Start a run of ``workflow``. ``wait=True`` answers once it finishes or pauses at an interrupt (within
        ``timeout`` seconds, default unbounded: past it, :class:`TimeoutError`, and the run goes on). The same
        ``idempotency_key`` never starts a second run."""
        call = Calls.create_run(workflow, input, idempotency_key, wait)
        return parse(RunView, self._c._send(call, timeout=wait_timeout(self._c.timeout, timeout) if wait else None))

    def get(self, run_id: str) -> RunView:
        return parse(RunView, self._c._send(Calls.get_run(run_id)))

    def list(self, *, status: str | None = None, workflow: str | None = None, page_size: int = 50,
             limit: int | None = None) -> Iterator[RunView]:
        """Runs, newest first, fetched a page at a time (``page_size``: 1 to 500) as you iterate; at most
        ``limit`` of them."""
        page_size = page_size_of(page_size, limit)
        cursor: str | None = None
        seen = 0
        while limit is None or seen < limit:
            page = parse(RunList, self._c._send(Calls.list_runs(status, workflow, page_size, cursor)))
            for run in page.data:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def cancel(self, run_id: str, reason: str | None = None) -> RunView:
        return parse(RunView, self._c._send(Calls.cancel_run(run_id, reason)))

    def resume(self, run_id: str, value: Any = None, *, node: str | None = None) -> RunView:
        """Give a run waiting at an interrupt its value (an approval: ``{"approved": True}``); ``node`` picks
        the interrupt when several wait."""
        return parse(RunView, self._c._send(Calls.resume_run(run_id, value, node)))

    def events(self, run_id: str, *, after: int = 0) -> Iterator[AnyEvent]:
        """The run's events from ``after`` on (``seq`` order, replayed then live), reconnecting when the
        connection drops, until the run's terminal event. Stop early by breaking out of the loop."""
        return self._follow(run_id, after, None)

    def _follow(self, run_id: str, after: int, deadline: float | None) -> Iterator[AnyEvent]:
        follow = Follow(run_id, after, self._c.max_reconnects)
        http, url = self._c._http, self._c.base_url + follow.path
        retry = Retry(self._c.max_retries)
        while not follow.done:
            read = None if deadline is None else max(0.01, deadline - time.monotonic())
            try:
                with http.stream("GET", url, headers={**self._c._headers, **follow.headers()},
                                 timeout=httpx.Timeout(self._c.timeout, read=read)) as response:
                    if not response.is_success:
                        response.read()
                        delay = retry.after_answer(response)  # 429/503: wait out Retry-After
                        if delay is None:
                            raise error_from(response)
                        time.sleep(delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic())))
                        check_deadline(deadline, run_id)
                        continue
                    follow.check(response)
                    retry = Retry(self._c.max_retries)
                    for line in response.iter_lines():
                        check_deadline(deadline, run_id)
                        event = follow.feed(line)
                        if event is not None:
                            yield event
                if follow.done:  # read on to the end after the terminal event: the connection is reused
                    return
                if self.get(run_id).finished:  # it ended without a terminal event: nothing after `after`
                    return
                why = "the server closed the stream"
            except httpx.TransportError as exc:
                check_deadline(deadline, run_id)
                why = f"{type(exc).__name__}: {exc}"
            time.sleep(follow.dropped(why))

    def stream(self, workflow: str, input: Mapping[str, Any] | None = None, *,
               idempotency_key: str | None = None) -> Iterator[AnyEvent]:
        """Start a run and follow its events: ``create`` then ``events``."""
        run = self.create(workflow, input, idempotency_key=idempotency_key)
        yield from self.events(run.run_id)

    def wait(self, run_id: str, *, timeout: float | None = None) -> RunView:
        """The run once it finishes or waits at an interrupt, following its events meanwhile; raise
        :class:`TimeoutError` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        run = self.get(run_id)
        if run.finished or run.status == "interrupted":
            return run
        for event in self._follow(run_id, 0, deadline):
            if event.event in TERMINAL_EVENTS or event.event == "run.interrupted":
                run = self.get(run_id)
                if run.finished or run.status == "interrupted":
                    return run
        return self.get(run_id)


__all__ = ["Client", "Runs", "Workflows"]
