"""Constrained decoding, first slice: a ``ConstraintSpec`` (JSON schema, regex, choices, Lark grammar)
compiled with llguidance at submit and enforced token by token on the demo model, whose random
weights produce token salad unless constrained."""

from __future__ import annotations

import json
import logging
import re

import jsonschema
import llguidance
import pytest
import torch

from engine import Engine, InvalidRequestError, Request, SamplingParams
from engine.constrained import ConstraintSpec, GrammarConstraint, compile_constraint, llg_tokenizer
from engine.sampling import bitmask_words
from tests.helpers import assert_no_leaks

SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 100},
        "name": {"type": "string", "maxLength": 12},
        "done": {"type": "boolean"},
    },
    "required": ["color", "count", "name", "done"],
    "additionalProperties": False,
}
CHOICES = ["yes", "no", "maybe later"]
CODE = "[A-Z]{3}-[0-9]{4}"

PARAMS = [SamplingParams(temperature=0, max_new_tokens=200)] + [
    SamplingParams(temperature=1.0, seed=seed, max_new_tokens=200) for seed in (1, 2, 3, 4)]
PARAM_IDS = ["greedy", "seed1", "seed2", "seed3", "seed4"]


@pytest.fixture(scope="module")
def demo(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192)


def run(engine: Engine, spec: ConstraintSpec, params: SamplingParams, prompt: str = "Answer:") -> tuple[str, str]:
    out = engine.generate([Request(prompt=prompt, params=params, constraint=spec)])[0]
    assert out.finish_reason is not None
    return out.text, out.finish_reason


@pytest.mark.parametrize("params", PARAMS, ids=PARAM_IDS)
def test_json_schema_output_parses_and_validates(demo: Engine, params: SamplingParams) -> None:
    text, reason = run(demo, ConstraintSpec(json_schema=SCHEMA), params, "Describe it as JSON:")
    jsonschema.validate(json.loads(text), SCHEMA)
    assert reason == "stop"  # the closing brace ends the grammar, well before max_new_tokens


@pytest.mark.parametrize("params", PARAMS, ids=PARAM_IDS)
def test_choices_and_regex(demo: Engine, params: SamplingParams) -> None:
    assert run(demo, ConstraintSpec(choices=CHOICES), params) in [(c, "stop") for c in CHOICES]
    text, reason = run(demo, ConstraintSpec(regex=CODE), params)
    assert re.fullmatch(CODE, text) and reason == "stop"


def test_lark_grammar_and_awkward_choices(demo: Engine) -> None:
    grammar = 'start: "x = " NUM ";"\nNUM: /[0-9]{1,3}/'
    text, reason = run(demo, ConstraintSpec(grammar=grammar), PARAMS[1])
    assert re.fullmatch(r"x = [0-9]{1,3};", text) and reason == "stop"
    awkward = ['say "hi"', "a|b", r"\d", "naïve café"]  # quotes, regex and Lark metacharacters, non-ASCII
    for params in PARAMS[:3]:
        assert run(demo, ConstraintSpec(choices=awkward), params)[0] in awkward


def test_max_new_tokens_still_ends_with_length(demo: Engine) -> None:
    out = demo.generate([Request(prompt="JSON:", params=SamplingParams(temperature=0, max_new_tokens=4),
                                 constraint=ConstraintSpec(json_schema=SCHEMA))])[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 4
    assert out.text.startswith('{"color": ')  # an incomplete prefix of a valid output
    assert_no_leaks(demo)


def test_open_grammar_ends_on_eos_or_length(demo: Engine) -> None:
    """``[a-z]+`` may end anywhere: EOS is allowed after the first letter, never before."""
    params = SamplingParams(temperature=0, max_new_tokens=8)
    out = demo.generate([Request(prompt="Word:", params=params, constraint=ConstraintSpec(regex="[a-z]+"))])[0]
    assert re.fullmatch("[a-z]+", out.text)
    assert (out.finish_reason, out.token_ids[-1] in demo.eos_token_ids) in {("length", False), ("stop", True)}


def test_unconstrained_request_in_a_constrained_batch_matches_its_solo_output(demo: Engine) -> None:
    plain = SamplingParams(temperature=0, max_new_tokens=24)
    solo = demo.generate(["Once upon a time"], plain)[0]
    spec = ConstraintSpec(json_schema=SCHEMA)  # one spec, two requests: each gets its own matcher
    batch = demo.generate([
        Request(prompt="JSON one:", params=PARAMS[0], constraint=spec),
        Request(prompt="Once upon a time", params=plain),
        Request(prompt="JSON two:", params=PARAMS[2], constraint=spec),
        Request(prompt="Code:", params=PARAMS[3], constraint=ConstraintSpec(regex=CODE)),
    ])
    assert batch[1].token_ids == solo.token_ids
    for out in (batch[0], batch[2]):
        jsonschema.validate(json.loads(out.text), SCHEMA)
    assert re.fullmatch(CODE, batch[3].text)
    assert_no_leaks(demo)


@pytest.mark.parametrize(("spec", "field", "words"), [
    (lambda: ConstraintSpec(json_schema={"type": "array", "uniqueItems": True}), "constraint.json_schema",
     "uniqueItems"),
    (lambda: ConstraintSpec(json_schema={"type": "strin"}), "constraint.json_schema", "strin"),
    (lambda: ConstraintSpec(json_schema={"type": "integer", "minimum": 5, "maximum": 1}), "constraint.json_schema",
     "minimum"),
    (lambda: ConstraintSpec(json_schema={"type": "object", "x": {1, 2}}), "constraint.json_schema", "cannot compile"),
    (lambda: ConstraintSpec(regex="[A-Z"), "constraint.regex", "unclosed character class"),
    (lambda: ConstraintSpec(regex="(?<=a)b"), "constraint.regex", "look-around"),
    (lambda: ConstraintSpec(grammar="start: missing_rule"), "constraint.grammar", "missing_rule"),
])
def test_invalid_constraints_fail_at_submit(demo: Engine, spec, field: str, words: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequestError) as info:
        demo.add_request(Request(prompt="Hi", params=PARAMS[0], constraint=spec()))
    assert info.value.field == field and words in str(info.value)
    assert not demo.has_work()  # nothing was queued


@pytest.mark.parametrize(("kwargs", "field"), [
    ({}, "constraint"),
    ({"regex": "a", "choices": ["a"]}, "constraint"),
    ({"json_schema": '{"type": "object"}'}, "constraint.json_schema"),
    ({"regex": ""}, "constraint.regex"),
    ({"choices": "yes"}, "constraint.choices"),
    ({"choices": []}, "constraint.choices"),
    ({"choices": ["a", ""]}, "constraint.choices"),
    ({"grammar": 3}, "constraint.grammar"),
])
def test_spec_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ConstraintSpec(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_spec_needs_a_tokenizer(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=256)
    with pytest.raises(InvalidRequestError) as info:
        engine.add_request(Request(prompt=[1, 2], params=PARAMS[0], constraint=ConstraintSpec(regex="a")))
    assert info.value.field == "constraint"


def test_mask_width_eos_and_tokenizer_cache(demo: Engine) -> None:
    assert demo.tokenizer is not None
    llt = llg_tokenizer(demo.tokenizer)
    assert llg_tokenizer(demo.tokenizer) is llt  # built once per engine tokenizer
    assert set(llt.eos_tokens) == demo.eos_token_ids  # llguidance allows the EOS the engine stops on
    vocab, rows = demo.tokenizer.vocab_size, demo.model.config.vocab_size
    constraint = compile_constraint(ConstraintSpec(choices=["yes"]), demo.tokenizer)
    row = torch.full((bitmask_words(rows),), -1, dtype=torch.int32)  # the sampler's row: model width
    constraint.fill_bitmask(row)
    assert allowed(row, rows) == set(demo.tokenizer.encode("yes", add_special_tokens=False)[:1])
    for token in demo.tokenizer.encode("yes", add_special_tokens=False):
        constraint.advance(token)
    assert constraint.is_terminated() and constraint.is_accepting()
    row.fill_(-1)
    constraint.fill_bitmask(row)
    assert allowed(row, rows) == demo.eos_token_ids  # the grammar ended: only EOS
    open_ended = compile_constraint(ConstraintSpec(regex="[^x]*"), demo.tokenizer)
    row.fill_(-1)
    open_ended.fill_bitmask(row)
    bits = unpack(row)
    assert bits[vocab:].sum() == 0  # nothing past the tokenizer's vocabulary, in the last word or after
    assert bits[:vocab].sum() > 100_000 and not open_ended.is_terminated()
    narrow = torch.full((4000,), -1, dtype=torch.int32)  # logits narrower than the tokenizer: a prefix
    open_ended.fill_bitmask(narrow)
    assert torch.equal(narrow, row[:4000])


def test_an_illegal_token_fails_its_request_and_is_logged_as_an_engine_bug(
        demo: Engine, caplog: pytest.LogCaptureFixture) -> None:
    assert demo.tokenizer is not None
    constraint = compile_constraint(ConstraintSpec(choices=["yes"]), demo.tokenizer)
    bad = demo.tokenizer.encode(" no", add_special_tokens=False)[0]
    with caplog.at_level(logging.ERROR, logger="engine.constrained.matcher"):
        constraint.advance(bad)  # raising here would fail every request of the engine's step
    assert constraint.error and "not allowed by the grammar" in caplog.text


def test_a_recursive_schema_no_output_satisfies_fails_alone(demo: Engine) -> None:
    # {"a": {"a": ...}} required all the way down: llguidance stops at "Too many items" mid-output
    bad = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}
    params = SamplingParams(max_new_tokens=400, temperature=0)
    outs = demo.generate([Request(prompt="JSON:", params=params, constraint=ConstraintSpec(json_schema=bad)),
                          Request(prompt="Meanwhile", params=SamplingParams(max_new_tokens=300))])
    assert outs[0].finish_reason == "error" and outs[0].error
    assert outs[1].finish_reason == "length" and len(outs[1].token_ids) == 300


def test_parser_limit_mid_output_ends_the_request_not_the_engine(demo: Engine,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    assert demo.tokenizer is not None
    tight = llguidance.LLParserLimits(step_max_items=2)
    spec = ConstraintSpec(grammar='start: WORD ("," WORD)*\nWORD: /[a-z]+/')
    constraint = compile_constraint(spec, demo.tokenizer, limits=tight)
    assert isinstance(constraint, GrammarConstraint)
    with caplog.at_level(logging.WARNING, logger="engine.constrained.matcher"):
        out = demo.generate([Request(prompt="List:", params=PARAMS[0], constraint=constraint)])[0]
    assert out.finish_reason == "error" and out.error and out.error.startswith("the output constraint failed")
    assert "constrained decoding failed" in caplog.text
    assert demo.generate(["still serving"], SamplingParams(max_new_tokens=2))[0].finish_reason == "length"


def unpack(row: torch.Tensor) -> torch.Tensor:
    """int32 words → one 0/1 entry per token id."""
    shifts = torch.arange(32, dtype=torch.int32)
    return ((row.unsqueeze(-1) >> shifts) & 1).flatten()


def allowed(row: torch.Tensor, width: int) -> set[int]:
    return set(unpack(row)[:width].nonzero().flatten().tolist())
