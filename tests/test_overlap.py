"""Tool I/O overlaps: across runs, and with generation inside one run.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, one thread per request) answers every
GET after sleeping 300 ms and counts how many requests it holds at once. The ``fetch`` tool calls it
with ``httpx.AsyncClient``.

- 16 runs started at once on one ``Runtime`` finish in well under 16 x 300 ms, and the server saw
  them in flight together (the non-timing proof of overlap).
- In one run, ``start: [call_tool, generate]`` runs the 300 ms fetch and an ``llm`` node on the real
  in-process engine (demo model) side by side: the event timestamps show the two nodes' intervals
  overlapping and the llm node's ``llm.delta`` events arriving while the tool was in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from agentflow.llm import LLMRequest, LocalEngine, generate
from agentflow.runtime import Runtime
from agentflow.runtime.events import EventBase
from tests.specs import spec

pytestmark = pytest.mark.anyio

SERVER_DELAY_S = 0.3
RUNS = 16


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class SlowServer:
    """What the server saw."""

    url: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def enter(self, path: str) -> None:
        with self.lock:
            self.requests.append(path)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    """An HTTP server on an ephemeral 127.0.0.1 port whose every answer takes 300 ms."""
    state: SlowServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.enter(self.path)
            try:
                time.sleep(SERVER_DELAY_S)
                body = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                state.leave()

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 64  # socketserver's default listen backlog of 5 drops simultaneous connects

    server = Server(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    state = SlowServer(url=f"http://{host!s}:{port}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def make_fetch(client: httpx.AsyncClient) -> Callable[[str], Awaitable[Any]]:
    async def fetch(url: str) -> Any:
        """GET a URL and return its JSON body."""
        response = await client.get(url)
        response.raise_for_status()
        return response.json()

    return fetch


def shape(reply: dict[str, Any], i: int) -> dict[str, Any]:
    return {"i": i, "path": reply["path"]}


FETCH_THEN_SHAPE = """
name: fetch_then_shape
input: {type: object, properties: {url: {type: string}, i: {type: integer}}, required: [url, i]}
nodes:
  - {id: call, kind: tool, tool: fetch, args: {url: "{{ input.url }}"}}
  - {id: shaped, kind: tool, tool: shape, args: {reply: "{{ call }}", i: "{{ input.i }}"}}
edges: [{from: call, to: shaped}]
output: shaped
"""


async def test_sixteen_runs_calling_a_slow_server_overlap(tmp_path: Path, slow_server: SlowServer) -> None:
    workflow = spec(FETCH_THEN_SHAPE)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        tools: dict[str, Callable[..., Any]] = {"fetch": make_fetch(client), "shape": shape}
        async with Runtime(tools=tools, store=tmp_path / "runs.db") as rt:
            run_ids: dict[int, str] = {}

            async def start(i: int) -> None:
                run_ids[i] = await rt.start(workflow, {"url": f"{slow_server.url}/slow?i={i}", "i": i})

            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for i in range(RUNS):
                    tg.start_soon(start, i)
            records = {i: await rt.wait(run_id) for i, run_id in run_ids.items()}
            makespan = time.perf_counter() - began

    serial = RUNS * SERVER_DELAY_S
    print(f"{RUNS} runs: makespan {makespan:.3f} s (serial would be {serial:.1f} s); "
          f"server max in-flight {slow_server.max_in_flight}")
    for i, record in records.items():
        assert record.status == "completed", record.error
        assert record.output == {"i": i, "path": f"/slow?i={i}"}  # each run got its own answer
    assert sorted(slow_server.requests) == sorted(f"/slow?i={i}" for i in range(RUNS))
    assert slow_server.max_in_flight > 1, "the server never held two requests at once: the runs did not overlap"
    assert slow_server.max_in_flight >= RUNS // 2, slow_server.max_in_flight
    assert makespan < 0.5 * serial, f"makespan {makespan:.3f} s is not well under {serial:.1f} s"


TOOL_AND_LLM = """
name: tool_and_llm
input: {type: object, properties: {url: {type: string}}, required: [url]}
start: [call_tool, generate]
nodes:
  - {id: call_tool, kind: tool, tool: fetch, args: {url: "{{ input.url }}"}}
  - id: generate
    kind: llm
    prompt: "Write a short note about the weather."
    sampling: {max_tokens: 24, temperature: 0}
"""


def times(events: list[EventBase], name: str, node: str) -> list[float]:
    return [e.time for e in events if e.event == name and e.node == node]  # type: ignore[attr-defined]


async def test_a_tool_branch_and_an_llm_branch_of_one_run_overlap(tmp_path: Path, slow_server: SlowServer,
                                                                  demo_path: Path) -> None:
    llm = LocalEngine(demo_path)
    try:
        # Load the model and run one request first: the overlap in question is the tool's wait with
        # decoding, not with loading the weights.
        await generate(llm, LLMRequest(messages=[{"role": "user", "content": "warm up"}], max_tokens=4))
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client, \
                Runtime(llm=llm, tools={"fetch": make_fetch(client)}, store=tmp_path / "runs.db") as rt:
            record = await rt.run(spec(TOOL_AND_LLM), {"url": f"{slow_server.url}/tool"})
            events = [event async for event in rt.events(record.run_id)]
    finally:
        await llm.aclose()

    assert record.status == "completed", record.error
    deltas = [e for e in events if e.event == "llm.delta" and e.node == "generate"]  # type: ignore[attr-defined]
    assert record.output["call_tool"] == {"path": "/tool"}
    assert deltas and record.output["generate"] == "".join(e.text for e in deltas)  # type: ignore[attr-defined]
    [tool_start], [tool_end] = times(events, "node.started", "call_tool"), times(events, "node.completed", "call_tool")
    [llm_start], [llm_end] = times(events, "node.started", "generate"), times(events, "node.completed", "generate")
    assert tool_end - tool_start >= SERVER_DELAY_S * 0.9  # the tool really waited on the server
    assert tool_start < llm_end and llm_start < tool_end, "the two branches ran one after the other"
    during_tool = [e for e in deltas if tool_start < e.time < tool_end]
    print(f"tool [{0:.3f}, {tool_end - tool_start:.3f}] s, llm [{llm_start - tool_start:.3f}, "
          f"{llm_end - tool_start:.3f}] s; {len(during_tool)} of {len(deltas)} llm.delta events while the tool "
          "was in flight")
    assert during_tool, "no llm.delta was emitted while the tool was waiting on the server"
