"""LocalEngine on the real demo engine: streaming, usage, sessions, abort, seeds, errors, constraints."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import anyio
import jsonschema
import pytest

from agentflow.llm import (
    Constraint,
    LLMError,
    LLMRequest,
    LLMResult,
    LocalEngine,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallRequest,
    generate,
)
from engine import AsyncEngine, Engine, InvalidRequestError
from tests.helpers import assert_no_leaks

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def demo_engine(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192)


@pytest.fixture(scope="module")
def llm(demo_engine: Engine) -> Iterator[LocalEngine]:
    """One engine for the module, passed in as an instance (so LocalEngine does not own it)."""
    async_engine = AsyncEngine(engine=demo_engine)
    yield LocalEngine(async_engine)
    async_engine.shutdown()


def chat(text: str, **kwargs: object) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], **kwargs)  # type: ignore[arg-type]


async def collect(llm: LocalEngine, request: LLMRequest) -> tuple[list[str], LLMResult]:
    deltas: list[str] = []
    results: list[LLMResult] = []
    async for item in llm.stream(request):
        if isinstance(item, TextDelta):
            assert not results, "a delta came after the result"
            deltas.append(item.text)
        elif isinstance(item, LLMResult):
            results.append(item)
    assert len(results) == 1
    return deltas, results[0]


async def wait_idle(engine: Engine) -> None:
    """Aborts travel through the engine thread's command queue: give it a moment."""
    with anyio.fail_after(5):
        while engine.stats().running or engine.stats().waiting:
            await anyio.sleep(0.01)
    await anyio.sleep(0.05)
    assert_no_leaks(engine)


@pytest.mark.anyio
async def test_stream_deltas_add_up_to_the_result(llm: LocalEngine) -> None:
    deltas, result = await collect(llm, chat("Tell me a story.", max_tokens=20, seed=1))
    assert deltas and all(deltas)
    assert "".join(deltas) == result.text
    assert result.finish_reason in ("stop", "length")
    assert result.prompt_tokens > 5
    assert 0 < result.completion_tokens <= 20
    assert result.finish_reason == "stop" or result.completion_tokens == 20
    assert result.tool_calls == []


@pytest.mark.anyio
async def test_raw_prompt_and_tools_in_the_template(llm: LocalEngine) -> None:
    raw = await generate(llm, LLMRequest(prompt="Once upon a time", max_tokens=4, seed=2))
    assert raw.prompt_tokens == 4  # no chat template around a raw prompt
    plain = await generate(llm, chat("Weather in Paris?", max_tokens=4, seed=2))
    with_tools = await generate(llm, chat("Weather in Paris?", max_tokens=4, seed=2, tools=TOOLS))
    assert with_tools.prompt_tokens > plain.prompt_tokens + 50  # the tool block of the system prompt
    assert with_tools.tool_calls == []  # 4 tokens are too few for a whole call


@pytest.mark.anyio
async def test_openai_style_tool_call_history_renders(llm: LocalEngine) -> None:
    """Assistant tool calls with JSON-string arguments (as the OpenAI API carries them) render like
    their object form, and a None content is accepted."""

    def history(arguments: object) -> list[dict[str, object]]:
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
        return [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'}]

    as_string = await generate(llm, LLMRequest(messages=history('{"city": "Paris"}'), tools=TOOLS, max_tokens=2))
    as_object = await generate(llm, LLMRequest(messages=history({"city": "Paris"}), tools=TOOLS, max_tokens=2))
    assert as_string.prompt_tokens == as_object.prompt_tokens


@pytest.mark.anyio
async def test_session_reuse_serves_the_shared_history_from_cache(llm: LocalEngine, demo_engine: Engine) -> None:
    session = "run-42:agent"
    history = [{"role": "system", "content": "You are session test 42, a unique system prompt."},
               {"role": "user", "content": "First question, with enough words to fill a few blocks of KV."}]
    first = await generate(llm, LLMRequest(messages=history, max_tokens=8, seed=3, session_id=session))
    history += [{"role": "assistant", "content": first.text},
                {"role": "user", "content": "And a follow-up question."}]
    second = await generate(llm, LLMRequest(messages=history, max_tokens=8, seed=3, session_id=session))
    assert first.cached_tokens < first.prompt_tokens
    assert second.prompt_tokens > first.prompt_tokens
    assert second.cached_tokens >= first.prompt_tokens
    demo_engine.close_session(session)


@pytest.mark.anyio
async def test_break_and_cancellation_abort_the_engine_request(llm: LocalEngine, demo_engine: Engine) -> None:
    request = chat("Go on forever.", max_tokens=5000, seed=4)
    async for item in llm.stream(request):  # the abandoned generator is finalized (closed) at once
        assert isinstance(item, TextDelta)
        break
    await wait_idle(demo_engine)

    stream = llm.stream(request)
    assert isinstance(await stream.__anext__(), TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    await wait_idle(demo_engine)

    seen: list[str] = []

    async def consume() -> None:
        async for item in llm.stream(request):
            if isinstance(item, TextDelta):
                seen.append(item.text)

    with anyio.move_on_after(0.5) as scope:
        await consume()
    assert scope.cancelled_caught and seen
    await wait_idle(demo_engine)


@pytest.mark.anyio
async def test_seed_makes_sampling_reproducible(llm: LocalEngine) -> None:
    a = await generate(llm, chat("Pick a word.", max_tokens=12, seed=11, temperature=1.0))
    b = await generate(llm, chat("Pick a word.", max_tokens=12, seed=11, temperature=1.0))
    c = await generate(llm, chat("Pick a word.", max_tokens=12, seed=12, temperature=1.0))
    assert a.text == b.text
    assert a.text != c.text


@pytest.mark.anyio
async def test_invalid_requests_raise_llm_error(llm: LocalEngine) -> None:
    with pytest.raises(LLMError, match="temperature") as info:
        await generate(llm, chat("hi", temperature=-1.0))
    assert isinstance(info.value.__cause__, InvalidRequestError)
    with pytest.raises(LLMError, match="max_new_tokens"):
        await generate(llm, chat("hi", max_tokens=0))
    with pytest.raises(LLMError, match="exactly one"):
        await generate(llm, LLMRequest(prompt="hi", messages=[{"role": "user", "content": "hi"}]))
    with pytest.raises(LLMError, match="chat template") as info:
        await generate(llm, LLMRequest(messages=[{"role": "user"}]))  # no content
    assert isinstance(info.value.__cause__, InvalidRequestError)


@pytest.mark.anyio
async def test_choices_constraint_yields_one_choice(llm: LocalEngine) -> None:
    pytest.importorskip("engine.constrained", reason="engine.constrained (constrained decoding) is not installed")
    choices = ("approve", "reject", "escalate")
    for seed in range(3):
        result = await generate(llm, chat("Decide.", max_tokens=16, seed=seed, constraint=Constraint(choices=choices)))
        assert result.text in choices
        assert result.finish_reason == "stop"


@pytest.mark.anyio
async def test_owned_engine_is_built_once_and_closed(demo_path) -> None:  # type: ignore[no-untyped-def]
    llm = LocalEngine("demo", max_kv_tokens=2048)
    assert await llm.stats() is None  # nothing built yet
    engines = []

    async def first_call() -> None:
        engines.append(await llm.engine())

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(first_call)
    assert len({id(e) for e in engines}) == 1
    result = await generate(llm, chat("hi", max_tokens=2))
    assert result.completion_tokens >= 1
    stats = await llm.stats()
    assert stats is not None and stats.running == 0
    await llm.aclose()
    assert engines[0]._closing
    with pytest.raises(LLMError, match="closed"):
        await generate(llm, chat("hi", max_tokens=2))


@pytest.mark.anyio
async def test_an_engine_passed_in_stays_open(llm: LocalEngine) -> None:
    borrowed = LocalEngine(await llm.engine())
    await generate(borrowed, chat("hi", max_tokens=2))
    await borrowed.aclose()
    assert (await generate(llm, chat("still there?", max_tokens=2))).completion_tokens >= 1


def test_bad_model_argument() -> None:
    with pytest.raises(TypeError, match="model must be"):
        LocalEngine(42)
    with pytest.raises(TypeError, match="engine options"):
        LocalEngine(object(), max_kv_tokens=1)


def test_public_names() -> None:
    import agentflow.llm

    expected = {"LLM", "LLMRequest", "LLMResult", "LocalEngine", "OpenAICompatible", "resolve_llm"}
    assert expected <= set(agentflow.llm.__all__)
    assert all(getattr(agentflow.llm, name, None) is not None for name in agentflow.llm.__all__)


def test_importing_agentflow_llm_needs_no_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "from agentflow.llm import LocalEngine, resolve_llm\n"
            "llm = resolve_llm('demo'); assert isinstance(llm, LocalEngine)\n"
            "print('engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip() == "False", out.stderr


BOUNDED_TOOLS = [
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


def _valid_call(call: ToolCallRequest) -> None:
    tool = next(t["function"] for t in BOUNDED_TOOLS if t["function"]["name"] == call.name)
    jsonschema.validate(call.arguments, tool["parameters"])


@pytest.mark.anyio
async def test_required_tool_calls_stream_name_first_then_arguments_and_validate(llm: LocalEngine) -> None:
    items = [item async for item in llm.stream(chat("Weather in Paris for 3 days?", tools=BOUNDED_TOOLS,
                                                    tool_choice="required", max_tokens=200, seed=5))]
    result = items[-1]
    assert isinstance(result, LLMResult) and result.finish_reason == "tool_calls", result
    assert result.tool_calls and result.text == ""
    for call in result.tool_calls:
        _valid_call(call)
    ready = [item for item in items if isinstance(item, ToolCallReady)]
    assert [r.call for r in ready] == result.tool_calls
    for index, call in enumerate(result.tool_calls):
        pieces = [d for d in items if isinstance(d, ToolCallDelta) and d.index == index]
        assert pieces[0].id == call.id and pieces[0].name == call.name  # name first, OpenAI-style
        assert json.loads("".join(p.arguments for p in pieces)) == call.arguments
        assert items.index(pieces[-1]) < items.index(ready[index])  # ready once its arguments are complete


@pytest.mark.anyio
async def test_a_named_tool_choice_gets_exactly_that_tool(llm: LocalEngine) -> None:
    choice = {"type": "function", "function": {"name": "get_time"}}
    for seed in (1, 2, 3):
        result = await generate(llm, chat("What time is it?", tools=BOUNDED_TOOLS, tool_choice=choice,
                                           max_tokens=100, seed=seed))
        assert [c.name for c in result.tool_calls] == ["get_time"], result
        _valid_call(result.tool_calls[0])


@pytest.mark.anyio
async def test_tool_choice_none_never_calls(llm: LocalEngine) -> None:
    for seed in (1, 2):
        result = await generate(llm, chat("Weather?", tools=BOUNDED_TOOLS, tool_choice="none", max_tokens=24,
                                          seed=seed))
        assert result.tool_calls == [] and "<tool_call>" not in result.text


@pytest.mark.anyio
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"tool_choice": "required"}, "tool_choice needs tools"),
    ({"tools": BOUNDED_TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
    ({"tools": BOUNDED_TOOLS, "constraint": Constraint(regex="[a-z]+")}, "cannot also carry"),
])
async def test_bad_tool_requests_are_refused_and_the_engine_keeps_serving(
        llm: LocalEngine, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(LLMError, match=message):
        await generate(llm, chat("hi", max_tokens=4, **kwargs))
    assert (await generate(llm, chat("hi", max_tokens=3, seed=1))).completion_tokens > 0
