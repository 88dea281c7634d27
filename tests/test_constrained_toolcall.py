"""Tool calls in the model's native format: ``ToolCallSpec`` validation, the llguidance grammar walked
token by token with the real Qwen2.5 tokenizer, parsing, and streaming.

Expected outputs are not taken from the code under test: they are rendered by the model's own chat
template (what the model was trained to write), tokenized by the real tokenizer, and decoded by the
engine's detokenizer; argument positions come from ``json.JSONDecoder.raw_decode``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import pytest

from engine.constrained.compiler import llg_tokenizer
from engine.constrained.spec import ConstraintSpec, ToolCallSpec
from engine.constrained.toolcall import (
    ContentDelta,
    ToolCallArgumentsDelta,
    ToolCallComplete,
    ToolCallStart,
    ToolCallStream,
    ToolStreamEvent,
    detect_format,
    grammar_for_tool_calls,
    parse_tool_calls,
    tool_call_text,
)
from engine.errors import EngineError, InvalidRequestError
from engine.tokenizer import IncrementalDetokenizer, Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
QWEN = SHARED / "tokenizers" / "qwen2.5"
if not (QWEN / "tokenizer.json").is_file():  # the same tokenizer ships with the demo model
    QWEN = ROOT / "engine" / "assets" / "qwen2.5"
BFCL_TOOLS = SHARED / "tool-schemas" / "openai_tools.jsonl"

TOOL_CALL, END_TOOL_CALL, IM_END, NEWLINE = 151657, 151658, 151645, 198

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 10},
    }, "required": ["city", "days"]}}}
SEARCH = {"type": "function", "function": {
    "name": "search", "description": "Web search.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}
TOOLS = [WEATHER, SEARCH]
PARIS = {"city": 'Paris, "FR" é\n', "days": 3}  # quotes, non-ASCII and an escaped newline
LONDON = {"city": "London", "unit": "celsius", "days": 2}

LLAMA_STYLE_TEMPLATE = (
    # Written for these tests after Llama 3.1's format: the system prompt asks for {"name": ...,
    # "parameters": ...}, the call is the whole assistant turn, tool results come back as ipython.
    "{%- if tools %}<|start_header_id|>system<|end_header_id|>\n\nAnswer with a JSON function call in the "
    'format {"name": function name, "parameters": dictionary of argument name and its value}; built-in tools '
    "start with <|python_tag|>.<|eot_id|>{%- endif %}"
    "{%- for m in messages %}<|start_header_id|>{{ 'ipython' if m.role == 'tool' else m.role }}<|end_header_id|>\n\n"
    "{%- if m.tool_calls %}{%- set c = m.tool_calls[0].function %}"
    "{{- '{\"name\": \"' + c.name + '\", \"parameters\": ' + c.arguments | tojson + '}' }}"
    "{%- else %}{{- m.content }}{%- endif %}<|eot_id|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{%- endif %}"
)


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer(QWEN)


@pytest.fixture(scope="module")
def llt(qwen: Tokenizer) -> llguidance.LLTokenizer:
    return llg_tokenizer(qwen)


def spec(tool_choice: str | dict[str, Any] = "auto", *, tools: Sequence[dict[str, Any]] = TOOLS,
         parallel: bool = True, fmt: str = "hermes") -> ToolCallSpec:
    return ToolCallSpec(tools, tool_choice=tool_choice, parallel=parallel, format=fmt)


def named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


def render(qwen: Tokenizer, content: str, calls: Sequence[tuple[str, dict[str, Any]]], *,
           template: str | None = None, tools: Sequence[dict[str, Any]] = TOOLS) -> str:
    """The assistant turn as the chat template renders it: what the model learned to write."""
    kwargs: dict[str, Any] = {"chat_template": template} if template else {}
    user = [{"role": "user", "content": "What is the weather?"}]
    turn: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        turn["tool_calls"] = [{"type": "function", "function": {"name": n, "arguments": a}} for n, a in calls]
    prompt = qwen.hf.apply_chat_template(user, tools=list(tools), tokenize=False, add_generation_prompt=True,
                                         **kwargs)
    full = qwen.hf.apply_chat_template([*user, turn], tools=list(tools), tokenize=False, **kwargs)
    assert isinstance(prompt, str) and isinstance(full, str) and full.startswith(prompt)
    end = "<|eot_id|>" if template else "<|im_end|>"
    return full[len(prompt):full.rindex(end)]


def matcher(llt: llguidance.LLTokenizer, s: ToolCallSpec) -> llguidance.LLMatcher:
    m = llguidance.LLMatcher(llt, grammar_for_tool_calls(s), log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def walk(m: llguidance.LLMatcher, ids: Sequence[int]) -> int | None:
    """Consume ``ids`` one at a time; the position of the first token the grammar rejects, or None."""
    for k, token in enumerate(ids):
        if not m.consume_token(token):
            return k
    return None


def allowed(m: llguidance.LLMatcher, token: int) -> bool:
    mask = m.compute_bitmask()  # int32 words, little-endian: bit t % 8 of byte t // 8
    return bool(mask[token // 8] >> (token % 8) & 1)


def allowed_count(m: llguidance.LLMatcher) -> int:
    return sum(bin(b).count("1") for b in m.compute_bitmask())


# --- special tokens: what the model emits is what the grammar admits ------------------------------------

def test_tags_are_single_added_tokens_that_quoted_text_cannot_match(qwen: Tokenizer, llt: llguidance.LLTokenizer,
                                                                     ) -> None:
    ids = qwen.encode(render(qwen, "", [("search", {"query": "x"})]), add_special_tokens=False)
    assert ids[0] == TOOL_CALL and END_TOOL_CALL in ids  # the template's call, tokenized: single tag tokens
    assert llt.is_special_token(TOOL_CALL)  # llguidance: every added token is special (HF says special=false)
    quoted = llguidance.LLMatcher(llt, llguidance.LLMatcher.grammar_from_lark('start: "<tool_call>" "x"'),
                                  log_level=0)
    # The earlier failure. (llguidance 1.9.1 even *allows* 151657 in this mask, as its fast-forward tokenizes
    # the forced literal with the HF tokenizer, which matches added tokens; the engine would sample it and fail.)
    assert not quoted.consume_token(TOOL_CALL)
    m = matcher(llt, spec("required"))
    assert allowed(m, TOOL_CALL) and walk(m, ids) is None and m.is_accepting()


@pytest.mark.parametrize(("content", "calls"), [
    ("Let me check.", [("get_weather", PARIS)]),
    ("", [("get_weather", PARIS), ("search", {"query": "umbrella"}), ("get_weather", LONDON)]),
    ("Two lines\nof text <b>not a tag</b> {\"json\": 1}", [("search", {"query": "<tool_call inside a string"})]),
    ("Just text, no call. 天气很好.", []),
], ids=["text-then-call", "parallel", "awkward-text", "text-only"])
def test_auto_accepts_template_rendered_turns_token_by_token(qwen: Tokenizer, llt: llguidance.LLTokenizer,
                                                              content: str, calls: list[Any]) -> None:
    ids = qwen.encode(render(qwen, content, calls), add_special_tokens=False)
    m = matcher(llt, spec("auto"))
    assert allowed(m, TOOL_CALL)  # a call may open the turn
    first_call = ids.index(TOOL_CALL) if TOOL_CALL in ids else len(ids)
    assert walk(m, ids[:first_call]) is None
    if calls:
        assert allowed(m, TOOL_CALL)  # ... or follow the text
    assert walk(m, ids[first_call:]) is None
    assert m.is_accepting() and allowed(m, IM_END)
    if calls:  # after the calls: another call ("\n" then the tag) or end of turn, nothing else
        assert allowed(m, NEWLINE) and allowed_count(m) == 2
        assert not m.consume_token(qwen.encode("Done", add_special_tokens=False)[0])


def test_required_is_calls_only(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    m = matcher(llt, spec("required"))
    assert allowed_count(m) == 1 and allowed(m, TOOL_CALL)  # nothing but the tag token may start the turn
    assert not m.consume_token(qwen.encode("Sure", add_special_tokens=False)[0])
    ids = qwen.encode(render(qwen, "", [("get_weather", PARIS), ("search", {"query": "a"})]),
                      add_special_tokens=False)
    m = matcher(llt, spec("required"))
    assert walk(m, ids) is None and m.is_accepting()
    assert not matcher(llt, spec("required")).consume_token(IM_END)  # no empty turn either


def test_named_choice_allows_exactly_one_call_of_that_tool(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    s = spec(named("search"))
    other = qwen.encode(render(qwen, "", [("get_weather", PARIS)]), add_special_tokens=False)
    at = walk(matcher(llt, s), other)
    name_at = len(qwen.encode('<tool_call>\n{"name": "', add_special_tokens=False))
    assert at is not None and at <= name_at + 1  # rejected at the name, before any argument
    ids = qwen.encode(render(qwen, "", [("search", {"query": "a"})]), add_special_tokens=False)
    m = matcher(llt, s)
    assert walk(m, ids) is None and m.is_stopped()  # one call and the grammar is done: no second call


def test_a_tool_without_parameters_takes_no_arguments(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    # OpenAI: omitting `parameters` defines a function with an empty parameter list
    tools = [_tool("now")]
    invented = qwen.encode(render(qwen, "", [("now", {"tz": "UTC"})], tools=tools), add_special_tokens=False)
    assert walk(matcher(llt, spec(named("now"), tools=tools)), invented) is not None
    ids = qwen.encode(render(qwen, "", [("now", {})], tools=tools), add_special_tokens=False)
    m = matcher(llt, spec(named("now"), tools=tools))
    assert walk(m, ids) is None and m.is_stopped()


def test_parallel_false_stops_after_one_call(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    ids = qwen.encode(render(qwen, "Checking.", [("search", {"query": "a"}), ("search", {"query": "b"})]),
                      add_special_tokens=False)
    m = matcher(llt, spec("auto", parallel=False))
    second = ids.index(TOOL_CALL, ids.index(END_TOOL_CALL))
    assert walk(m, ids[:second - 1]) is None and m.is_stopped()
    assert walk(m, ids[second - 1:]) == 0


@pytest.mark.parametrize("choice", ["auto", "required", "named"])
def test_forced_tokens_are_the_templates_tokens(qwen: Tokenizer, llt: llguidance.LLTokenizer, choice: str) -> None:
    """What llguidance forces (its fast-forward tokens, which an engine may append unsampled) is what the
    template's tokenization has there, tag tokens included, and the matcher accepts it."""
    calls = [("get_weather", PARIS)] + ([] if choice == "named" else [("search", {"query": "x"})])
    ids = qwen.encode(render(qwen, "", calls), add_special_tokens=False)
    m = matcher(llt, spec(named("get_weather") if choice == "named" else choice))
    forced_tags = 0
    for k, token in enumerate(ids):
        forced = m.compute_ff_tokens()
        assert forced == ids[k:k + len(forced)] and m.deep_copy().consume_tokens(forced)
        forced_tags += TOOL_CALL in forced[:1]
        assert m.consume_token(token)
    assert forced_tags == len(calls) - (choice == "auto")  # in auto the first tag is the model's choice


def test_none_never_allows_a_call(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    m = matcher(llt, spec("none"))
    assert not allowed(m, TOOL_CALL) and not m.consume_token(TOOL_CALL)
    text = qwen.encode("It is sunny.\n", add_special_tokens=False)
    m = matcher(llt, spec("none"))
    assert walk(m, text) is None and not allowed(m, TOOL_CALL) and allowed(m, IM_END)
    # The tag spelled out in text (the HF tokenizer would turn "<tool_call>" into the tag token: build it in pieces).
    spelled = qwen.encode("See <", add_special_tokens=False) + qwen.encode("tool_call> here", add_special_tokens=False)
    assert TOOL_CALL not in spelled and walk(matcher(llt, spec("none")), spelled) is not None


@pytest.mark.parametrize(("arguments", "breaks_schema"), [
    ('{"city": "Paris", "days": 11}', True),  # above maximum
    ('{"city": "Paris", "unit": "kelvin", "days": 1}', True),  # not in the enum
    ('{"days": 3}', True),  # required city missing
    ('{"city": 7, "days": 3}', True),  # not a string
    ('{"city":"Paris", "days": 3}', False),  # valid, but not the JSON_OPTIONS layout
    ('{"city": "Paris",  "days": 3}', False),  # free whitespace
])
def test_arguments_breaking_the_schema_or_layout_are_rejected_midway(qwen: Tokenizer, llt: llguidance.LLTokenizer,
                                                                     arguments: str, breaks_schema: bool) -> None:
    validator = jsonschema.Draft202012Validator(WEATHER["function"]["parameters"])
    assert validator.is_valid(json.loads(arguments)) is not breaks_schema  # the premise holds
    head = qwen.encode('<tool_call>\n{"name": "get_weather", "arguments": ', add_special_tokens=False)
    body = qwen.encode(arguments + "}\n</tool_call>", add_special_tokens=False)
    m = matcher(llt, spec("required"))
    assert walk(m, head) is None
    at = walk(m, body)
    assert at is not None and at < len(body) - 2  # inside the arguments, before the token with the closing braces


# --- Llama 3.1 JSON format (plain text: checked with the Qwen tokenizer) ------------------------------

def test_detect_format(qwen: Tokenizer) -> None:
    assert isinstance(qwen.hf.chat_template, str)
    assert detect_format(qwen.hf.chat_template) == "hermes"
    assert detect_format((ROOT / "engine" / "assets" / "qwen2.5" / "chat_template.jinja").read_text()) == "hermes"
    assert detect_format(LLAMA_STYLE_TEMPLATE) == "llama3_json"
    with pytest.raises(InvalidRequestError, match="format=") as info:
        detect_format("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert info.value.field == "constraint.tool_calls.format"
    s = ToolCallSpec(TOOLS)  # format None: read off the template when compiling or parsing
    assert grammar_for_tool_calls(s, chat_template=LLAMA_STYLE_TEMPLATE) == grammar_for_tool_calls(spec(
        fmt="llama3_json"))
    with pytest.raises(InvalidRequestError, match="format="):
        grammar_for_tool_calls(s)


def test_llama3_json_grammar(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    call = render(qwen, "", [("get_weather", PARIS)], template=LLAMA_STYLE_TEMPLATE)
    assert call.startswith('{"name": "get_weather", "parameters": ')
    ids = qwen.encode(call, add_special_tokens=False)
    for choice in ("auto", "required", named("get_weather")):
        m = matcher(llt, spec(choice, fmt="llama3_json"))
        assert walk(m, ids) is None and m.is_stopped(), choice  # one call, then the turn is over
    text = qwen.encode("It is sunny in Paris.", add_special_tokens=False)
    assert walk(matcher(llt, spec("auto", fmt="llama3_json")), text) is None
    assert walk(matcher(llt, spec("none", fmt="llama3_json")), text) is None
    assert walk(matcher(llt, spec("required", fmt="llama3_json")), text) == 0
    assert walk(matcher(llt, spec(named("search"), fmt="llama3_json")), ids) is not None
    not_a_call = qwen.encode('{"weather": "sunny"}', add_special_tokens=False)
    assert walk(matcher(llt, spec("auto", fmt="llama3_json")), not_a_call) is not None
    assert walk(matcher(llt, spec("none", fmt="llama3_json")), qwen.encode(call, add_special_tokens=False)) == 0
    content, calls = parse_tool_calls(call, spec(fmt="llama3_json"))
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("get_weather", PARIS)]


# --- spec validation ---------------------------------------------------------------------------------

def _tool(name: Any = "f", parameters: Any = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


@pytest.mark.parametrize(("kwargs", "field", "words"), [
    ({"tools": [], "tool_choice": "required"}, "tool_choice", "no tools"),
    ({"tools": [], "tool_choice": named("f")}, "tool_choice", "no tools"),
    ({"tools": [_tool()], "tool_choice": named("g")}, "tool_choice", "'g'"),
    ({"tools": [_tool()], "tool_choice": "sometimes"}, "tool_choice", "sometimes"),
    ({"tools": [_tool()], "tool_choice": {"type": "function", "name": "f"}}, "tool_choice", "function"),
    ({"tools": [_tool(), _tool()]}, "tools[1]", "duplicate"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name", "name"),
    ({"tools": [_tool("")]}, "tools[0].function.name", "name"),
    ({"tools": [_tool('say "hi"')]}, "tools[0].function.name", "quotes"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]", "function"),
    ({"tools": [_tool(parameters={"type": "string"})]}, "tools[0].function.parameters", "object"),
    ({"tools": [_tool(parameters=["x"])]}, "tools[0].function.parameters", "object"),
    ({"tools": [_tool(parameters={"type": "object", "properties": {"x": {"type": "String"}}})]},
     "tools[0].function.parameters", "valid JSON Schema"),
    ({"tools": [_tool()], "format": "chatml"}, "format", "chatml"),
    ({"tools": [_tool()], "parallel": "yes"}, "parallel", "bool"),
    ({"tools": "f"}, "tools", "list"),
])
def test_spec_validation(kwargs: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ToolCallSpec(**kwargs)
    assert info.value.field == f"constraint.tool_calls.{field}" and words in str(info.value)


def test_spec_forms() -> None:
    s = ToolCallSpec([_tool("f"), _tool("g", {"type": "object", "properties": {"a": {"type": "integer"}}})])
    assert s.parameters("f") == {"type": "object", "properties": {}, "additionalProperties": False}  # no arguments
    assert (s.mode, s.callable_names, s.max_calls) == ("auto", ("f", "g"), None)
    assert ToolCallSpec(s.tools, tool_choice=named("g")).callable_names == ("g",)
    assert ToolCallSpec(s.tools, parallel=False).max_calls == 1
    assert ToolCallSpec(s.tools, tool_choice=named("f")).max_calls == 1
    assert ToolCallSpec(s.tools, tool_choice="none").callable_names == ()
    c = ConstraintSpec(tool_calls=s)
    assert c.kind == "tool_calls"
    with pytest.raises(InvalidRequestError):
        ConstraintSpec(tool_calls=s, regex="a")
    with pytest.raises(InvalidRequestError) as info:
        ConstraintSpec(tool_calls={"tools": []})  # type: ignore[arg-type]
    assert info.value.field == "constraint.tool_calls"


def test_schema_llguidance_cannot_compile_names_the_tool() -> None:
    unsatisfiable = {"type": "object", "properties": {"n": {"type": "integer", "enum": ["1", "2"]}},
                     "required": ["n"]}
    s = spec("required", tools=[SEARCH, _tool("tickets", unsatisfiable)])
    with pytest.raises(InvalidRequestError) as info:
        grammar_for_tool_calls(s)
    assert info.value.field == "constraint.tool_calls.tools[1].function.parameters"
    assert "'tickets'" in str(info.value)


# --- parsing and streaming ---------------------------------------------------------------------------

CASES = [
    ("Let me check.", [("get_weather", PARIS)]),
    ("", [("get_weather", PARIS), ("search", {"query": "a\\b \"c\" }{"}), ("get_weather", LONDON)]),
    ("Text with < and <tool and \n newlines\n", [("search", {"query": "q"})]),
    ("Only text <tool_call", []),
]


def engine_text(qwen: Tokenizer, text: str) -> tuple[list[int], str]:
    """The output's token ids (ending in EOS, as the engine stops) and the text the engine's
    detokenizer releases for them, one delta per token."""
    ids = [*qwen.encode(text, add_special_tokens=False), IM_END]
    detok = IncrementalDetokenizer(qwen, qwen.encode("<|im_start|>assistant\n", add_special_tokens=False),
                                   skip_special_tokens=True)
    return ids, "".join(detok.push(t) for t in ids) + detok.flush()


def argument_spans(text: str) -> list[tuple[int, int]]:
    """Where each call's arguments object lies in ``text``, found by JSON-decoding independently."""
    spans = []
    for match in re.finditer(r'"arguments": ', text):
        _, end = json.JSONDecoder().raw_decode(text, match.end())
        spans.append((match.end(), end))
    return spans


@pytest.mark.parametrize("case", range(len(CASES)))
def test_parse_matches_what_the_template_rendered(qwen: Tokenizer, case: int) -> None:
    content, calls = CASES[case]
    ids, text = engine_text(qwen, render(qwen, content, calls))
    assert text == qwen.decode(ids[:-1], skip_special_tokens=False)  # tags survive skip_special_tokens
    assert tool_call_text(qwen, ids) == text
    got_content, got = parse_tool_calls(text, spec())
    assert got_content == content and [(c.name, c.arguments) for c in got] == calls
    assert all(re.fullmatch("call_[0-9a-f]{24}", c.id) for c in got) and len({c.id for c in got}) == len(got)


Fed = list[tuple[int, ToolStreamEvent]]


def events_for(s: ToolCallSpec, pieces: Sequence[str]) -> Fed:
    """Feed ``pieces``; each event with the number of characters fed when it came out."""
    stream, fed, out = ToolCallStream(s), 0, []
    for piece in pieces:
        fed += len(piece)
        out += [(fed, e) for e in stream.feed(piece)]
    out += [(fed, e) for e in stream.finish()]
    return out


def check_events(events: Fed, pieces: Sequence[str], content: str, calls: Sequence[tuple[str, dict[str, Any]]],
                 ) -> None:
    text = "".join(pieces)
    just = [e for _, e in events]
    assert "".join(e.text for e in just if isinstance(e, ContentDelta)) == content
    starts = [e for e in just if isinstance(e, ToolCallStart)]
    done = [e for e in just if isinstance(e, ToolCallComplete)]
    assert [(e.index, e.name) for e in starts] == [(i, n) for i, (n, _) in enumerate(calls)]
    assert [(e.index, e.call.name, e.call.arguments, e.call.id) for e in done] == [
        (i, n, a, starts[i].id) for i, (n, a) in enumerate(calls)]
    boundaries = [sum(len(p) for p in pieces[:k + 1]) for k in range(len(pieces))]
    names_end = [m.end() for m in re.finditer(r'<tool_call>\n\{"name": "[^"]*"', text)]
    for i, end in enumerate(names_end):  # Start comes out of the feed that completes the name
        assert next(f for f, e in events if isinstance(e, ToolCallStart) and e.index == i) == min(
            b for b in boundaries if b >= end)
    for i, (begin, end) in enumerate(argument_spans(text)):
        assert "".join(e.arguments for e in just if isinstance(e, ToolCallArgumentsDelta) and e.index == i) == \
            text[begin:end]
        order = [type(e) for e in just if getattr(e, "index", None) == i]
        assert order[0] is ToolCallStart and order[-1] is ToolCallComplete
        assert set(order[1:-1]) == {ToolCallArgumentsDelta}
        # Complete comes out of the very feed that closes the arguments, not later (not at the closing tag).
        fed_at = next(f for f, e in events if isinstance(e, ToolCallComplete) and e.index == i)
        assert fed_at == min(b for b in boundaries if b >= end)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_stream_split_at_every_point(qwen: Tokenizer, case: int) -> None:
    content, calls = CASES[case]
    text = engine_text(qwen, render(qwen, content, calls))[1]
    s = spec()
    for cut in range(len(text) + 1):
        pieces = [text[:cut], text[cut:]]
        check_events(events_for(s, pieces), pieces, content, calls)
    by_char = list(text)
    check_events(events_for(s, by_char), by_char, content, calls)
    rng = random.Random(case)
    for _ in range(50):
        cuts = sorted(rng.sample(range(len(text) + 1), min(6, len(text))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        check_events(events_for(s, pieces), pieces, content, calls)


def test_stream_over_engine_deltas_and_text_holdback(qwen: Tokenizer) -> None:
    content, calls = CASES[0]
    ids = [*qwen.encode(render(qwen, content, calls), add_special_tokens=False), IM_END]
    detok = IncrementalDetokenizer(qwen, [], skip_special_tokens=True)
    deltas = [detok.push(t) for t in ids] + [detok.flush()]
    check_events(events_for(spec(), deltas), deltas, content, calls)
    stream = ToolCallStream(spec())
    assert stream.feed("Hi <tool") == [ContentDelta("Hi ")]  # held back only while it could be the tag
    assert stream.feed("box\n") == [ContentDelta("<toolbox")]
    assert stream.feed("<tool_call>\n{\"name\": \"sea") == []  # the newline before a call is not content
    assert stream.feed('rch", "arg')[0].name == "search"  # type: ignore[union-attr]
    assert stream.content == "Hi <toolbox"


@pytest.mark.parametrize(("s", "text", "words"), [
    (spec(), 'Hi\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "P", "days": 11}}\n</tool_call>',
     "schema"),
    (spec(), '<tool_call>\n{"name": "delete_all", "arguments": {}}\n</tool_call>', "delete_all"),
    (spec(), '<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>\nBye', "expected"),
    (spec("required"), 'Sure.\n<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>', "text"),
    (spec("required"), "", "no tool call"),
    (spec("none"), 'Hi\n<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>', "no tool call"),
    (spec(parallel=False), '<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>\n'
     '<tool_call>\n{"name": "search", "arguments": {"query": "b"}}\n</tool_call>', "at most 1"),
    (spec(named("search")), '<tool_call>\n{"name": "get_weather", "arguments": {"city": "P", "days": 1}}\n'
     "</tool_call>", "get_weather"),
    (spec(), '<tool_call>\n{"name": "search", "arguments": {"query": "a"', "ended inside"),
    (spec(fmt="llama3_json"), '{"name": "search", "parameters": {"query": "a"}} and more', "after"),
])
def test_parse_raises_on_what_the_grammar_forbids(s: ToolCallSpec, text: str, words: str) -> None:
    with pytest.raises(EngineError, match=words):
        parse_tool_calls(text, s)


def test_cut_off_output_keeps_complete_calls(caplog: pytest.LogCaptureFixture) -> None:
    text = ('<tool_call>\n{"name": "search", "arguments": {"query": "a"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par')
    with caplog.at_level(logging.INFO, logger="engine.constrained.toolcall"):
        content, calls = parse_tool_calls(text, spec(), complete=False)
    assert content == "" and [(c.name, c.arguments) for c in calls] == [("search", {"query": "a"})]
    assert "cut off inside tool call #1" in caplog.text


def test_tool_call_text_keeps_tags_that_are_special_tokens(qwen: Tokenizer, tmp_path: Path) -> None:
    """A tokenizer whose tags are special tokens loses them to skip_special_tokens; tool_call_text keeps them."""
    shutil.copy(QWEN / "tokenizer_config.json", tmp_path)
    data = json.loads((QWEN / "tokenizer.json").read_text())
    for token in data["added_tokens"]:
        if token["id"] in (TOOL_CALL, END_TOOL_CALL):
            token["special"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for token_id in (TOOL_CALL, END_TOOL_CALL):
        config["added_tokens_decoder"][str(token_id)]["special"] = True
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    special = Tokenizer(tmp_path)
    content, calls = CASES[0]
    text = render(qwen, content, calls)
    ids = [*special.encode(text, add_special_tokens=False), IM_END]
    assert "<tool_call>" not in special.decode(ids)  # lossy: the calls would vanish
    assert tool_call_text(special, ids) == text
    got_content, got = parse_tool_calls(tool_call_text(special, ids), spec())
    assert got_content == content and [(c.name, c.arguments) for c in got] == calls


# --- BFCL tools: every schema compiles, or is refused with an error naming the tool -------------------

def test_bfcl_tools_compile_in_a_required_grammar(qwen: Tokenizer, llt: llguidance.LLTokenizer) -> None:
    if not BFCL_TOOLS.is_file():
        pytest.skip(f"no BFCL tools at {BFCL_TOOLS}")
    rows = [json.loads(line) for line in BFCL_TOOLS.read_text().splitlines() if line.strip()]
    assert len(rows) >= 500
    refused: dict[int, InvalidRequestError] = {}
    ok: list[int] = []
    for i, row in enumerate(rows):
        try:
            ToolCallSpec([row["tool"]], tool_choice="required")
            ok.append(i)
        except InvalidRequestError as e:
            refused[i] = e
    for i, e in refused.items():  # refused at the spec: jsonschema itself says the schema is invalid
        parameters = rows[i]["tool"]["function"]["parameters"]
        with pytest.raises(jsonschema.SchemaError):
            jsonschema.validators.validator_for(parameters).check_schema(parameters)
        assert repr(rows[i]["tool"]["function"]["name"]) in str(e)
    compiled = 0
    examples = 0
    for chunk in _unique_name_chunks(rows, ok, 60):
        while chunk:
            s = spec("required", tools=[rows[i]["tool"] for i in chunk])
            try:
                m = llguidance.LLMatcher(llt, grammar_for_tool_calls(s), log_level=0)
            except InvalidRequestError as e:  # llguidance refused one schema: the error names that tool
                bad = chunk[int(re.search(r"tools\[(\d+)\]", e.field or "").group(1))]  # type: ignore[union-attr]
                assert repr(rows[bad]["tool"]["function"]["name"]) in str(e) and "Unsatisfiable" in str(e)
                refused[bad] = e
                chunk = [i for i in chunk if i != bad]
                continue
            assert not m.is_error(), m.get_error()
            compiled += len(chunk)
            examples += _walk_examples(qwen, m, s, [rows[i] for i in chunk])
            break
    assert compiled + len(refused) == len(rows)
    assert compiled >= 0.95 * len(rows) and examples >= 500


def _unique_name_chunks(rows: list[dict[str, Any]], indices: list[int], size: int) -> list[list[int]]:
    chunks: list[list[int]] = []
    for i in indices:
        name = rows[i]["tool"]["function"]["name"]
        home = next((c for c in chunks if len(c) < size and all(rows[j]["tool"]["function"]["name"] != name
                                                                 for j in c)), None)
        if home is None:
            chunks.append(home := [])
        home.append(i)
    return chunks


def _walk_examples(qwen: Tokenizer, m: llguidance.LLMatcher, s: ToolCallSpec, rows: list[dict[str, Any]]) -> int:
    """The rows' known-valid arguments, rendered by the chat template, walk the grammar and parse back."""
    walked = 0
    for row in rows:
        arguments = row.get("example_arguments")
        if arguments is None:
            continue
        function = row["tool"]["function"]
        order = list(function["parameters"].get("properties", {}))  # llguidance writes schema order
        arguments = dict(sorted(arguments.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 1e9))
        text = render(qwen, "", [(function["name"], arguments)], tools=[row["tool"]])
        m.reset()
        assert walk(m, qwen.encode(text, add_special_tokens=False)) is None, (function["name"], text, m.get_error())
        assert m.is_accepting()
        assert parse_tool_calls(text, s)[1][0].arguments == arguments
        walked += 1
    return walked


# --- end to end: the demo model (random weights) constrained by the grammar, through the engine ------

@pytest.mark.slow
def test_demo_engine_writes_parsable_calls(demo_path: Path) -> None:  # demo_path: builds the demo model
    from engine import Engine, Request, SamplingParams

    engine = Engine("demo", max_kv_tokens=4096)
    assert engine.tokenizer is not None
    bounded = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                 "unit": {"enum": ["celsius", "fahrenheit"]},
                                                 "days": {"type": "integer", "minimum": 1, "maximum": 10}},
               "required": ["city", "unit", "days"], "additionalProperties": False}
    tools = [_tool("get_weather", bounded), _tool("search", SEARCH["function"]["parameters"])]
    s = ToolCallSpec(tools, tool_choice="required", parallel=False)  # format: from the demo model's template
    grammar = grammar_for_tool_calls(s, chat_template=engine.tokenizer.hf.chat_template)
    ids = [engine.add_request(Request(messages=[{"role": "user", "content": "Weather in Paris?"}], tools=tools,
                                      params=SamplingParams(temperature=1.0, seed=seed, max_new_tokens=60),
                                      constraint=ConstraintSpec(grammar=grammar))) for seed in (1, 2)]
    streams = {rid: ToolCallStream(s, chat_template=engine.tokenizer.hf.chat_template) for rid in ids}
    events: dict[str, list[ToolStreamEvent]] = {rid: [] for rid in ids}
    texts = dict.fromkeys(ids, "")
    finished: dict[str, str] = {}
    while engine.has_work():
        for delta in engine.step():
            texts[delta.request_id] += delta.text
            events[delta.request_id] += streams[delta.request_id].feed(delta.text)
            if delta.finished:
                finished[delta.request_id] = delta.finish_reason or ""
    for rid in ids:
        complete = finished[rid] == "stop"
        events[rid] += streams[rid].finish(complete=complete)
        assert texts[rid].startswith("<tool_call>\n{\"name\": ")
        content, calls = parse_tool_calls(texts[rid], s, chat_template=engine.tokenizer.hf.chat_template,
                                          complete=complete)
        assert content == "" and calls and [c.arguments for c in calls] == [
            e.call.arguments for e in events[rid] if isinstance(e, ToolCallComplete)]
        for call in calls:
            jsonschema.validate(call.arguments, s.parameters(call.name))
