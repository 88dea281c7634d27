"""Constrained decoding inside the engine loop: grammar masks filled on worker threads while the
forward pass runs, and fast-forward of the tokens a grammar forces.

The yardstick for fast-forward is the same engine with it off: llguidance forces only tokens its
mask would allow alone, so the output must be identical token for token (greedy and seeded
sampling alike), in fewer forward steps. Both engines run the demo model (random weights, real
Qwen2.5 tokenizer, 151,936 logit rows for 151,665 tokens).
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time
from collections.abc import Sequence

import jsonschema
import pytest
import torch

from engine import Engine, Request, SamplingParams
from engine.constrained import ConstraintSpec, GrammarConstraint, compile_constraint
from engine.engine import Output
from engine.sampling import Sampler, SamplingRow, bitmask_words
from engine.sequence import Sequence as EngineSequence
from tests.helpers import ForceTokens, assert_no_leaks

log = logging.getLogger(__name__)

TRIP = {
    "type": "object",
    "properties": {
        "destination_airport_code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "departure_date_iso8601": {"type": "string", "pattern": "^2025-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9])$"},
        "number_of_passengers": {"type": "integer", "minimum": 1, "maximum": 9},
        "preferred_cabin_class": {"enum": ["economy", "premium_economy", "business", "first"]},
        "requires_wheelchair_assistance": {"type": "boolean"},
    },
    "required": ["destination_airport_code", "departure_date_iso8601", "number_of_passengers",
                 "preferred_cabin_class", "requires_wheelchair_assistance"],
    "additionalProperties": False,
}
"""A tool call's arguments: long fixed keys, short free values. In llguidance the keys are forced."""

GREEDY = SamplingParams(temperature=0, max_new_tokens=200)
SEEDED = SamplingParams(temperature=1.0, seed=7, max_new_tokens=200)


@pytest.fixture(scope="module")
def ff_on(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192)


@pytest.fixture(scope="module")
def ff_off(demo_path) -> Engine:  # type: ignore[no-untyped-def]
    return Engine("demo", max_kv_tokens=8192, fast_forward=False)


def trip(i: int, params: SamplingParams = GREEDY, spec: dict | None = None) -> Request:  # type: ignore[type-arg]
    return Request(prompt=f"Book trip number {i} as JSON:", params=params,
                   constraint=ConstraintSpec(json_schema=spec or TRIP))


def run(engine: Engine, requests: Sequence[Request]) -> tuple[list[Output], int, float]:
    """Outputs, forward steps taken, wall seconds (requests are copied: ids may repeat across engines)."""
    before = engine.stats().steps
    start = time.perf_counter()
    outs = engine.generate([Request(prompt=r.prompt, params=r.params, constraint=r.constraint) for r in requests])
    return outs, engine.stats().steps - before, time.perf_counter() - start


def same(a: Sequence[Output], b: Sequence[Output]) -> None:
    for x, y in zip(a, b, strict=True):
        assert (x.token_ids, x.text, x.finish_reason, x.stop_reason) == (y.token_ids, y.text, y.finish_reason,
                                                                         y.stop_reason)


# ---- the property fast-forward rests on -----------------------------------------------------


def allowed(constraint: GrammarConstraint, width: int) -> list[int]:
    row = torch.empty(bitmask_words(width), dtype=torch.int32)
    constraint.fill_bitmask(row)
    bits = (row.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
    return bits.flatten()[:width].nonzero().flatten().tolist()


def test_forced_tokens_are_the_only_tokens_the_mask_allows(ff_on: Engine) -> None:
    """Random walks through the schema: wherever llguidance reports forced tokens, the mask allows
    exactly the first of them, and after consuming it exactly the next, and so on. So masked
    sampling (greedy or not) picks the same canonical tokens fast-forward appends."""
    assert ff_on.tokenizer is not None
    rng = random.Random(0)
    forced_states = 0
    spec = ConstraintSpec(json_schema=TRIP)
    for _ in range(6):
        walker, history = compile_constraint(spec, ff_on.tokenizer), []
        while not walker.is_terminated():
            forced = walker.forced_tokens()
            if forced:
                forced_states += 1
                probe = compile_constraint(spec, ff_on.tokenizer)  # the walker's state, replayed
                for token in history:
                    probe.advance(token)
                for token in forced:
                    assert allowed(probe, ff_on.logit_width) == [token]
                    probe.advance(token)
            history.append(rng.choice(allowed(walker, ff_on.logit_width)))
            walker.advance(history[-1])
    assert forced_states >= 6 * 5  # each key of every walk


# ---- fast-forward: fewer steps, same output ------------------------------------------------


@pytest.mark.parametrize("params", [GREEDY, SEEDED], ids=["greedy", "seeded"])
def test_fast_forward_cuts_steps_and_keeps_the_output(ff_on: Engine, ff_off: Engine, params: SamplingParams) -> None:
    requests = [trip(i, params) for i in range(4)]
    forced_before = ff_on.stats().forced_tokens
    off, steps_off, wall_off = run(ff_off, requests)
    on, steps_on, wall_on = run(ff_on, requests)
    log.info("fast-forward off: %d steps %.2f s; on: %d steps %.2f s", steps_off, wall_off, steps_on, wall_on)
    same(off, on)
    for out in on:
        jsonschema.validate(json.loads(out.text), TRIP)
        assert out.finish_reason == "stop"
    assert steps_on <= 0.75 * steps_off  # measured: 61 → 12
    assert ff_on.stats().forced_tokens - forced_before > 4 * 5 * 4  # the five keys, several tokens each
    assert ff_off.stats().forced_tokens == 0
    assert_no_leaks(ff_on)


def test_streamed_deltas_carry_the_forced_tokens(ff_on: Engine) -> None:
    request = trip(1)
    ff_on.add_request(request)
    deltas = []
    while ff_on.has_work():
        deltas += [d for d in ff_on.step() if d.request_id == request.request_id]
    tokens = [t for d in deltas for t in d.token_ids]
    text = "".join(d.text for d in deltas)
    jsonschema.validate(json.loads(text), TRIP)
    assert ff_on.tokenizer is not None and ff_on.tokenizer.decode(tokens) == text
    assert deltas[0].token_ids[:6] == ff_on.tokenizer.encode('{"destination_airport_code":', add_special_tokens=False)
    assert max(len(d.token_ids) for d in deltas) > 5  # a forced run arrives in one delta
    assert [d.completion_tokens for d in deltas] == list(itertools.accumulate(len(d.token_ids) for d in deltas))
    assert deltas[-1].finish_reason == "stop" and all(d.finish_reason is None for d in deltas[:-1])


def test_mixed_batch_with_plain_and_custom_constraints(ff_on: Engine, ff_off: Engine) -> None:
    """Forced chunks share steps with decodes of unconstrained requests and of a constraint that
    cannot fast-forward (no ``forced_tokens``): every request gets what it gets alone."""
    assert ff_on.tokenizer is not None
    plain = SamplingParams(temperature=0, max_new_tokens=30)
    solo = ff_on.generate(["Once upon a time"], plain)[0]
    ids = ff_on.tokenizer.encode(" forced by hand, one token per step", add_special_tokens=False)
    requests = [trip(0), Request(prompt="Once upon a time", params=plain), trip(1, SEEDED),
                Request(prompt="Say:", params=GREEDY, constraint=ForceTokens(ids)), trip(2)]
    on, _, _ = run(ff_on, requests)
    requests[3] = Request(prompt="Say:", params=GREEDY, constraint=ForceTokens(ids))
    off, _, _ = run(ff_off, requests)
    same(off, on)
    assert on[1].token_ids == solo.token_ids
    assert on[3].token_ids == ids and on[3].finish_reason == "stop"
    assert_no_leaks(ff_on)


def test_stop_strings_inside_a_forced_run(ff_on: Engine, ff_off: Engine) -> None:
    reference = run(ff_off, [trip(3)])[0][0].text
    cut = reference.index('", "departure')
    stops = [
        "airport",  # inside the forced text at the very start: the request ends before any forward
        "departure_date",  # inside a later forced run
        reference[cut - 2: cut + 8],  # from sampled text into forced text
    ]
    for stop in stops:
        params = SamplingParams(temperature=0, max_new_tokens=200, stop=[stop])
        off, on = run(ff_off, [trip(3, params)])[0], run(ff_on, [trip(3, params)])[0]
        same(off, on)
        assert on[0].finish_reason == "stop" and on[0].stop_reason == stop
        assert on[0].text == reference[: reference.index(stop)]
    before = ff_on.stats().steps
    out = ff_on.generate([trip(3, SamplingParams(temperature=0, stop=["airport"]))])[0]
    assert ff_on.stats().steps == before and out.text == '{"destination_'  # no forward at all
    assert_no_leaks(ff_on)


@pytest.mark.parametrize("max_new_tokens", [1, 3, 6, 7, 12, 30])
def test_max_new_tokens_inside_a_forced_run(ff_on: Engine, ff_off: Engine, max_new_tokens: int) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=max_new_tokens)
    off, on = run(ff_off, [trip(4, params)])[0], run(ff_on, [trip(4, params)])[0]
    same(off, on)
    assert len(on[0].token_ids) == max_new_tokens and on[0].finish_reason == "length"


def test_grammar_ending_in_forced_tokens(ff_on: Engine, ff_off: Engine) -> None:
    """A single choice is forced whole (no forward at all); a grammar whose tail is forced ends with
    ``stop`` as soon as the forced tail completes it."""
    spec = ConstraintSpec(grammar='start: NUM " passengers, confirmed."\nNUM: /[1-9]/')
    for constraint in (ConstraintSpec(choices=["the only possible answer"]), spec):
        request = Request(prompt="Answer:", params=GREEDY, constraint=constraint)
        off, on = run(ff_off, [request])[0], run(ff_on, [request])[0]
        same(off, on)
        assert on[0].finish_reason == "stop"
    before = ff_on.stats().steps
    only = ff_on.generate([Request(prompt="Answer:", params=GREEDY,
                                   constraint=ConstraintSpec(choices=["the only possible answer"]))])[0]
    assert only.text == "the only possible answer" and ff_on.stats().steps == before
    assert_no_leaks(ff_on)


def test_logprobs_requests_decode_forced_tokens_one_by_one(ff_on: Engine, ff_off: Engine) -> None:
    params = SamplingParams(temperature=0, max_new_tokens=200, logprobs=True)
    forced = ff_on.stats().forced_tokens
    off, on = run(ff_off, [trip(5, params)])[0], run(ff_on, [trip(5, params)])[0]
    same(off, on)
    # a prompt prefix cached by an earlier test is computed in other chunks: the last float bits may differ
    assert on[0].logprobs is not None and on[0].logprobs == pytest.approx(off[0].logprobs, abs=1e-4)
    assert len(on[0].logprobs) == len(on[0].token_ids)
    assert ff_on.stats().forced_tokens == forced


# ---- the scheduler's view: retraction and the prefix cache ---------------------------------


def test_retraction_keeps_forced_but_uncomputed_tokens(ff_off: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool far too small for the batch (160 slots for ~830 tokens), 16-token chunks: forced runs
    wait for budget and are retracted with their forced tokens still uncomputed, then resume."""
    reference = run(ff_off, [trip(i) for i in range(12)])[0]
    engine = Engine("demo", max_kv_tokens=160, chunk_size=16, reserve_ratio=0.0)
    retracted_with_forced: list[int] = []
    retract = engine.scheduler._retract

    def spy(seq: EngineSequence, step: object) -> None:
        if seq.num_output > 0 and seq.num_uncomputed > 1:
            retracted_with_forced.append(seq.num_uncomputed)
        retract(seq, step)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.scheduler, "_retract", spy)
    outs, _, _ = run(engine, [trip(i) for i in range(12)])
    same(reference, outs)
    stats = engine.stats()
    assert stats.retractions > 0 and retracted_with_forced, stats
    assert stats.forced_tokens > 0
    assert_no_leaks(engine)


def test_prefix_cache_serves_a_repeated_constrained_request(demo_path) -> None:  # type: ignore[no-untyped-def]
    """The forced start joins the prompt's prefill and its K/V is cached with it; cached_tokens
    still counts prompt tokens only."""
    engine = Engine("demo", max_kv_tokens=8192)
    first, second = run(engine, [trip(6)])[0][0], run(engine, [trip(6)])[0][0]
    assert first.token_ids == second.token_ids
    assert first.cached_tokens == 0 and second.cached_tokens == second.prompt_tokens
    assert engine.stats().cached_hit_tokens == second.prompt_tokens
    assert_no_leaks(engine)


# ---- mask fill on worker threads -----------------------------------------------------------


def test_mask_fill_threads_do_not_change_the_output(ff_on: Engine) -> None:
    serial = Engine("demo", max_kv_tokens=8192, mask_threads=0)
    wide = Engine("demo", max_kv_tokens=8192, mask_threads=3)
    assert serial.sampler.masks.threads == 0 and wide.sampler.masks.threads == 3
    requests = [trip(i, SamplingParams(temperature=0.8, seed=i, max_new_tokens=200)) for i in range(5)]
    requests.append(Request(prompt="plain", params=SamplingParams(temperature=0, max_new_tokens=20)))
    expected = run(serial, requests)[0]
    same(expected, run(wide, requests)[0])
    same(expected, run(ff_on, requests)[0])


def test_one_call_fills_every_row_like_row_by_row(ff_on: Engine) -> None:
    """``GrammarConstraint.fill_bitmasks`` (llguidance's thread pool) against ``fill_bitmask`` per
    row: matchers at different points of a schema and a regex, a mask as wide as the logits (wider
    than the tokenizer) and one exactly as wide as the tokenizer's words."""
    tok = ff_on.tokenizer
    assert tok is not None
    specs = [ConstraintSpec(json_schema=TRIP), ConstraintSpec(regex=r"[a-z]{2,5}-[0-9]+"),
             ConstraintSpec(json_schema={"type": "array", "items": {"type": "integer"}})]
    constraints = []
    for i in range(12):
        c = compile_constraint(specs[i % 3], tok)
        for step in range(i % 5):  # walk a few tokens the mask allows, a different one per matcher
            options = allowed(c, ff_on.logit_width)
            c.advance(options[(7 * i + step) % len(options)])
        constraints.append(c)
    for width in (ff_on.logit_width, tok.vocab_size):
        words = bitmask_words(width)
        expected = torch.empty(len(constraints), words, dtype=torch.int32)
        for k, c in enumerate(constraints):
            c.fill_bitmask(expected[k])
        got = torch.full((len(constraints), words), 7, dtype=torch.int32)
        GrammarConstraint.fill_bitmasks(constraints, got)
        assert torch.equal(got, expected)


class Broken(ForceTokens):
    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        raise RuntimeError("grammar exploded")


def test_a_fill_error_on_a_worker_reaches_the_caller() -> None:
    sampler = Sampler(mask_threads=2)
    rows = [SamplingRow(GREEDY, 0), SamplingRow(GREEDY, 0, constraint=Broken([1]))]
    masks = sampler.begin_masks(rows, 64)
    with pytest.raises(RuntimeError, match="grammar exploded"):
        sampler.sample(torch.zeros(2, 64), rows, masks)


def test_masks_for_some_rows_of_the_batch() -> None:
    """Only constrained rows get a mask row; the others are untouched, with or without workers."""
    logits = torch.randn(5, 100, generator=torch.Generator().manual_seed(0))
    rows = [SamplingRow(GREEDY, 0, constraint=ForceTokens([t])) if t >= 0 else SamplingRow(GREEDY, 0)
            for t in (-1, 7, -1, 99, 40)]
    expected = logits.argmax(dim=-1).tolist()
    expected[1], expected[3], expected[4] = 7, 99, 40
    for threads in (0, 1, 2):
        sampler = Sampler(mask_threads=threads)
        fresh = [SamplingRow(r.params, 0, constraint=_copy(r.constraint)) for r in rows]
        masks = sampler.begin_masks(fresh, 100)
        assert masks is not None and masks.rows == [1, 3, 4]
        assert sampler.sample(logits.clone(), fresh, masks).token_ids == expected


def _copy(constraint: object) -> ForceTokens | None:
    return ForceTokens(constraint.ids) if isinstance(constraint, ForceTokens) else None


@pytest.mark.parametrize(("field", "value"), [("mask_threads", -1), ("mask_threads", 1.5), ("fast_forward", "yes")])
def test_config_validation(field: str, value: object) -> None:
    from engine.config import EngineConfig

    with pytest.raises(ValueError, match=field):
        EngineConfig(**{field: value})  # type: ignore[arg-type]


def test_the_highest_temperature_allowed_still_keeps_to_the_grammar(ff_on: Engine) -> None:
    """At MAX_TEMPERATURE every allowed token is about equally likely; none outside the mask may be
    drawn (a temperature that overflowed float32 gave NaN probabilities and an out-of-vocabulary id)."""
    from engine.sampling_params import MAX_TEMPERATURE

    params = SamplingParams(temperature=MAX_TEMPERATURE, seed=3, max_new_tokens=24)
    outs = ff_on.generate([Request(prompt=f"Object {i}:", params=params,
                                   constraint=ConstraintSpec(json_schema={"type": "object"})) for i in range(4)])
    vocab = len(ff_on.tokenizer.hf)
    for out in outs:
        assert all(0 <= t < vocab for t in out.token_ids)
        if out.finish_reason == "stop":
            assert isinstance(json.loads(out.text), dict)
    assert_no_leaks(ff_on)
