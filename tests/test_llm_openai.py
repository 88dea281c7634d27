"""OpenAICompatible end to end over real HTTP, against ``FakeOpenAIServer``: a stand-in for an
OpenAI-compatible API (no real remote API is reachable from tests), built on the stdlib
``ThreadingHTTPServer`` on 127.0.0.1, answering with server-sent events in OpenAI's exact chunk
shape. Also ``resolve_llm``'s spec formats."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from agentflow.llm import (
    Constraint,
    LLMError,
    LLMRequest,
    LLMResult,
    LLMStatusError,
    LocalEngine,
    OpenAICompatible,
    TextDelta,
    generate,
    resolve_llm,
)
from agentflow.runtime.events import NodeRetrying
from tests.fake_openai import (
    FakeOpenAIServer,
    chunk,
    endless_reply,
    json_reply,
    raw_sse_reply,
    sse_reply,
    text_chunks,
    tool_call_chunks,
    usage_chunk,
)

log = logging.getLogger(__name__)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    fake = FakeOpenAIServer()
    fake.start()
    yield fake
    fake.stop()




async def collect(llm: OpenAICompatible, request: LLMRequest) -> tuple[list[str], LLMResult]:
    deltas: list[str] = []
    result: LLMResult | None = None
    async for item in llm.stream(request):
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            result = item
    assert result is not None
    return deltas, result


# ---- the client -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_text_stream_usage_and_request_body(server: FakeOpenAIServer) -> None:
    server.reply = sse_reply(text_chunks(["Hel", "lo, ", "wörld 🙂"]))
    llm = OpenAICompatible(server.base_url, api_key="sk-test", model="gpt-fake")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    deltas, result = await collect(llm, LLMRequest(messages=messages, max_tokens=50, temperature=0.2, seed=7,
                                                   stop=["\n\n"]))
    await llm.aclose()
    assert deltas == ["Hel", "lo, ", "wörld 🙂"]
    assert (result.text, result.finish_reason, result.tool_calls) == ("Hello, wörld 🙂", "stop", [])
    assert (result.prompt_tokens, result.completion_tokens, result.cached_tokens) == (12, 3, 8)
    [got] = server.received
    assert got.path == "/v1/chat/completions"
    assert got.headers["authorization"] == "Bearer sk-test"
    assert got.body == {"model": "gpt-fake", "messages": messages, "stream": True,
                        "stream_options": {"include_usage": True}, "max_tokens": 50, "temperature": 0.2,
                        "seed": 7, "stop": ["\n\n"]}


@pytest.mark.anyio
async def test_prompt_model_override_and_key_from_env(server: FakeOpenAIServer,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    llm = OpenAICompatible(server.base_url + "/", model="default-model")
    await generate(llm, LLMRequest(prompt="Complete me", model="other-model", top_k=5))
    monkeypatch.delenv("OPENAI_API_KEY")
    keyless = OpenAICompatible(server.base_url)
    await generate(keyless, LLMRequest(prompt="again"))
    await llm.aclose()
    await keyless.aclose()
    first, second = server.received
    assert first.headers["authorization"] == "Bearer sk-env"
    assert first.body["model"] == "other-model" and first.body["top_k"] == 5
    assert first.body["messages"] == [{"role": "user", "content": "Complete me"}]
    assert "authorization" not in second.headers and "model" not in second.body


@pytest.mark.anyio
async def test_tool_call_fragments_are_reassembled(server: FakeOpenAIServer) -> None:
    server.reply = sse_reply(tool_call_chunks())
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    deltas, result = await collect(llm, LLMRequest(messages=[{"role": "user", "content": "?"}], tools=TOOLS))
    await llm.aclose()
    assert deltas == [] and result.text == ""
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("call_abc", "get_weather", {"city": "Paris"}),
        ("call_def", "get_time", {"tz": "Europe/Paris", "fmt": {"h24": True}})]
    assert (result.prompt_tokens, result.completion_tokens) == (40, 30)
    assert server.received[0].body["tools"] == TOOLS


def call_fragment(index: int | None = None, **fields: Any) -> dict[str, Any]:
    return chunk({"tool_calls": [{**fields, **({"index": index} if index is not None else {})}]})


@pytest.mark.anyio
@pytest.mark.parametrize("fragments", [
    pytest.param([call_fragment(0, id="c1", function={"name": "get_weather", "arguments": ""}),
                  call_fragment(0, function={"name": "get_weather", "arguments": '{"city": '}),
                  call_fragment(0, function={"name": "get_weather", "arguments": '"Paris"}'}),
                  call_fragment(1, id="c2", function={"name": "get_", "arguments": ""}),
                  call_fragment(1, function={"name": "time", "arguments": '{"tz": "CET"}'})],
                 id="name repeated in every fragment (Fireworks, NIM), or split"),
    pytest.param([call_fragment(0, id="c1", function={"name": "get_weather", "arguments": '{"city"'}),
                  call_fragment(0, function={"arguments": ': "Paris"}'}),
                  call_fragment(0, id="c2", function={"name": "get_time", "arguments": '{"tz": "CET"}'})],
                 id="every call at index 0 (Ollama)"),
    pytest.param([call_fragment(id="c1", function={"name": "get_weather", "arguments": '{"city"'}),
                  call_fragment(function={"arguments": ': "Paris"}'}),
                  call_fragment(id="c2", function={"name": "get_time", "arguments": {"tz": "CET"}})],
                 id="no index, arguments as an object"),
])
async def test_off_spec_tool_call_fragments_are_read_as_meant(server: FakeOpenAIServer,
                                                              fragments: list[dict[str, Any]]) -> None:
    server.reply = sse_reply([*fragments, chunk({}, "tool_calls"), usage_chunk(4, 2)])
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    result = await generate(llm, LLMRequest(prompt="?", tools=TOOLS))
    await llm.aclose()
    assert [(c.id, c.name, c.arguments) for c in result.tool_calls] == [
        ("c1", "get_weather", {"city": "Paris"}), ("c2", "get_time", {"tz": "CET"})]


@pytest.mark.anyio
async def test_keep_alive_events_are_skipped(server: FakeOpenAIServer) -> None:
    events = [f"data: {json.dumps(c)}\n\n" for c in text_chunks(["Hi"])]
    server.reply = raw_sse_reply([": ping\n\n", "data:\n\n", *events[:2], "data: \n\n", *events[2:],
                                  "data: [DONE]\n\n"])
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    deltas, result = await collect(llm, LLMRequest(prompt="hi"))
    await llm.aclose()
    assert deltas == ["Hi"] and (result.text, result.finish_reason) == ("Hi", "stop")


@pytest.mark.anyio
async def test_json_schema_constraint_becomes_response_format(server: FakeOpenAIServer) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    await generate(llm, LLMRequest(prompt="json", constraint=Constraint(json_schema=schema)))
    await generate(llm, LLMRequest(prompt="regex", constraint=Constraint(regex="[0-9]+")))
    await generate(llm, LLMRequest(prompt="choice", constraint=Constraint(choices=("a", "b"))))
    await llm.aclose()
    assert server.received[0].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": schema, "strict": True}}
    assert all("response_format" not in r.body for r in server.received[1:])


@pytest.mark.anyio
async def test_http_errors_carry_status_and_the_servers_message(server: FakeOpenAIServer) -> None:
    llm = OpenAICompatible(server.base_url, api_key="sk-wrong", model="gpt-fake")
    server.reply = json_reply(401, {"error": {"message": "Incorrect API key provided: sk-wrong.",
                                              "type": "invalid_request_error", "param": None,
                                              "code": "invalid_api_key"}})
    with pytest.raises(LLMStatusError, match=r"HTTP 401 .*Incorrect API key provided") as info:
        await generate(llm, LLMRequest(prompt="hi"))
    assert info.value.status_code == 401 and isinstance(info.value, LLMError)
    server.reply = json_reply(500, "upstream exploded")
    with pytest.raises(LLMStatusError, match=r"HTTP 500 .*upstream exploded") as info:
        await generate(llm, LLMRequest(prompt="hi"))
    assert info.value.status_code == 500 and info.value.retry_after is None
    server.reply = json_reply(429, {"error": {"message": "Rate limit reached"}}, headers={"Retry-After": "7"})
    with pytest.raises(LLMStatusError, match=r"HTTP 429 .*Rate limit reached") as info:
        await generate(llm, LLMRequest(prompt="hi"))
    assert (info.value.status_code, info.value.retry_after) == (429, 7.0)
    server.reply = json_reply(503, "busy", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    with pytest.raises(LLMStatusError) as info:
        await generate(llm, LLMRequest(prompt="hi"))
    assert info.value.retry_after == 0.0  # a date in the past: no need to wait
    wrong_path = OpenAICompatible(server.base_url.removesuffix("/v1"), model="gpt-fake")
    with pytest.raises(LLMStatusError, match=r"HTTP 404 .*no route /chat/completions"):
        await generate(wrong_path, LLMRequest(prompt="hi"))
    await llm.aclose()
    await wrong_path.aclose()


@pytest.mark.anyio
async def test_bad_streams_raise_llm_error(server: FakeOpenAIServer) -> None:
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    bad_args = tool_call_chunks()
    bad_args[3] = chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}}"}}]})
    server.reply = sse_reply(bad_args)
    with pytest.raises(LLMError, match="'get_weather' has arguments that are not valid JSON"):
        await generate(llm, LLMRequest(prompt="hi", tools=TOOLS))
    server.reply = sse_reply([chunk({"content": "a"}), {"error": {"message": "model overloaded"}}])
    with pytest.raises(LLMError, match="mid-stream: model overloaded"):
        await generate(llm, LLMRequest(prompt="hi"))
    server.reply = sse_reply([chunk({"content": "a"})], done=False)
    with pytest.raises(LLMError, match="before the response finished"):
        await generate(llm, LLMRequest(prompt="hi"))
    cut = [*tool_call_chunks()[:3], chunk({}, "length")]
    server.reply = sse_reply(cut)
    with pytest.raises(LLMError, match="'get_weather' was cut short by max_tokens"):
        await generate(llm, LLMRequest(prompt="hi", tools=TOOLS))
    for malformed, what in [({"choices": ["x"]}, "choices"), ({"choices": [{"delta": "x"}]}, "delta"),
                            ({"choices": [{"delta": {"content": ["x"]}}]}, "content"),
                            ({"choices": [{"delta": {"tool_calls": {"index": 0}}}]}, "tool_calls"),
                            ({"choices": [{"delta": {"tool_calls": [{"function": "f"}]}}]}, "function"),
                            ({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": 1}}]}}]},
                             "arguments")]:
        server.reply = sse_reply([malformed])
        with pytest.raises(LLMError, match=what):  # not an AttributeError or TypeError from the parsing
            await generate(llm, LLMRequest(prompt="hi", tools=TOOLS))
    await llm.aclose()


@pytest.mark.anyio
async def test_connection_failure_is_an_llm_error() -> None:
    fake = FakeOpenAIServer()  # bound, never serving, then closed: the port refuses connections
    base_url = fake.base_url
    fake._httpd.server_close()
    llm = OpenAICompatible(base_url, model="gpt-fake", timeout=5)
    with pytest.raises(LLMError, match="ConnectError") as info:
        await generate(llm, LLMRequest(prompt="hi"))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    await llm.aclose()


@pytest.mark.anyio
async def test_break_and_cancellation_close_the_connection(server: FakeOpenAIServer) -> None:
    server.reply = endless_reply
    llm = OpenAICompatible(server.base_url, model="gpt-fake")
    stream = llm.stream(LLMRequest(prompt="go"))
    for _ in range(3):
        assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await anyio.to_thread.run_sync(server.disconnected.wait, 5)

    server.disconnected.clear()
    seen: list[str] = []
    with anyio.move_on_after(0.3) as scope:
        async for item in llm.stream(LLMRequest(prompt="go")):
            if isinstance(item, TextDelta):
                seen.append(item.text)
    assert scope.cancelled_caught and seen
    assert await anyio.to_thread.run_sync(server.disconnected.wait, 5)
    await llm.aclose()


@pytest.mark.anyio
async def test_a_client_passed_in_stays_open(server: FakeOpenAIServer) -> None:
    async with httpx.AsyncClient() as client:
        llm = OpenAICompatible(server.base_url, model="gpt-fake", client=client, headers={"X-Trace": "t1"})
        await generate(llm, LLMRequest(prompt="hi"))
        await llm.aclose()
        assert not client.is_closed
    owned = OpenAICompatible(server.base_url)
    await owned.aclose()
    assert owned._client.is_closed
    assert server.received[0].headers["x-trace"] == "t1"


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        OpenAICompatible("localhost:8000/v1")


# ---- resolve_llm ----------------------------------------------------------------------------


def test_resolve_llm_specs(tmp_path: Any) -> None:
    remote = resolve_llm("openai:qwen2.5-7b@http://localhost:8000/v1")
    assert isinstance(remote, OpenAICompatible)
    assert (remote.url, remote.model) == ("http://localhost:8000/v1/chat/completions", "qwen2.5-7b")
    hosted = resolve_llm("openai:gpt-4o-mini", api_key="sk-x")
    assert isinstance(hosted, OpenAICompatible)
    assert (hosted.url, hosted.model) == ("https://api.openai.com/v1/chat/completions", "gpt-4o-mini")
    bare = resolve_llm("https://example.test/api/v1")
    assert isinstance(bare, OpenAICompatible) and bare.model is None
    for spec in ("demo", "local:demo", str(tmp_path), "./checkpoints/qwen", "~/models/qwen"):
        assert isinstance(resolve_llm(spec), LocalEngine), spec  # built lazily: nothing loads here
    with pytest.raises(ValueError, match="unknown LLM spec"):
        resolve_llm("gpt-4o")



@pytest.mark.anyio
async def test_a_node_retry_waits_as_long_as_a_rate_limited_server_asked(server: FakeOpenAIServer) -> None:
    """A 429 with Retry-After: the node's retry waits that long rather than its own shorter backoff, but
    never more than the policy's max_delay."""
    from agentflow import Runtime, load_yaml

    limited = {"error": {"message": "slow down"}}
    replies = [json_reply(429, limited, headers={"Retry-After": "0.4"}), sse_reply(text_chunks(["fine"])),
               json_reply(429, limited, headers={"Retry-After": "5"}), sse_reply(text_chunks(["fine"]))]
    server.reply = lambda handler: replies[len(server.received) - 1](handler)
    spec = load_yaml("""
name: patient
nodes:
  - {id: say, kind: llm, prompt: hi, retry: {max_attempts: 3, initial_delay: 0.01, jitter: 0}}
  - {id: capped, kind: llm, prompt: again, retry: {max_attempts: 3, initial_delay: 0.01, jitter: 0, max_delay: 0.1}}
edges:
  - {from: say, to: capped}
output: capped
""")
    llm = OpenAICompatible(server.base_url, api_key="test", model="gpt-fake")
    try:
        async with Runtime(llm=llm, store=":memory:") as rt:
            record = await rt.run(spec)
            events = [e async for e in rt.events(record.run_id)]
    finally:
        await llm.aclose()
    assert record.status == "completed", record.error
    assert [(e.node, e.delay) for e in events if isinstance(e, NodeRetrying)] == [("say", 0.4), ("capped", 0.1)]
