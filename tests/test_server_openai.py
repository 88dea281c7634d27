"""The OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``) on a real
uvicorn serving the demo model, driven by the official ``openai`` client and by raw HTTP for the
wire format: plain and streamed answers, tool calls reassembled from stream deltas, JSON-schema
outputs that validate, stop / seed / max tokens / logprobs, and errors in OpenAI's shape."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import anyio
import httpx
import jsonschema
import openai
import pydantic
import pytest

from agentflow.server import ServerConfig
from agentflow.server.openai_models import ChatCompletion, Completion
from tests.serving import running_server

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "days"], "properties": {
            "city": {"type": "string", "enum": ["Paris", "Lyon", "Nantes"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The time in a timezone",
        "parameters": {"type": "object", "additionalProperties": False, "required": ["zone"], "properties": {
            "zone": {"type": "string", "enum": ["UTC", "CET"]}}}}},
]
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["city", "days", "ok", "note"], "properties": {
    "city": {"type": "string", "enum": ["Paris", "Lyon", "Nantes"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "ok": {"type": "boolean"},
    "note": {"type": "string", "maxLength": 6}}}
HI = [{"role": "user", "content": "Say something."}]


class Weather(pydantic.BaseModel):
    city: Literal["Paris", "Lyon", "Nantes"]
    days: int = pydantic.Field(ge=1, le=7)
    ok: bool


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_server(ServerConfig(model="demo", store=":memory:")) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def http(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


def sse_events(text: str) -> list[str]:
    """The data of each event of an SSE body, checking the framing: ``data: ...`` then a blank line."""
    assert text.endswith("\n\n")
    blocks = text[:-2].split("\n\n")
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), blocks[:3]
    return [b[len("data: "):] for b in blocks]


def tool_schema(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["demo"]
    model = client.models.retrieve("demo")
    assert model.id == "demo" and model.owned_by == "agentflow"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert info.value.code == "model_not_found"


def test_plain_chat_completion_with_seed(client: openai.OpenAI, http: httpx.Client) -> None:
    first = client.chat.completions.create(model="demo", messages=HI, max_tokens=12, seed=7)
    again = client.chat.completions.create(model="demo", messages=HI, max_completion_tokens=12, seed=7)
    other = client.chat.completions.create(model="demo", messages=HI, max_tokens=12, seed=8)
    choice = first.choices[0]
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-") and first.model == "demo"
    assert choice.message.role == "assistant" and choice.message.content and choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")
    assert again.choices[0].message.content == choice.message.content
    assert other.choices[0].message.content != choice.message.content
    usage = first.usage
    assert usage is not None and usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens is not None
    # The same request once more is served (in part) from the prefix cache.
    cached = client.chat.completions.create(model="demo", messages=HI, max_tokens=2, seed=7).usage
    assert cached is not None and cached.prompt_tokens_details is not None
    assert cached.prompt_tokens_details.cached_tokens > 0
    # The raw body matches the documented response model too.
    raw = http.post("/v1/chat/completions", json={"model": "demo", "messages": HI, "max_tokens": 3})
    ChatCompletion.model_validate(raw.json())
    assert len(client.chat.completions.create(model="demo", messages=HI, max_tokens=3, temperature=0,
                                              top_p=0.5, presence_penalty=1.5, frequency_penalty=-1,
                                              n=1).choices) == 1


def test_streaming_chat_is_openai_shaped_and_matches_the_plain_answer(client: openai.OpenAI,
                                                                       http: httpx.Client) -> None:
    plain = client.chat.completions.create(model="demo", messages=HI, max_tokens=16, seed=3)
    chunks = list(client.chat.completions.create(model="demo", messages=HI, max_tokens=16, seed=3, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason is not None]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]

    # On the wire: data: {json} events, the first with the role, finish, usage, then [DONE].
    body = {"model": "demo", "messages": HI, "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    data = [json.loads(e) for e in events[:-1]]
    assert data[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(set(d["choices"][0]) == {"index", "delta", "logprobs", "finish_reason"} for d in data)
    assert data[-1]["choices"][0]["finish_reason"] in ("stop", "length") and data[-1]["choices"][0]["delta"] == {}
    assert all("usage" not in d for d in data)  # only with stream_options.include_usage


def test_tool_calls_reassembled_from_stream_deltas(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Weather?"}],
                                            tools=TOOLS, tool_choice="required", max_tokens=200, seed=5,
                                            stream=True)  # type: ignore[arg-type]
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            if delta.id is not None:  # the first piece of a call: id, type and name
                assert delta.index not in calls and delta.type == "function" and delta.function is not None
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "arguments": ""}
            assert delta.function is not None
            calls[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls" and calls and sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        assert re.fullmatch(r"call_\w+", call["id"])
        jsonschema.validate(json.loads(call["arguments"]), tool_schema(call["name"]))

    # The same request without streaming: the same calls (same seed), arguments as JSON strings.
    plain = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "Weather?"}],
                                           tools=TOOLS, tool_choice="required", max_tokens=200,
                                           seed=5)  # type: ignore[arg-type]
    message = plain.choices[0].message
    assert plain.choices[0].finish_reason == "tool_calls" and message.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls] == \
        [(c["name"], json.loads(c["arguments"])) for c in calls.values()]  # type: ignore[union-attr]


def test_a_tool_call_cut_by_max_tokens_is_the_same_with_and_without_streaming(client: openai.OpenAI) -> None:
    """The non-streaming answer used to drop a call cut off by max_tokens that the stream had sent."""
    ask: Any = {"model": "demo", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 12,
                "seed": 1, "temperature": 0}
    streamed: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**ask, stream=True):
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or ():
            assert delta.function is not None
            if delta.id is not None:
                streamed[delta.index] = {"id": delta.id, "name": delta.function.name or "", "arguments": ""}
            streamed[delta.index]["arguments"] += delta.function.arguments or ""
    assert finish == "length" and streamed  # the call began and was cut
    plain = client.chat.completions.create(**ask)
    assert plain.choices[0].finish_reason == "length"
    calls = plain.choices[0].message.tool_calls
    assert calls and [(c.function.name, c.function.arguments) for c in calls] == \
        [(c["name"], c["arguments"]) for c in streamed.values()]  # type: ignore[union-attr]
    with pytest.raises(json.JSONDecodeError):
        json.loads(calls[0].function.arguments)  # type: ignore[union-attr]  # incomplete, as OpenAI's are


def test_stop_strings_neither_break_tool_calls_nor_cut_json_answers(client: openai.OpenAI) -> None:
    """A stop string met inside a tool call used to be a 503 "model unavailable" (which clients retry)."""
    ask: Any = {"model": "demo", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": TOOLS,
                "tool_choice": "required", "max_tokens": 40, "seed": 0, "stop": ['"city']}
    plain = client.chat.completions.create(**ask)
    assert plain.choices[0].finish_reason == "stop"  # not "tool_calls": the call is not whole
    calls = plain.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    streamed, finish = "", None
    for chunk in client.chat.completions.create(**ask, stream=True):
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or ():
            streamed += delta.function.arguments or "" if delta.function else ""
    assert finish == "stop" and streamed == calls[0].function.arguments  # type: ignore[union-attr]
    whole = client.chat.completions.create(**{**ask, "stop": ["</tool_call>"]})
    assert whole.choices[0].finish_reason == "tool_calls"
    json.loads(whole.choices[0].message.tool_calls[0].function.arguments)  # type: ignore[index,union-attr]
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}
    answer = client.chat.completions.create(model="demo", messages=HI, response_format=response_format,
                                            max_tokens=80, seed=0, stop=[",", "}"])
    assert answer.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMA)  # the schema ends it


def test_a_schema_the_grammar_engine_cannot_follow_fails_alone(url: str) -> None:
    """A pattern that blows up llguidance's parser mid-output used to end every request in the engine's batch
    (503s, other tenants' runs failed). Now that request gets its own error and the others finish."""
    blowup = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string",
                                                                            "pattern": "^(c{999}){1001}$"}}}

    async def main() -> tuple[httpx.Response, list[httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            async def plain() -> httpx.Response:
                return await http.post("/v1/chat/completions", json={"model": "demo", "messages": HI, "max_tokens": 24,
                                                                     "temperature": 0})
            async with anyio.create_task_group() as tg:
                others: list[httpx.Response] = []

                async def other() -> None:
                    others.append(await plain())

                for _ in range(3):
                    tg.start_soon(other)
                bad = await http.post("/v1/chat/completions", json={"model": "demo", "messages": HI, "max_tokens": 24,
                                                                    "response_format": blowup})
            return bad, others

    bad, others = anyio.run(main)
    assert bad.status_code in (400, 422), bad.text
    assert bad.json()["error"]["param"] in ("response_format", "constraint") and "too many" in bad.text
    assert [r.status_code for r in others] == [200, 200, 200]
    assert all(r.json()["choices"][0]["finish_reason"] == "length" for r in others)


def test_tool_choice_named_none_and_parallel(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What time is it?"}]
    named = client.chat.completions.create(model="demo", messages=ask, tools=TOOLS, max_tokens=100, seed=1,
                                           tool_choice={"type": "function", "function": {"name": "get_time"}},
                                           )  # type: ignore[arg-type]
    calls = named.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == ["get_time"]  # type: ignore[union-attr]
    jsonschema.validate(json.loads(calls[0].function.arguments), tool_schema("get_time"))  # type: ignore[union-attr]

    none = client.chat.completions.create(model="demo", messages=ask, tools=TOOLS, tool_choice="none",
                                          max_tokens=16, seed=1)  # type: ignore[arg-type]
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason != "tool_calls"
    assert "<tool_call>" not in (none.choices[0].message.content or "")

    for seed in range(3):
        single = client.chat.completions.create(model="demo", messages=ask, tools=TOOLS, tool_choice="required",
                                                parallel_tool_calls=False, max_tokens=150,
                                                seed=seed)  # type: ignore[arg-type]
        assert len(single.choices[0].message.tool_calls or ()) == 1

    # A tool-call history (arguments as JSON strings, content None) is accepted and answered.
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"}]
    follow = client.chat.completions.create(model="demo", messages=history, tools=TOOLS, max_tokens=8,
                                            seed=1)  # type: ignore[arg-type]
    assert follow.usage is not None and follow.usage.prompt_tokens > named.usage.prompt_tokens  # type: ignore[union-attr]


def test_empty_parameters_are_any_object(client: openai.OpenAI) -> None:
    # vLLM accepts `parameters: {}`; it used to be a 422
    tools: Any = [{"type": "function", "function": {"name": "anything", "parameters": {}}}]
    answer = client.chat.completions.create(model="demo", messages=HI, tools=tools, tool_choice="required",
                                            max_tokens=60, seed=3)
    calls = answer.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "anything"  # type: ignore[union-attr]


def test_json_schema_responses_validate(client: openai.OpenAI) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "weather", "strict": True, "schema": SCHEMA}}
    for seed in range(3):
        answer = client.chat.completions.create(model="demo", messages=HI, response_format=response_format,
                                                max_tokens=80, seed=seed)  # type: ignore[arg-type]
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMA)
    streamed = client.chat.completions.create(model="demo", messages=HI, response_format=response_format,
                                              max_tokens=80, seed=9, stream=True)  # type: ignore[arg-type]
    jsonschema.validate(json.loads("".join(c.choices[0].delta.content or "" for c in streamed)), SCHEMA)

    # The client's own structured-output helper: a pydantic model in, a parsed instance out.
    parsed = client.chat.completions.parse(model="demo", messages=HI, response_format=Weather, max_tokens=60, seed=4)
    assert isinstance(parsed.choices[0].message.parsed, Weather)

    # json_object: an object, whole when the model closes it within the budget (random weights
    # ramble inside strings: some seeds do, some do not).
    closed = []
    for seed in range(8):
        obj = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "json"}],
                                             response_format={"type": "json_object"}, max_tokens=100, seed=seed)
        text = obj.choices[0].message.content or ""
        assert text.startswith("{")
        if obj.choices[0].finish_reason == "stop":
            closed.append(json.loads(text))
            break
    assert closed and isinstance(closed[0], dict)


def test_stop_max_tokens_and_logprobs(client: openai.OpenAI) -> None:
    long = client.chat.completions.create(model="demo", messages=HI, max_tokens=24, seed=11, temperature=0.7)
    text = long.choices[0].message.content or ""
    assert long.choices[0].finish_reason == "length" and len(text) > 12
    stop = text[6:10]
    assert stop.strip(), text
    cut = client.chat.completions.create(model="demo", messages=HI, max_tokens=24, seed=11, temperature=0.7,
                                         stop=[stop, "never-appears"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[:text.index(stop)]

    short = client.chat.completions.create(model="demo", messages=HI, max_completion_tokens=3, seed=11)
    assert short.usage is not None and short.usage.completion_tokens <= 3

    scored = client.chat.completions.create(model="demo", messages=HI, max_tokens=10, seed=11, logprobs=True,
                                            top_logprobs=0)
    content = scored.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and 0 < len(content) <= scored.usage.completion_tokens  # type: ignore[union-attr]
    assert all(entry.logprob <= 0 and entry.bytes is not None and entry.top_logprobs == [] for entry in content)
    streamed = client.chat.completions.create(model="demo", messages=HI, max_tokens=10, seed=11, logprobs=True,
                                              stream=True)
    lp = [e.logprob for c in streamed if c.choices and c.choices[0].logprobs
          for e in c.choices[0].logprobs.content or ()]
    assert lp == [e.logprob for e in content]


def test_logprob_bytes_rebuild_characters_split_over_tokens(client: openai.OpenAI) -> None:
    # the random-weight demo model writes plenty of CJK and Thai, whose characters often span tokens: their
    # `bytes` used to be those of U+FFFD, so the text could not be rebuilt from them
    split = 0
    with ThreadPoolExecutor(6) as pool:  # concurrent requests: the engine decodes them as one batch
        answers = list(pool.map(lambda seed: client.chat.completions.create(
            model="demo", messages=HI, max_tokens=40, seed=seed, logprobs=True), range(6)))
        texts = list(pool.map(lambda seed: client.completions.create(
            model="demo", prompt="Once", max_tokens=30, seed=seed, logprobs=0), range(6)))
    for answer, text in zip(answers, texts, strict=True):
        entries = answer.choices[0].logprobs.content  # type: ignore[union-attr]
        assert entries
        data = b"".join(bytes(e.bytes or ()) for e in entries)
        assert data.decode("utf-8", "replace") == answer.choices[0].message.content
        for e in entries:
            if "\ufffd" in e.token:  # part of a character: its own bytes, not those of the replacement mark
                split += 1
                assert b"\xef\xbf\xbd" not in bytes(e.bytes or ()), e
        lp = text.choices[0].logprobs
        assert lp is not None and lp.text_offset and lp.tokens
        assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[-1] <= len(text.choices[0].text)
    assert split, "no token held part of a character: the check above proved nothing"


def test_completions(client: openai.OpenAI, http: httpx.Client) -> None:
    plain = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=6, seed=1)
    assert plain.object == "text_completion" and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and plain.usage.prompt_tokens == 4 and plain.usage.completion_tokens <= 6
    streamed = list(client.completions.create(model="demo", prompt="Once upon a time", max_tokens=6, seed=1,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text
    assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == plain.usage.completion_tokens

    echoed = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=6, seed=1, echo=True)
    assert echoed.choices[0].text == "Once upon a time" + plain.choices[0].text
    ids = client.completions.create(model="demo", prompt=[[1, 2, 3, 4, 5]], max_tokens=2)
    assert ids.usage is not None and ids.usage.prompt_tokens == 5

    scored = client.completions.create(model="demo", prompt="Once upon a time", max_tokens=6, seed=1, logprobs=0)
    lp = scored.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and len(lp.tokens) == len(lp.token_logprobs)
    assert lp.text_offset is not None and lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    Completion.model_validate(http.post("/v1/completions", json={"model": "demo", "prompt": "Hi",
                                                                 "max_tokens": 2}).json())


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("change", "status", "param"), [
    ({"model": "gpt-4o"}, 404, "model"),
    ({"n": 2}, 422, "n"),
    ({"logit_bias": {"42": 1}}, 422, "logit_bias"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 422,
     "messages.0.content.0.type"),  # the field the client wrote, not pydantic's union branch names
    ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0"),
    ({"messages": []}, 422, "messages"),
    ({"messages": [{"role": "user", "content": 42}]}, 422, "messages.0.content"),
    ({"stop": ["a"] * 17}, 422, "stop"),  # and the branch that says what is wrong: at most 16
    ({"temperature": 3}, 422, "temperature"),
    ({"temperature": True}, 422, "temperature"),  # strict: no coercion
    ({"max_tokens": 0}, 422, "max_tokens"),
    ({"max_tokens": "5"}, 422, "max_tokens"),
    ({"stop": ""}, 422, "stop"),
    ({"top_logprobs": 3, "logprobs": True}, 422, "top_logprobs"),
    ({"tool_choice": "required"}, 422, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, 422,
     "tools.0.function.parameters.type"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": 5}}}]},
     400, "tools[0].function.parameters"),
    ({"tools": TOOLS, "response_format": {"type": "json_object"}}, 422, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}}, 400,
     "response_format.json_schema.schema"),
    ({"response_format": {"type": "xml"}}, 422, "response_format"),
    ({"functions": [{"name": "f"}]}, 422, "functions"),
])
def test_chat_errors_are_openai_shaped(http: httpx.Client, change: dict[str, Any], status: int, param: str) -> None:
    body = {"model": "demo", "messages": HI, "max_tokens": 2, **change}
    for stream in (False, True):  # refused before any stream starts
        error = error_of(http.post("/v1/chat/completions", json={**body, "stream": stream}), status)
        assert error["param"] is not None and error["param"].startswith(param), error
        assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")


def test_errors_reach_the_official_client_and_the_server_keeps_serving(client: openai.OpenAI,
                                                                       http: httpx.Client) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=HI)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.chat.completions.create(model="demo", messages=HI, n=3)  # type: ignore[arg-type]
    assert bad.value.param == "n"
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(model="demo", messages=HI, tools=TOOLS,  # type: ignore[arg-type]
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert unknown.value.param == "tool_choice" and "nope" in unknown.value.message
    assert error_of(http.post("/v1/chat/completions", content=b"{not json"), 400)["code"] == "invalid_json"
    completion = {"model": "demo", "max_tokens": 2}
    for change, status, param in [({"prompt": ["a", "b"]}, 422, "prompt"), ({"prompt": [[10**9]]}, 400, "prompt"),
                                  ({"prompt": ""}, 422, "prompt"), ({"prompt": "x", "logprobs": 2}, 422, "logprobs"),
                                  ({"prompt": [1, 2], "echo": True}, 422, "echo"),
                                  ({"prompt": "x", "suffix": "y"}, 422, "suffix")]:
        error = error_of(http.post("/v1/completions", json={**completion, **change}), status)
        assert error["param"].startswith(param), error
    # Lone surrogates (valid JSON escapes, not UTF-8) are replaced, not a crash.
    weird = b'{"model": "demo", "prompt": "a\\udaf8b", "echo": true, "max_tokens": 2}'
    echoed = http.post("/v1/completions", content=weird, headers={"content-type": "application/json"})
    assert echoed.status_code == 200 and echoed.json()["choices"][0]["text"].startswith("a\ufffd")
    weird = b'{"model": "demo", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2, ' \
        b'"stop": "\\udc00"}'
    assert http.post("/v1/chat/completions", content=weird, headers={"content-type": "application/json"}
                     ).status_code == 200
    # 2.0 is an integer to JSON Schema, so to the API too (true is not).
    two = http.post("/v1/chat/completions", json={"model": "demo", "messages": HI, "max_tokens": 2.0, "seed": 1.0})
    assert two.status_code == 200 and two.json()["usage"]["completion_tokens"] <= 2
    # An assistant turn with neither content nor tool calls is taken as empty.
    odd = [*HI, {"role": "assistant"}, {"role": "user", "content": [{"type": "text", "text": "Go on."}]}]
    assert client.chat.completions.create(model="demo", messages=odd, max_tokens=2).choices  # type: ignore[arg-type]
    assert error_of(http.get("/v1/chat/completions"), 405)["type"] == "invalid_request_error"
    assert client.chat.completions.create(model="demo", messages=HI, max_tokens=2).choices[0].message.content


def gauge(http: httpx.Client, name: str, *, until: float, within: float = 1.0) -> float:
    """A gauge of /metrics, read until it shows ``until`` or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while True:
        found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.M)
        assert found, name
        if float(found[1]) == until or time.monotonic() > deadline:
            return float(found[1])
        time.sleep(0.02)


def test_generation_metrics_and_openapi(http: httpx.Client) -> None:
    with http.stream("POST", "/v1/chat/completions", json={"model": "demo", "messages": HI, "max_tokens": 4,
                                                           "stream": True}) as r:
        r.read()
    metrics = http.get("/metrics").text
    ttft = re.search(r'agentflow_time_to_first_token_seconds_count\{api="chat"\} (\S+)', metrics)
    gaps = re.search(r'agentflow_inter_token_seconds_count\{api="chat"\} (\S+)', metrics)
    assert ttft and float(ttft[1]) >= 1 and gaps and float(gaps[1]) >= 1
    assert gauge(http, "agentflow_generation_requests_in_flight", until=0.0) == 0.0
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/models/{model}", "/v1/chat/completions", "/v1/completions", "/generate"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]
    assert {"200", "400", "404", "422", "503"} <= set(chat["responses"])
