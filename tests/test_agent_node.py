"""The minimal agent loop (the tools issue adds grammar-constrained calls and streamed dispatch).

The model side is ``FakeOpenAIServer`` — a stand-in for a remote OpenAI-compatible API, reached over
real HTTP through ``OpenAICompatible`` — because the random-weight demo model never asks for a tool.
The server plays a scripted conversation; the test checks what the orchestrator did with it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from agentflow import OpenAICompatible, Runtime, load_yaml
from agentflow.runtime.events import EventBase
from agentflow.tool import ToolContext, tool
from tests.fake_openai import FakeOpenAIServer, chunk, sse_reply, text_chunks, usage_chunk

pytestmark = pytest.mark.anyio

AGENT = """
name: weather_agent
input: {type: object, properties: {question: {type: string}}, required: [question]}
nodes:
  - id: ask
    kind: agent
    system: "You answer weather questions with the tools."
    prompt: "{{ input.question }}"
    tools: [get_weather, get_time]
    max_steps: 3
output: ask
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def calls_reply(*calls: tuple[str, str, dict[str, Any]]) -> Any:
    """One assistant turn asking for ``calls`` (id, name, arguments), streamed in fragments."""
    chunks = [chunk({"role": "assistant", "content": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        text = json.dumps(arguments)
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": text[i:i + 5]}}]})
                   for i in range(0, len(text), 5)]
    return sse_reply([*chunks, chunk({}, "tool_calls"), usage_chunk(30, 20)])


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    fake = FakeOpenAIServer()
    fake.start()
    yield fake
    fake.stop()


def wrapped(content: str, name: str, tag: str = "tool_result") -> str:
    """The payload inside the ``<tool_result name=...>`` wrapper the agent puts around a tool's output."""
    head = f'<{tag} name="{name}">\n'
    assert head in content and content.endswith(f"\n</{tag}>"), content
    return content[content.index(head) + len(head):-len(f"\n</{tag}>")]


def script(server: FakeOpenAIServer, turns: list[Any]) -> None:
    """The n-th request gets the n-th reply (the last one repeats)."""

    def reply(handler: Any) -> None:
        turns[min(len(server.received), len(turns)) - 1](handler)

    server.reply = reply


async def run_agent(server: FakeOpenAIServer, tools: list[Any], spec: str = AGENT) -> tuple[Any, list[EventBase]]:
    llm = OpenAICompatible(server.base_url, api_key="test", model="gpt-fake")
    try:
        async with Runtime(llm=llm, tools=tools, store=":memory:") as rt:
            record = await rt.run(load_yaml(spec), {"question": "Weather in Paris?"})
            events = [e async for e in rt.events(record.run_id)]
    finally:
        await llm.aclose()
    return record, events


async def test_agent_runs_requested_tools_concurrently_and_feeds_results_back(server: FakeOpenAIServer) -> None:
    running = 0
    peak = 0

    async def get_weather(city: str) -> dict[str, Any]:
        """Current weather for a city."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.05)
        running -= 1
        return {"city": city, "sky": "sunny"}

    async def get_time(tz: str) -> str:
        """Local time in a time zone."""
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.05)
        running -= 1
        return f"12:00 {tz}"

    script(server, [calls_reply(("call_1", "get_weather", {"city": "Paris"}),
                                ("call_2", "get_time", {"tz": "Europe/Paris"})),
                    sse_reply(text_chunks(["Sunny ", "at noon."]))])
    record, events = await run_agent(server, [get_weather, get_time])
    assert record.status == "completed", record.error
    assert record.output == "Sunny at noon."
    assert peak == 2  # both calls of one turn ran at once
    # the first request offered both tools; the second carried the calls and their results
    first, second = (r.body for r in server.received)
    assert {t["function"]["name"] for t in first["tools"]} == {"get_weather", "get_time"}
    assert first["tools"][0]["function"]["description"] == "Current weather for a city."
    assistant = second["messages"][-3]
    assert assistant["role"] == "assistant"
    assert [json.loads(c["function"]["arguments"]) for c in assistant["tool_calls"]] == [
        {"city": "Paris"}, {"tz": "Europe/Paris"}]
    results = second["messages"][-2:]
    assert [m["tool_call_id"] for m in results] == ["call_1", "call_2"]
    # results reach the model labelled as untrusted data, JSON for structures and strings as they are
    assert json.loads(wrapped(results[0]["content"], "get_weather")) == {"city": "Paris", "sky": "sunny"}
    assert wrapped(results[1]["content"], "get_time") == "12:00 Europe/Paris"
    assert "untrusted data" in results[0]["content"]
    tool_events = [(e.event, e.tool) for e in events if e.event in ("tool.call", "tool.result")]  # type: ignore[attr-defined]
    assert sorted(tool_events) == sorted([("tool.call", "get_weather"), ("tool.call", "get_time"),
                                          ("tool.result", "get_weather"), ("tool.result", "get_time")])
    assert "".join(e.text for e in events if e.event == "llm.delta") == "Sunny at noon."  # type: ignore[attr-defined]


async def test_a_failing_tool_is_reported_to_the_model_not_fatal(server: FakeOpenAIServer) -> None:
    def get_weather(city: str) -> str:
        raise TimeoutError(f"weather service timed out for {city}")

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("c1", "get_weather", {"city": "Oslo"})), sse_reply(text_chunks(["Unknown."]))])
    record, _ = await run_agent(server, [get_weather, get_time])
    assert record.status == "completed" and record.output == "Unknown."
    tool_message = server.received[1].body["messages"][-1]
    assert "weather service timed out for Oslo" in wrapped(tool_message["content"], "get_weather", tag="tool_error")


async def test_an_agent_that_never_answers_fails_at_max_steps(server: FakeOpenAIServer) -> None:
    def get_weather(city: str) -> str:
        return "rain"

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("c1", "get_weather", {"city": "Rome"}))])  # asks for a tool forever
    record, events = await run_agent(server, [get_weather, get_time])
    assert record.status == "failed"
    assert "max_steps=3" in (record.error or "") and "ask" in (record.error or "")
    assert len(server.received) == 3
    # the last turn was asked for an answer; its calls are not run, since no turn is left to read their results
    assert server.received[-1].body["tool_choice"] == "none"
    assert len([e for e in events if e.event == "tool.call"]) == 2


async def test_calls_of_the_last_turn_are_not_put_up_for_approval(server: FakeOpenAIServer) -> None:
    ran: list[str] = []

    @tool(requires_approval=True)
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        ran.append(city)
        return "rain"

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("c1", "get_weather", {"city": "Rome"}))])  # ignores tool_choice: none
    llm = OpenAICompatible(server.base_url, api_key="test", model="gpt-fake")
    async with Runtime(llm=llm, tools=[get_weather, get_time], store=":memory:") as rt:
        record = await rt.run(load_yaml(AGENT.replace("max_steps: 3", "max_steps: 1")), {"question": "?"})
        assert record.status == "failed" and "called tools anyway (get_weather)" in (record.error or "")
    await llm.aclose()
    assert ran == []


@pytest.mark.parametrize("dispatch", ["streamed", "sequential"])
async def test_calls_that_share_an_id_each_run_with_their_own_result(server: FakeOpenAIServer, dispatch: str) -> None:
    keys: list[str] = []

    @tool(side_effects=False)
    def get_weather(city: str, ctx: ToolContext) -> str:
        """Current weather for a city."""
        keys.append(ctx.idempotency_key)
        return f"rain in {city}"

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("dup", "get_weather", {"city": "Rome"}), ("dup", "get_weather", {"city": "Oslo"}),
                                ("", "get_weather", {"city": "Lima"})),  # a server that repeats ids, or sends none
                    sse_reply(text_chunks(["Rain."]))])
    spec = AGENT.replace("max_steps: 3", f"max_steps: 3\n    dispatch: {dispatch}")
    record, _ = await run_agent(server, [get_weather, get_time], spec)
    assert record.status == "completed", record.error
    messages = server.received[1].body["messages"]
    ids = [c["id"] for c in messages[-4]["tool_calls"]]
    assert ids[0] == "dup" and len(set(ids)) == 3 and all(ids)
    assert [m["tool_call_id"] for m in messages[-3:]] == ids
    assert [wrapped(m["content"], "get_weather") for m in messages[-3:]] == [
        "rain in Rome", "rain in Oslo", "rain in Lima"]
    assert len(set(keys)) == 3  # each call its own idempotency key


async def test_an_id_reused_in_a_later_turn_gets_a_fresh_one(server: FakeOpenAIServer) -> None:
    """A server that numbers calls per turn ("call_0" every time): each call still gets its own idempotency key
    and tool message, and the tool events name the same id as the model's call event."""
    keys: list[str] = []

    @tool(side_effects=False)
    def get_weather(city: str, ctx: ToolContext) -> str:
        """Current weather for a city."""
        keys.append(ctx.idempotency_key)
        return f"rain in {city}"

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("call_0", "get_weather", {"city": "Rome"})),
                    calls_reply(("call_0", "get_weather", {"city": "Oslo"})),
                    sse_reply(text_chunks(["Rain."]))])
    record, events = await run_agent(server, [get_weather, get_time], AGENT)
    assert record.status == "completed", record.error
    assert len(keys) == 2 and len(set(keys)) == 2
    messages = server.received[2].body["messages"]
    ids = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert ids[0] == "call_0" and len(set(ids)) == 2
    assert [m["tool_calls"][0]["id"] for m in messages if m.get("tool_calls")] == ids
    announced = [e.call_id for e in events if e.event == "llm.tool_call"]  # type: ignore[attr-defined]
    for name in ("tool.call", "tool.result"):
        assert [e.call_id for e in events if e.event == name] == announced == ids  # type: ignore[attr-defined]
    assert all(key.endswith(f":{i}") and key.count(":") == 3 for key, i in zip(keys, ids, strict=True))


async def test_an_approval_is_asked_again_when_a_later_turn_reuses_the_call_id(server: FakeOpenAIServer) -> None:
    ran: list[str] = []

    @tool(requires_approval=True)
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        ran.append(city)
        return f"rain in {city}"

    def get_time(tz: str) -> str:
        return tz

    script(server, [calls_reply(("call_0", "get_weather", {"city": "Rome"})),
                    calls_reply(("call_0", "get_weather", {"city": "Oslo"})),
                    sse_reply(text_chunks(["Rain."]))])
    llm = OpenAICompatible(server.base_url, api_key="test", model="gpt-fake")
    try:
        async with Runtime(llm=llm, tools=[get_weather, get_time], store=":memory:") as rt:
            first = await rt.run(load_yaml(AGENT), {"question": "Weather?"})
            assert first.status == "interrupted" and first.interrupt is not None
            assert first.interrupt["arguments"] == {"city": "Rome"}
            await rt.resume(first.run_id, {"approved": True})
            second = await rt.wait(first.run_id)
            assert second.status == "interrupted" and second.interrupt is not None  # asked again, not replayed
            assert second.interrupt["arguments"] == {"city": "Oslo"} and ran == ["Rome"]
            await rt.resume(first.run_id, {"approved": False})
            done = await rt.wait(first.run_id)
    finally:
        await llm.aclose()
    assert done.status == "completed" and ran == ["Rome"]


async def test_an_unknown_tool_is_answered_with_the_names_the_model_can_call(server: FakeOpenAIServer) -> None:
    script(server, [calls_reply(("c1", "delete_everything", {})), sse_reply(text_chunks(["Sorry."]))])
    record, _ = await run_agent(server, [], AGENT.replace("[get_weather, get_time]", "[files, calculator]"))
    assert record.status == "completed", record.error
    offered = [t["function"]["name"] for t in server.received[0].body["tools"]]
    error = wrapped(server.received[1].body["messages"][-1]["content"], "delete_everything", tag="tool_error")
    assert "files" not in offered  # a group's name, not a tool's
    assert error == f"there is no tool named 'delete_everything'; available: {', '.join(offered)}"


@pytest.mark.parametrize("dispatch", ["sequential", "after_generation", "streamed"])
async def test_a_turn_is_stored_before_any_of_its_calls_runs(server: FakeOpenAIServer, tmp_path: Any,
                                                             dispatch: str) -> None:
    """A tool's idempotency key holds its call's id, which the model chose in the turn; a crash after the tool
    started but before the turn was stored would re-ask the model on resume and run the tool again under a new
    key. So when a tool starts, the turn that asked for it is committed: read here straight from the SQLite file,
    by another connection, as a restarted process would."""
    import sqlite3

    db = tmp_path / "runs.db"
    seen: list[tuple[str, list[str]]] = []

    def get_weather(city: str, ctx: ToolContext) -> str:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT output FROM nodes WHERE kind = 'decision'").fetchall()
        stored = [json.loads(output) for (output,) in rows]
        seen.append((ctx.idempotency_key, [c["id"] for turn in stored if isinstance(turn, dict)
                                           for c in turn.get("tool_calls") or ()]))
        return "sunny"

    def get_time(tz: str) -> str:
        return tz

    spec = AGENT.replace("max_steps: 3", f"max_steps: 3\n    dispatch: {dispatch}")
    script(server, [calls_reply(("c1", "get_weather", {"city": "Oslo"}), ("c2", "get_weather", {"city": "Rome"})),
                    sse_reply(text_chunks(["Sunny."]))])
    llm = OpenAICompatible(server.base_url, api_key="test", model="gpt-fake")
    try:
        async with Runtime(llm=llm, tools=[get_weather, get_time], store=db) as rt:
            record = await rt.run(load_yaml(spec), {"question": "Weather?"})
    finally:
        await llm.aclose()
    assert record.status == "completed"
    assert len(seen) == 2
    for key, stored_ids in seen:
        assert key.endswith((":c1", ":c2")) and {"c1", "c2"} <= set(stored_ids), (key, stored_ids)
