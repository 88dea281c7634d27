"""Compiling constraints: the compile cache (one compile per spec and tokenizer, a private copy per
request), compiles that run beside the engine instead of in its way, and bad input that fails at
submit with the place it went wrong. Real parts throughout: the Qwen2.5 tokenizer of the demo
model, llguidance, the demo engine."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import llguidance
import pytest
import torch

from engine import AsyncEngine, Engine, InvalidRequestError, Request, SamplingParams
from engine.constrained import ConstraintSpec, GrammarConstraint, compile_constraint
from engine.constrained.compiler import CompileCache, compile_cache
from engine.constrained.schema_check import check_schema, find_keyword, flat_metaschema_2020_12, iter_schemas
from engine.constrained.spec import ToolCallSpec
from engine.sampling import bitmask_words
from engine.tokenizer import Tokenizer
from tests.helpers import assert_no_leaks

GPT2 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tokenizers" / "gpt2"
GREEDY = SamplingParams(temperature=0, max_new_tokens=64)


@pytest.fixture(scope="module")
def demo(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=16384)


@pytest.fixture(scope="module")
def qwen(demo: Engine) -> Tokenizer:
    assert demo.tokenizer is not None
    return demo.tokenizer


def fresh(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` made unique to this call (a new cache key), its meaning unchanged."""
    return {**schema, "description": uuid.uuid4().hex}


def small_schema() -> dict[str, Any]:
    return fresh({"type": "object",
                  "properties": {"color": {"enum": ["red", "blue"]},
                                 "n": {"type": "integer", "minimum": 0, "maximum": 999}},
                  "required": ["color", "n"], "additionalProperties": False})


def mask(constraint: GrammarConstraint, tokenizer: Tokenizer) -> torch.Tensor:
    row = torch.full((bitmask_words(tokenizer.vocab_size),), -1, dtype=torch.int32)
    constraint.fill_bitmask(row)
    return row


def feed(constraint: GrammarConstraint, tokenizer: Tokenizer, text: str) -> None:
    for token in tokenizer.encode(text, add_special_tokens=False):
        constraint.advance(token)


def delta(before: Any, cache: CompileCache = compile_cache) -> tuple[int, int]:
    after = cache.stats()
    return after.hits - before.hits, after.misses - before.misses


# ---- the cache ------------------------------------------------------------------------------------

def test_a_spec_compiles_once_and_every_request_gets_its_own_matcher(qwen: Tokenizer) -> None:
    schema = small_schema()
    before = compile_cache.stats()
    a = compile_constraint(ConstraintSpec(json_schema=schema), qwen)
    b = compile_constraint(ConstraintSpec(json_schema=copy.deepcopy(schema)), qwen)  # equal, not the same dict
    assert delta(before) == (1, 1)
    start = mask(b, qwen)
    feed(a, qwen, '{"color": "red"')
    assert not torch.equal(mask(a, qwen), start)
    assert torch.equal(mask(b, qwen), start)  # advancing one copy leaves the other where it was
    c = compile_constraint(ConstraintSpec(json_schema=schema), qwen)
    assert torch.equal(mask(c, qwen), start)  # and leaves the cached matcher unadvanced
    feed(b, qwen, '{"color": "blue", "n": 7}')
    feed(a, qwen, ', "n": 5}')
    assert a.is_accepting() and b.is_accepting() and not c.is_accepting()
    assert delta(before) == (2, 1)


def test_the_key_keeps_property_order_limits_and_tokenizers_apart(demo: Engine, qwen: Tokenizer) -> None:
    tag = uuid.uuid4().hex
    ab = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"const": tag}},
          "required": ["a", "b"], "additionalProperties": False}
    ba = {**ab, "properties": dict(reversed(ab["properties"].items()))}
    before = compile_cache.stats()
    out_ab, out_ba = demo.generate([Request(prompt="JSON:", params=GREEDY, constraint=ConstraintSpec(json_schema=s))
                                    for s in (ab, ba)])
    assert delta(before) == (0, 2)  # the same schema up to key order is another grammar...
    assert out_ab.text.startswith('{"a": ') and out_ba.text.startswith('{"b": ')  # ...because order is output
    for out in (out_ab, out_ba):
        jsonschema.validate(json.loads(out.text), ab)

    before = compile_cache.stats()
    compile_constraint(ConstraintSpec(json_schema=ab), qwen, limits=llguidance.LLParserLimits(step_max_items=999))
    compile_constraint(ConstraintSpec(json_schema=ab), qwen, limits=llguidance.LLParserLimits(step_max_items=999))
    compile_constraint(ConstraintSpec(json_schema=ab), qwen)
    assert delta(before) == (2, 1)  # other limits: another matcher; equal limits: a hit

    if not GPT2.is_dir():
        pytest.skip(f"no GPT-2 tokenizer at {GPT2}")
    gpt2 = Tokenizer(GPT2)
    before = compile_cache.stats()
    size = len(compile_cache)
    other = compile_constraint(ConstraintSpec(json_schema=ab), gpt2)
    assert delta(before) == (0, 1) and len(compile_cache) == size + 1
    feed(other, gpt2, '{"a": 12, "b": ' + json.dumps(tag) + "}")  # GPT-2's token ids, accepted
    assert other.is_accepting()
    # Another Tokenizer object over the same files (a second engine, say) shares llguidance's
    # tokenizer and so the compiled matcher: a hit, no new entry.
    compile_constraint(ConstraintSpec(json_schema=ab), Tokenizer(GPT2))
    assert delta(before) == (1, 1) and len(compile_cache) == size + 1


def test_least_recently_used_entries_are_evicted(qwen: Tokenizer) -> None:
    cache = CompileCache(maxsize=2)
    a, b, c = (ConstraintSpec(regex=f"{x}[0-9]+") for x in "abc")
    for spec in (a, b, a, c, a, b):  # a b: misses; a: hit; c evicts b; a: hit; b: miss again (evicts c)
        compile_constraint(spec, qwen, cache=cache)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size, stats.maxsize) == (2, 4, 2, 2)
    never = CompileCache(maxsize=0)
    for _ in range(2):
        compile_constraint(a, qwen, cache=never)
    assert never.stats().misses == 2 and len(never) == 0
    with pytest.raises(ValueError, match="maxsize"):
        CompileCache(maxsize=-1)


def test_concurrent_requests_for_one_spec_compile_it_once(qwen: Tokenizer) -> None:
    cache = CompileCache()
    spec = ConstraintSpec(json_schema=fresh({"type": "object",
                                             "properties": {f"p{i}": {"type": "integer"} for i in range(300)}}))
    bad = ConstraintSpec(json_schema=fresh({"type": "array", "uniqueItems": True}))
    barrier = threading.Barrier(4)
    results: list[object] = []

    def submit(s: ConstraintSpec) -> None:
        barrier.wait()
        try:
            results.append(compile_constraint(s, qwen, cache=cache))
        except InvalidRequestError as e:
            results.append(e)

    def run_four(s: ConstraintSpec) -> list[object]:
        results.clear()
        threads = [threading.Thread(target=submit, args=(s,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return list(results)

    good = run_four(spec)
    assert all(isinstance(r, GrammarConstraint) for r in good) and len({id(r) for r in good}) == 4
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.size) == (3, 1, 1)  # one compile, three waited for it
    failed = run_four(bad)  # those that waited get its error; later ones compile again (failures are not kept)
    assert len({str(r) for r in failed}) == 1 and all(isinstance(r, InvalidRequestError) for r in failed)
    assert len(cache) == 1


def test_failures_are_not_cached(qwen: Tokenizer) -> None:
    spec = ConstraintSpec(json_schema=fresh({"type": "object", "properties": {"t": {"uniqueItems": True}}}))
    before, size = compile_cache.stats(), len(compile_cache)
    messages = set()
    for _ in range(2):
        with pytest.raises(InvalidRequestError) as info:
            compile_constraint(spec, qwen)
        messages.add(str(info.value))
    assert delta(before) == (0, 2) and len(compile_cache) == size and len(messages) == 1


def test_tool_call_specs_are_compiled_and_cached(qwen: Tokenizer) -> None:
    weather = {"type": "function", "function": {"name": f"weather_{uuid.uuid4().hex[:8]}", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    before = compile_cache.stats()
    for _ in range(2):
        compile_constraint(ConstraintSpec(tool_calls=ToolCallSpec(tools=[weather], tool_choice="required")), qwen)
    assert delta(before) == (1, 1)
    bad = copy.deepcopy(weather)
    bad["function"]["parameters"]["properties"]["tags"] = {"type": "array", "uniqueItems": True}
    with pytest.raises(InvalidRequestError) as info:  # toolcall.py's own error, passed through unchanged
        compile_constraint(ConstraintSpec(tool_calls=ToolCallSpec(tools=[bad])), qwen)
    assert info.value.field == "constraint.tool_calls.tools[0].function.parameters"


# ---- where a schema is wrong ----------------------------------------------------------------------

def test_schema_walk_names_keywords_not_data_or_property_names() -> None:
    schema = {
        "type": "object",
        "properties": {"uniqueItems": {"type": "string"}, "a/b~c": {"type": "array", "uniqueItems": True}},
        "enum": [{"uniqueItems": True}], "const": {"uniqueItems": True}, "default": {"not": 1},
        "$defs": {"x": {"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]}},
        "items": [{"uniqueItems": False}], "dependencies": {"a": ["b"], "c": {"not": {}}},
    }
    assert find_keyword(schema, "uniqueItems") == ["/properties/a~1b~0c", "/items/0"]
    assert find_keyword(schema, "not") == ["/$defs/x/anyOf/1", "/dependencies/c"]
    assert [p for p, _ in iter_schemas(schema)][:3] == ["", "/properties/uniqueItems", "/properties/a~1b~0c"]


def test_the_metaschema_is_the_one_the_schema_names() -> None:
    tuple_items = {"type": "array", "items": [{"type": "string"}]}  # draft 7 form, not 2020-12
    check_schema({"$schema": "http://json-schema.org/draft-07/schema#", **tuple_items}, field="f")
    with pytest.raises(InvalidRequestError, match=r"2020-12/schema\): at /items: "):
        check_schema(tuple_items, field="f")
    check_schema({"type": "string", "pattern": r"^\p{L}+$"}, field="f")  # ECMA regex Python's re rejects


def test_the_flat_2020_12_metaschema_finds_what_the_official_one_finds() -> None:
    """Differential: seeded random damage to a schema that uses most keywords; both metaschemas must
    report the same errors (instance path and message; the official one repeats some), including none."""
    from jsonschema.validators import Draft202012Validator

    flat, official = Draft202012Validator(flat_metaschema_2020_12()), Draft202012Validator(
        Draft202012Validator.META_SCHEMA)
    base = {"type": "object", "$defs": {"d": {"enum": [1, 2]}}, "required": ["a"],
            "properties": {"a": {"type": "string", "minLength": 2, "pattern": "^x", "format": "email"},
                           "b": {"type": "array", "items": {"type": "integer", "minimum": 0}, "prefixItems": [{}]},
                           "c": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/d"}], "not": {"const": 3}}},
            "dependentRequired": {"a": ["b"]}, "dependencies": {"a": ["b"], "c": {"minProperties": 1}},
            "if": {"required": ["c"]}, "then": {"unevaluatedProperties": False}}
    keywords = [*sorted(Draft202012Validator.VALIDATORS), "$id", "$anchor", "$comment", "definitions", "title"]
    values: list[object] = ["x", -1, 1.5, None, True, [], {}, ["a", "a"], {"type": "objekt"}, [{"type": 1}], 0]
    rng = random.Random(7)
    errors = lambda v, s: sorted({json.dumps(list(e.absolute_path)) + e.message for e in v.iter_errors(s)})  # noqa: E731
    seen_errors = 0
    for _ in range(300):
        schema = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            nodes = [node for _, node in iter_schemas(schema)]
            rng.choice(nodes)[rng.choice(keywords)] = copy.deepcopy(rng.choice(values))
        expected = errors(official, schema)
        assert errors(flat, schema) == expected, schema
        seen_errors += bool(expected)
    assert 50 < seen_errors < 300  # both kinds of case were tried


BAD_INPUT = [
    ({"json_schema": {"type": "objekt"}}, "constraint.json_schema",
     ["at /type:", "'objekt' is not one of ['array'"]),
    ({"json_schema": {"minLength": "x"}}, "constraint.json_schema", ["at /minLength:", "'x' is not of type 'integer'"]),
    ({"json_schema": {"type": "object", "properties": {"a b/c": {"type": "array", "items": {"minItems": -1}}}}},
     "constraint.json_schema", ["at /properties/a b~1c/items/minItems:", "less than the minimum of 0"]),
    ({"json_schema": {"type": "object", "properties": {"uniqueItems": {"type": "string"},
                                                       "tags": {"type": "array", "uniqueItems": True}}}},
     "constraint.json_schema",
     ['unsupported JSON Schema keyword "uniqueItems" at /properties/tags (', 'llguidance: Unimplemented keys: ["']),
    ({"json_schema": {"$defs": {"x": {"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]}}, "$ref": "#/$defs/x"}},
     "constraint.json_schema", ['keyword "not" at /$defs/x/anyOf/1 (', "Unimplemented keys"]),
    ({"json_schema": {"type": "object", "properties": {"code": {"type": "string", "pattern": "[a-"}}}},
     "constraint.json_schema", ["invalid regex '[a-' at /properties/code/pattern: unclosed character class",
                                "(llguidance: regex parse error"]),
    ({"regex": "[A-Z"}, "constraint.regex",
     ["invalid regex '[A-Z': unclosed character class", 'llguidance: at 1(8): invalid regex "[A-Z"']),
    ({"grammar": 'start: "a" NUM\nNUM /[0-9]+/'}, "constraint.grammar",
     ["invalid Lark grammar at line 2, column 5:", "2(5): Expected token ':'"]),
]


@pytest.mark.parametrize(("kwargs", "field", "words"), BAD_INPUT,
                         ids=["type", "minLength", "nested", "keyword", "keyword-in-defs", "pattern", "regex", "lark"])
def test_bad_input_fails_at_submit_and_the_engine_keeps_serving(demo: Engine, kwargs: dict[str, Any], field: str,
                                                                words: list[str]) -> None:
    engine = AsyncEngine(engine=demo)
    schema = small_schema()

    async def main() -> None:
        with pytest.raises(InvalidRequestError) as info:
            await engine.generate(Request(prompt="Hi", params=GREEDY, constraint=ConstraintSpec(**kwargs)))
        assert type(info.value) is InvalidRequestError and info.value.field == field
        message = str(info.value)
        assert message.startswith(field + ": ") and all(w in message for w in words), message
        assert "/properties/uniqueItems" not in message  # a property's name is not a keyword
        valid = Request(prompt="JSON:", params=GREEDY, constraint=ConstraintSpec(json_schema=schema))
        ok = await engine.generate(valid)
        jsonschema.validate(json.loads(ok.text), schema)
        await engine.aclose()

    anyio.run(main)
    assert_no_leaks(demo)


# ---- compiles beside the engine -------------------------------------------------------------------

def big_object(properties: int) -> dict[str, Any]:
    """A flat object of optional integer properties: llguidance's compile grows with the square of
    their number (2,000 take ~0.6 s, plus ~0.1 s for the metaschema check)."""
    return fresh({"type": "object", "properties": {f"field_{i}": {"type": "integer"} for i in range(properties)}})


def test_a_slow_compile_stalls_neither_decoding_nor_other_submits(demo: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """While a big schema compiles on a worker thread, the running request keeps getting deltas and
    requests submitted meanwhile (one plain, one with a small schema) are prepared without waiting."""
    engine = AsyncEngine(engine=demo)
    slow = Request(prompt="Big JSON:", params=SamplingParams(temperature=0, max_new_tokens=4),
                   constraint=ConstraintSpec(json_schema=big_object(2000)))
    quick = [Request(prompt="quick plain", params=SamplingParams(max_new_tokens=2)),
             Request(prompt="quick JSON:", params=SamplingParams(max_new_tokens=2),
                     constraint=ConstraintSpec(json_schema=small_schema()))]
    prepared: dict[str, tuple[float, float]] = {}  # request id -> (start, end) of Engine.prepare
    slow_started = threading.Event()
    real_prepare = demo.prepare

    def timed_prepare(request: Request) -> Any:
        start = time.monotonic()
        if request.request_id == slow.request_id:
            slow_started.set()
        try:
            return real_prepare(request)
        finally:
            prepared[request.request_id] = (start, time.monotonic())

    monkeypatch.setattr(demo, "prepare", timed_prepare)
    ticks: list[float] = []  # when each delta of the long-running request arrived
    before = compile_cache.stats()

    async def long_running(stop: anyio.Event) -> None:
        # Long enough to outlast the compile, short enough that its KV reserve leaves room for the others.
        request = Request(prompt="Keep talking", params=SamplingParams(max_new_tokens=4000, ignore_eos=True))
        async for _ in engine.stream(request):
            ticks.append(time.monotonic())
            if stop.is_set():
                break  # aborts it

    async def submit_quick_ones() -> None:
        while not slow_started.is_set():
            await anyio.sleep(0.002)
        async with anyio.create_task_group() as tg:
            for request in quick:
                tg.start_soon(engine.generate, request)

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(long_running, stop)
            while len(ticks) < 3:  # decoding
                await anyio.sleep(0.01)
            async with anyio.create_task_group() as submits:
                submits.start_soon(engine.generate, slow)
                submits.start_soon(submit_quick_ones)
            stop.set()
        await engine.aclose()

    anyio.run(main)
    assert delta(before)[1] == 2  # both schemas were compiled, not found in the cache
    slow_start, slow_end = prepared[slow.request_id]
    during = [t for t in ticks if slow_start < t < slow_end]
    assert len(during) >= 2, f"{len(during)} deltas during a {slow_end - slow_start:.2f} s compile"
    for request in quick:  # submitted after the slow compile began, prepared before it ended
        start, end = prepared[request.request_id]
        assert slow_start < start and end < slow_end, (request.prompt, start - slow_start, end - slow_end)
    assert_no_leaks(demo)


def test_compile_threads_must_be_positive(demo: Engine) -> None:
    with pytest.raises(ValueError, match="compile_threads"):
        AsyncEngine(engine=demo, compile_threads=0)
