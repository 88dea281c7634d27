"""Structured results on ``Output``: ``json`` for JSON-schema requests, ``content`` and ``tool_calls``
for tool-call requests, from the demo engine (random weights, real Qwen2.5 tokenizer), checked
against the output text with jsonschema; and the loud failure when a constrained output breaks its
schema (``ConstraintViolationError``), provoked with a constraint object that lies."""

from __future__ import annotations

import json
import logging

import jsonschema
import pytest

from engine import AsyncEngine, Engine, Request, SamplingParams
from engine.constrained import ConstraintSpec
from engine.constrained.result import structure
from engine.constrained.spec import ToolCallSpec
from engine.errors import ConstraintViolationError

ORDER = {"type": "object", "properties": {"item": {"type": "string", "maxLength": 12},
                                          "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
         "required": ["item", "qty"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                                    "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def engine(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192)


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_json_output_is_parsed_and_valid(engine: Engine) -> None:
    outs = engine.generate([Request(prompt=f"Order {i}:", params=SamplingParams(seed=i, max_new_tokens=120),
                                    constraint=ConstraintSpec(json_schema=ORDER)) for i in range(6)])
    for out in outs:
        assert out.finish_reason == "stop"
        assert out.json == json.loads(out.text)
        jsonschema.validate(out.json, ORDER)
        assert out.tool_calls is None and out.content is None


def test_a_cut_off_json_output_has_no_value(engine: Engine) -> None:
    out, = engine.generate([Request(prompt="Order:", params=SamplingParams(seed=1, max_new_tokens=3),
                                    constraint=ConstraintSpec(json_schema=ORDER))])
    assert out.finish_reason == "length" and out.json is None


def test_unconstrained_and_regex_outputs_have_no_structure(engine: Engine) -> None:
    plain, regex = engine.generate([Request(prompt="Hi", params=SamplingParams(max_new_tokens=4)),
                                    Request(prompt="Hi", params=SamplingParams(max_new_tokens=8),
                                            constraint=ConstraintSpec(regex="[a-z]{3}"))])
    for out in (plain, regex):
        assert (out.json, out.tool_calls, out.content) == (None, None, None)


def test_required_tool_calls_come_back_as_validated_dicts(engine: Engine) -> None:
    spec = ConstraintSpec(tool_calls=ToolCallSpec(tools=[WEATHER, CLOCK], tool_choice="required"))
    outs = engine.generate([Request(messages=chat(f"Weather in city {i}?"), tools=[WEATHER, CLOCK],
                                    params=SamplingParams(seed=i, max_new_tokens=160), constraint=spec)
                            for i in range(6)])
    made = 0
    for out in outs:
        assert out.content == ""  # required: calls only
        assert out.tool_calls is not None
        if out.finish_reason == "stop":
            assert out.tool_calls, "a finished required turn has at least one call"
        for call in out.tool_calls:
            made += 1
            assert call.id.startswith("call_") and call.name in {"get_weather", "get_time"}
            schema = (WEATHER if call.name == "get_weather" else CLOCK)["function"]["parameters"]
            jsonschema.validate(call.arguments, schema)
        assert len({c.id for c in out.tool_calls}) == len(out.tool_calls)
        if out.finish_reason == "stop":  # the calls as written in the text, read independently
            decoder = json.JSONDecoder()
            written = [decoder.raw_decode(part.lstrip())[0] for part in out.text.split("<tool_call>")[1:]]
            assert [(w["name"], w["arguments"]) for w in written] == [(c.name, c.arguments) for c in out.tool_calls]
    assert made >= 4


def test_tool_choice_none_gives_content_and_no_calls(engine: Engine) -> None:
    spec = ConstraintSpec(tool_calls=ToolCallSpec(tools=[WEATHER], tool_choice="none"))
    out, = engine.generate([Request(messages=chat("Hello"), tools=[WEATHER], constraint=spec,
                                    params=SamplingParams(seed=3, max_new_tokens=30))])
    assert out.tool_calls == [] and out.content == out.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_generate_carries_the_same_structure(engine: Engine, anyio_backend: str) -> None:
    async_engine = AsyncEngine(engine=engine)
    try:
        spec = ConstraintSpec(tool_calls=ToolCallSpec(tools=[WEATHER], tool_choice={
            "type": "function", "function": {"name": "get_weather"}}))
        out = await async_engine.generate(Request(messages=chat("Paris?"), tools=[WEATHER], constraint=spec,
                                                  params=SamplingParams(seed=5, max_new_tokens=160)))
        assert out.finish_reason == "stop" and out.tool_calls is not None and len(out.tool_calls) == 1
        assert out.tool_calls[0].name == "get_weather"
        jsonschema.validate(out.tool_calls[0].arguments, WEATHER["function"]["parameters"])
        js = await async_engine.generate(Request(prompt="Order:", constraint=ConstraintSpec(json_schema=ORDER),
                                                 params=SamplingParams(seed=2, max_new_tokens=120)))
        assert js.json == json.loads(js.text)
    finally:
        await async_engine.aclose()


class Liar:
    """A constraint object that allows every token and declares the output complete after four:
    the engine cannot tell, so the structured check after the fact is what catches its output."""

    def __init__(self) -> None:
        self.seen = 0

    def fill_bitmask(self, bitmask) -> None:  # type: ignore[no-untyped-def]
        bitmask.fill_(-1)

    def advance(self, token_id: int) -> None:
        self.seen += 1

    def is_terminated(self) -> bool:
        return self.seen >= 4


def test_output_that_breaks_its_schema_raises_loudly(caplog: pytest.LogCaptureFixture) -> None:
    spec = ConstraintSpec(json_schema=ORDER)
    with caplog.at_level(logging.ERROR), pytest.raises(ConstraintViolationError, match="/qty"):
        structure(spec, '{"item": "pen", "qty": 0}', "stop", None)
    assert any("bug" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConstraintViolationError, match="not JSON"):
        structure(spec, '{"item": ', "stop", None)
    assert structure(spec, '{"item": ', "length", None).json is None  # cut short: nothing to check
    assert structure(spec, '{"item": "x"', "stop", "}").json is None  # a stop string cut it
    tools = ConstraintSpec(tool_calls=ToolCallSpec(tools=[WEATHER], tool_choice="required", format="hermes"))
    bad_call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "kelvin"}}\n</tool_call>'
    with pytest.raises(ConstraintViolationError, match="tool"):
        structure(tools, bad_call, "stop", None)


def test_the_engine_raises_instead_of_returning_an_invalid_value(engine: Engine) -> None:
    seq = engine.prepare(Request(prompt="x", params=SamplingParams(max_new_tokens=5, seed=0), constraint=Liar()))
    seq.spec = ConstraintSpec(json_schema=ORDER)  # what the caller believes was enforced
    engine.add_request(seq)
    while not seq.finished:
        engine.step()
    assert seq.finish_reason == "stop"
    with pytest.raises(ConstraintViolationError):
        engine.output(seq)
