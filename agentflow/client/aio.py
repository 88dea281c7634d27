"""The asynchronous client (asyncio or trio): :class:`AsyncClient`, the sync client's methods awaited."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
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
    page_size_of,
    parse,
    wait_timeout,
)
from agentflow.runtime.events import TERMINAL_EVENTS, AnyEvent

if TYPE_CHECKING:
    from agentflow.dsl.builder import Workflow
    from agentflow.dsl.ir import WorkflowSpec


class AsyncClient:
    """The asynchronous client (asyncio or trio): :class:`Client`'s methods, awaited."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 max_retries: int = 3, max_reconnects: int = 5,
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.base_url = base_url_of(base_url, http_client)
        self.max_retries, self.max_reconnects, self.timeout = max_retries, max_reconnects, timeout
        self._headers = auth_headers(api_key)
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self.workflows = AsyncWorkflows(self)
        self.runs = AsyncRuns(self)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self._http.aclose()

    async def health(self) -> Health:
        return parse(Health, await self._send(Call("GET", "/health")))

    async def ready(self) -> Readiness:
        return parse(Readiness, await self._send(Call("GET", "/ready"), ok=(200, 503)))

    async def wait_ready(self, timeout: float = 60.0, interval: float = 0.2) -> Readiness:
        with anyio.fail_after(timeout):
            while True:
                try:
                    state = await self.ready()
                    if state.ready:
                        return state
                except APIConnectionError:
                    pass
                await anyio.sleep(interval)

    async def _send(self, call: Call, *, ok: tuple[int, ...] = (),
                    timeout: httpx.Timeout | None = None) -> httpx.Response:
        retry = Retry(self.max_retries)
        while True:
            try:
                kwargs = call.kwargs()
                kwargs["headers"] = {**self._headers, **kwargs["headers"]}
                response = await self._http.request(call.method, self.base_url + call.path, **kwargs,
                                                    timeout=timeout or self.timeout)
            except httpx.ReadTimeout as exc:
                if timeout is not None:  # a ?wait=true call: past its wait, the run goes on
                    raise TimeoutError(f"{call.method} {call.path}: no answer within {timeout.read} s "
                                       "(the run goes on)") from exc
                await anyio.sleep(retry.after_error(call, exc))
                continue
            except httpx.TransportError as exc:
                await anyio.sleep(retry.after_error(call, exc))
                continue
            if response.is_success or response.status_code in ok:
                return response
            delay = retry.after_answer(response)
            if delay is None:
                raise error_from(response)
            await anyio.sleep(delay)


class AsyncWorkflows:
    """``client.workflows`` of :class:`AsyncClient` (see :class:`Workflows`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def list(self) -> list[WorkflowSummary]:
        return parse(WorkflowList, await self._c._send(Calls.list_workflows())).data

    async def get(self, name: str, *, version: int | None = None) -> WorkflowDetail:
        return parse(WorkflowDetail, await self._c._send(Calls.get_workflow(name, version)))

    async def validate(self, source: str | Path | Mapping[str, Any] | WorkflowSpec | Workflow) -> ValidationResult:
        return parse(ValidationResult, await self._c._send(Calls.validate_workflow(source)))

    async def register(self, source: str | Path | Mapping[str, Any] | WorkflowSpec | Workflow, *,
                       name: str | None = None) -> WorkflowSummary:
        return parse(WorkflowSummary, await self._c._send(Calls.register_workflow(source, name)))

    async def delete(self, name: str) -> None:
        await self._c._send(Calls.delete_workflow(name))


class AsyncRuns:
    """``client.runs`` of :class:`AsyncClient` (see :class:`Runs`)."""

    def __init__(self, client: AsyncClient) -> None:
        self._c = client

    async def create(self, workflow: str, input: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None, wait: bool = False, timeout: float | None = None) -> RunView:
        call = Calls.create_run(workflow, input, idempotency_key, wait)
        return parse(RunView, await self._c._send(call, timeout=wait_timeout(self._c.timeout, timeout) if wait
                                                  else None))

    async def get(self, run_id: str) -> RunView:
        return parse(RunView, await self._c._send(Calls.get_run(run_id)))

    async def list(self, *, status: str | None = None, workflow: str | None = None, page_size: int = 50,
                   limit: int | None = None) -> AsyncGenerator[RunView, None]:
        page_size = page_size_of(page_size, limit)
        cursor: str | None = None
        seen = 0
        while limit is None or seen < limit:
            page = parse(RunList, await self._c._send(Calls.list_runs(status, workflow, page_size, cursor)))
            for run in page.data:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield run
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def cancel(self, run_id: str, reason: str | None = None) -> RunView:
        return parse(RunView, await self._c._send(Calls.cancel_run(run_id, reason)))

    async def resume(self, run_id: str, value: Any = None, *, node: str | None = None) -> RunView:
        return parse(RunView, await self._c._send(Calls.resume_run(run_id, value, node)))

    async def events(self, run_id: str, *, after: int = 0) -> AsyncGenerator[AnyEvent, None]:
        follow = Follow(run_id, after, self._c.max_reconnects)
        http, url = self._c._http, self._c.base_url + follow.path
        retry = Retry(self._c.max_retries)
        terminal: AnyEvent | None = None
        while not follow.done:
            try:
                async with http.stream("GET", url, headers={**self._c._headers, **follow.headers()},
                                       timeout=httpx.Timeout(self._c.timeout, read=None)) as response:
                    if not response.is_success:
                        await response.aread()
                        delay = retry.after_answer(response)  # 429/503: wait out Retry-After
                        if delay is None:
                            raise error_from(response)
                        await anyio.sleep(delay)
                        continue
                    follow.check(response)
                    retry = Retry(self._c.max_retries)
                    async with aclosing(response.aiter_lines()) as lines:  # type: ignore[type-var]  # closed now, not by the GC
                        async for line in lines:
                            event = follow.feed(line)
                            if event is not None and follow.done:
                                terminal = event
                                await _drain(lines, self._c.timeout)
                                break
                            if event is not None:
                                yield event
                if follow.done:
                    break
                if (await self.get(run_id)).finished:  # it ended without a terminal event: nothing after `after`
                    return
                why = "the server closed the stream"
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
            await anyio.sleep(follow.dropped(why))
        if terminal is not None:
            yield terminal

    async def stream(self, workflow: str, input: Mapping[str, Any] | None = None, *,
                     idempotency_key: str | None = None) -> AsyncGenerator[AnyEvent, None]:
        run = await self.create(workflow, input, idempotency_key=idempotency_key)
        async with aclosing(self.events(run.run_id)) as events:
            async for event in events:
                yield event

    async def wait(self, run_id: str, *, timeout: float | None = None) -> RunView:
        with anyio.fail_after(timeout):
            run = await self.get(run_id)
            if run.finished or run.status == "interrupted":
                return run
            async with aclosing(self.events(run_id)) as events:
                async for event in events:
                    if event.event in TERMINAL_EVENTS or event.event == "run.interrupted":
                        run = await self.get(run_id)
                        if run.finished or run.status == "interrupted":
                            return run
            return await self.get(run_id)


async def _drain(lines: AsyncIterator[str], timeout: float) -> None:
    """Read a stream on to its end after its terminal event (the server ends it there). A consumer that
    stops at the terminal event then leaves no half-read response behind: the connection goes back to
    the pool, and httpx's async generators end instead of being collected unfinished (trio warns)."""
    with anyio.move_on_after(timeout), contextlib.suppress(httpx.TransportError):
        async for _ in lines:
            pass


__all__ = ["AsyncClient", "AsyncRuns", "AsyncWorkflows"]
