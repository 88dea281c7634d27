"""The Python SDK at its edges, against real servers: a stream asked for after a finished run's last
event, ``create(wait=True)`` past its timeout, an answer that is not an event stream (a wrong base URL),
429s on the event stream, ``Retry-After`` as an HTTP date, an ``httpx`` client of the caller's with its
own base URL, ``runs.list`` paging arguments, and the async client under trio leaving nothing half-read."""

from __future__ import annotations

import gc
import threading
import warnings
from collections.abc import Iterator
from contextlib import aclosing
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from agentflow.client import APIError, AsyncClient, Client
from agentflow.client.errors import retry_after
from agentflow.server import ServerConfig
from tests.server_workflows import APPROVAL, SLEEPY, STEPS, nap, tick
from tests.serving import running_server


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(ServerConfig(model=None, store=":memory:", heartbeat_s=0.2), tools=[tick, nap]) as url, \
            Client(url) as af:
        for text in (STEPS, APPROVAL, SLEEPY):
            af.workflows.register(text)
        yield url


@pytest.fixture
def af(server: str) -> Iterator[Client]:
    with Client(server, timeout=20, max_reconnects=0) as client:  # no reconnects: a needless one raises
        yield client


def test_events_after_a_finished_runs_last_event_end_at_once(af: Client, server: str) -> None:
    run = af.runs.create("steps", {"n": 1}, wait=True)
    total = len(list(af.runs.events(run.run_id)))
    # the server replays nothing and ends the stream: that is the end, not a dropped connection
    assert list(af.runs.events(run.run_id, after=total)) == []
    assert list(af.runs.events(run.run_id, after=total + 100)) == []
    assert [e.event for e in af.runs.events(run.run_id, after=total - 1)] == ["run.completed"]

    async def main() -> None:
        async with AsyncClient(server, max_reconnects=0) as client:
            assert [e async for e in client.runs.events(run.run_id, after=total)] == []

    anyio.run(main)


def test_create_and_wait_past_its_timeout_raises_timeout_error_and_the_run_goes_on(af: Client,
                                                                                   server: str) -> None:
    before = {r.run_id for r in af.runs.list(workflow="sleepy")}
    with pytest.raises(TimeoutError, match="the run goes on"):
        af.runs.create("sleepy", wait=True, timeout=0.3)  # not re-sent after its timeout

    async def main() -> None:
        async with AsyncClient(server) as client:
            with pytest.raises(TimeoutError):
                await client.runs.create("sleepy", wait=True, timeout=0.3)

    anyio.run(main)
    started = [r for r in af.runs.list(workflow="sleepy") if r.run_id not in before]
    assert len(started) == 2 and {r.status for r in started} == {"running"}
    for run in started:
        af.runs.cancel(run.run_id)


class _NotAgentflow(BaseHTTPRequestHandler):
    """What a wrong base URL answers: a web page, 200."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Welcome</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_events_from_a_server_that_is_not_agentflow_fail_at_once_saying_so() -> None:
    web = ThreadingHTTPServer(("127.0.0.1", 0), _NotAgentflow)
    threading.Thread(target=web.serve_forever, args=(0.05,), daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{web.server_address[1]}", max_reconnects=0) as af, \
                pytest.raises(APIError, match="expected an event stream") as wrong:
            list(af.runs.events("abc"))
        assert wrong.value.code == "unexpected_response" and "text/html" in str(wrong.value)
    finally:
        web.shutdown()
        web.server_close()


def test_the_event_stream_waits_out_rate_limits_like_every_other_request() -> None:
    config = ServerConfig(model=None, store=":memory:", rate_limit_per_s=5, rate_limit_burst=1)
    with running_server(config, tools=[tick]) as url, Client(url, max_retries=3) as af:
        af.workflows.register(STEPS)  # each call spends the only token: the next one gets a 429 first
        run = af.runs.create("steps", {"n": 1}, wait=True)
        assert [e.event for e in af.runs.events(run.run_id)][-1] == "run.completed"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    soon = datetime.now(timezone.utc) + timedelta(seconds=20)
    assert 15 < (retry_after(answer(format_datetime(soon, usegmt=True))) or 0) <= 20
    assert retry_after(answer("Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0  # past: now
    assert retry_after(answer("2.5")) == 2.5 and retry_after(answer("-1")) == 0.0
    for junk in ("soon", "inf", "nan", ""):
        assert retry_after(answer(junk)) is None, junk


def test_a_callers_httpx_client_gives_the_base_url_and_is_left_as_it_was(server: str) -> None:
    with httpx.Client(base_url=server, headers={"X-Trace": "t-1"}) as http:
        with Client(http_client=http, api_key="k-123") as af:
            assert "steps" in {w.name for w in af.workflows.list()}
            assert af.base_url == server
        assert "authorization" not in http.headers  # the key went with each request, not into the client
        assert http.get("/health").status_code == 200  # not closed: it is the caller's


def test_list_checks_its_paging_arguments(af: Client) -> None:
    for page_size in (0, 501):
        with pytest.raises(ValueError, match="page_size must be between 1 and 500"):
            list(af.runs.list(page_size=page_size))
    with pytest.raises(ValueError, match="limit"):
        list(af.runs.list(limit=-1))
    assert list(af.runs.list(limit=0)) == []


def test_the_async_client_under_trio_leaves_no_half_read_stream(server: str) -> None:
    async def main() -> None:
        async with AsyncClient(server) as af:
            run = await af.runs.create("steps", {"n": 1})
            assert (await af.runs.wait(run.run_id, timeout=20)).status == "completed"
            async with aclosing(af.runs.events(run.run_id)) as events:
                async for event in events:
                    if event.event == "run.completed":
                        break  # stopping at the terminal event: the stream was read to its end already

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        anyio.run(main, backend="trio")
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
