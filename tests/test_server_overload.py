"""The generation endpoints under pressure, on a real uvicorn and the demo engine: a storm of streaming
clients that hang up mid-stream leaves nothing running and no KV held; past the admission limit
requests get 503 + Retry-After while every admitted one completes; a client that leaves (streaming
or not) ends its engine request within a second."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from agentflow.llm import LocalEngine
from agentflow.server import ServerConfig
from engine import AsyncEngine, Engine
from tests.helpers import assert_no_leaks
from tests.serving import running_server

CHAT = "/v1/chat/completions"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def llm(demo_path: Any) -> Iterator[LocalEngine]:
    """One demo engine for the module's servers, passed in so that the tests can look inside it."""
    async_engine = AsyncEngine(engine=Engine("demo", max_kv_tokens=65536))
    yield LocalEngine(async_engine)
    async_engine.shutdown()


@pytest.fixture(scope="module")
def engine(llm: LocalEngine) -> Engine:
    return anyio.run(llm.engine).engine


def serve(llm: LocalEngine, **config: Any) -> Any:
    return running_server(ServerConfig(model="demo", store=":memory:", **config), llm=llm)


def chat(i: int, max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"model": "demo", "messages": [{"role": "user", "content": f"Tell me story number {i}."}],
            "max_tokens": max_tokens, "seed": i, **extra}


async def wait_idle(engine: Engine, within: float) -> float:
    """Seconds until the engine runs nothing (failing past ``within``), then no KV may be held."""
    start = time.monotonic()
    with anyio.fail_after(within):
        while engine.stats().running or engine.stats().waiting:
            await anyio.sleep(0.01)
    elapsed = time.monotonic() - start
    await anyio.sleep(0.05)  # the step that freed the last request publishes its stats after it
    assert_no_leaks(engine)
    return elapsed


async def first_content(lines: AsyncIterator[str]) -> None:
    """Read a chat stream up to its first piece of content."""
    async for line in lines:
        if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            return
    raise AssertionError("the stream ended before any content")


@pytest.mark.anyio
async def test_disconnect_storm_leaves_nothing_running(llm: LocalEngine, engine: Engine) -> None:
    clients = 200
    with serve(llm) as url:
        limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            streaming = anyio.Event()
            started = 0

            async def client(i: int) -> None:
                nonlocal started
                async with http.stream("POST", CHAT, json=chat(i, 2000, stream=True)) as r:
                    assert r.status_code == 200
                    await first_content(r.aiter_lines())
                    started += 1
                    if started == clients:
                        streaming.set()
                    await streaming.wait()  # every request is generating: hang up together
                # leaving the block closes the connection mid-stream

            async with anyio.create_task_group() as tg:
                for i in range(clients):
                    tg.start_soon(client, i)
            assert started == clients
            assert await wait_idle(engine, within=2.0) < 2.0
            metrics = (await http.get("/metrics")).text
            assert "agentflow_generation_requests_in_flight 0.0" in metrics
            # and the server goes on serving
            r = await http.post(CHAT, json=chat(0, 3))
            assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.anyio
async def test_past_the_queue_limit_requests_get_503_and_admitted_ones_complete(llm: LocalEngine,
                                                                                   engine: Engine) -> None:
    limit, excess = 8, 50
    with serve(llm, max_queue=limit) as url:
        limits = httpx.Limits(max_connections=limit + excess + 10)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            admitted: list[httpx.Response] = []
            async with contextlib.AsyncExitStack() as stack:
                # ``limit`` streams, each seen generating: every slot is taken.
                lines = []
                for i in range(limit):
                    r = await stack.enter_async_context(http.stream("POST", CHAT, json=chat(i, 120, stream=True)))
                    assert r.status_code == 200
                    admitted.append(r)
                    lines.append(r.aiter_lines())
                    await first_content(lines[-1])

                refused: list[httpx.Response] = []

                async def extra(i: int) -> None:
                    kind = i % 3
                    if kind == 0:
                        refused.append(await http.post(CHAT, json=chat(i, 50)))
                    elif kind == 1:
                        refused.append(await http.post(CHAT, json=chat(i, 50, stream=True)))
                    else:
                        refused.append(await http.post("/generate", json={"text": "hi"}))

                async with anyio.create_task_group() as tg:
                    for i in range(excess):
                        tg.start_soon(extra, i)
                assert len(refused) == excess
                for r in refused:
                    assert r.status_code == 503, r.text
                    assert r.headers["retry-after"] == "1"
                    assert r.json()["error"]["code"] == "overloaded"
                    assert r.json()["error"]["type"] == "overloaded_error"

                # Every admitted stream runs to its end.
                for stream in lines:
                    events = [line async for line in stream if line.startswith("data: ")]
                    assert events[-1] == "data: [DONE]"
                    last = json.loads(events[-2][len("data: "):])["choices"][0]
                    assert last["finish_reason"] in ("stop", "length") and last["delta"] == {}
            await wait_idle(engine, within=2.0)
            metrics = (await http.get("/metrics")).text
            assert f"agentflow_generation_requests_rejected_total {float(excess)}" in metrics
            # The slots came back: as many requests as the limit are admitted again, at once.
            again: list[int] = []

            async def one(i: int) -> None:
                again.append((await http.post(CHAT, json=chat(i, 4))).status_code)

            async with anyio.create_task_group() as tg:
                for i in range(limit):
                    tg.start_soon(one, i)
            assert again == [200] * limit


@pytest.mark.anyio
async def test_leaving_clients_abort_their_engine_requests_within_a_second(llm: LocalEngine,
                                                                           engine: Engine) -> None:
    with serve(llm) as url:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            # a chat stream, then a /generate stream, left after their first event
            for path, body in [(CHAT, chat(1, 5000, stream=True)),
                               ("/generate", {"text": "Go on", "stream": True,
                                              "sampling_params": {"max_new_tokens": 5000, "ignore_eos": True}})]:
                async with http.stream("POST", path, json=body) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            break
                    assert engine.stats().running == 1
                assert await wait_idle(engine, within=1.0) < 1.0

            # a non-streaming request whose client gives up waiting
            async def impatient() -> None:
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(CHAT, json=chat(2, 5000), timeout=httpx.Timeout(60, read=0.5))

            async with anyio.create_task_group() as tg:
                tg.start_soon(impatient)
                with anyio.fail_after(5):
                    while not engine.stats().running:
                        await anyio.sleep(0.01)
            assert await wait_idle(engine, within=1.0) < 1.0
