"""The prefix cache seen from the engine: shared prefixes, LRU eviction, session pins."""

from __future__ import annotations

import time

import torch

from engine import Engine, Request, SamplingParams
from tests.helpers import assert_no_leaks

GREEDY = SamplingParams(temperature=0, max_new_tokens=8)


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_shared_prefix_is_reused(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096)
    prefix = tokens(200, 1)
    first = engine.generate([prefix + tokens(20, 2)], GREEDY)[0]
    second = engine.generate([prefix + tokens(30, 3)], GREEDY)[0]
    assert first.cached_tokens == 0
    assert second.cached_tokens >= 200
    # Reuse changes nothing in the result.
    fresh = Engine(str(path), max_kv_tokens=4096, enable_prefix_cache=False)
    assert fresh.generate([prefix + tokens(30, 3)], GREEDY)[0].token_ids == second.token_ids
    assert engine.stats().cached_hit_tokens == second.cached_tokens
    assert_no_leaks(engine)


def test_identical_prompt_still_computes_its_last_token(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096)
    ids = tokens(50, 4)
    a, b = engine.generate([ids], GREEDY)[0], engine.generate([ids], GREEDY)[0]
    assert b.cached_tokens == 49 and a.token_ids == b.token_ids


def test_eviction_takes_least_recently_used_first(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=300)
    old, recent = tokens(100, 5), tokens(100, 6)
    engine.generate([old], GREEDY)
    engine.generate([recent], GREEDY)
    engine.generate([old[:60] + tokens(5, 7)], GREEDY)  # touches the first 60 tokens of `old`
    engine.generate([recent[:60] + tokens(5, 8)], GREEDY)  # ... then of `recent`: now the freshest
    engine.generate([tokens(150, 9)], GREEDY)  # needs ~158 slots: evicts the oldest leaves first
    assert engine.cache is not None
    assert len(engine.cache.match_prefix(old).slots) <= 60  # old's tail went first
    again_recent = engine.generate([recent], GREEDY)[0]
    assert again_recent.cached_tokens >= 60  # the recently used prefix survived
    assert_no_leaks(engine)


def test_session_survives_pressure_until_closed(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=400, max_pinned_tokens=200)
    history = tokens(120, 10)
    turn1 = engine.generate([Request(prompt=history, params=GREEDY, session_id="agent-1")])[0]
    pinned = engine.stats().pinned_tokens
    assert pinned == 120 + len(turn1.token_ids) - 1  # prompt + output except the last token
    for seed in range(20, 26):  # ~6 x 160 tokens through a 400-slot pool
        engine.generate([tokens(150, seed)], GREEDY)
    assert engine.stats().pinned_tokens == pinned
    turn2_prompt = history + turn1.token_ids + tokens(10, 11)  # the tool result arrives
    turn2 = engine.generate([Request(prompt=turn2_prompt, params=GREEDY, session_id="agent-1")])[0]
    assert turn2.cached_tokens == pinned  # only the new tokens were prefilled
    # The new turn re-pinned the session; closing it makes the path evictable.
    assert engine.stats().pinned_tokens > pinned
    engine.close_session("agent-1")
    assert engine.stats().pinned_tokens == 0
    for seed in range(30, 36):
        engine.generate([tokens(150, seed)], GREEDY)
    turn3 = engine.generate([Request(prompt=turn2_prompt, params=GREEDY)])[0]
    assert turn3.cached_tokens < 50
    assert_no_leaks(engine)


def test_session_pin_expires_after_ttl(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=400, session_ttl=0.3)
    history = tokens(100, 12)
    engine.generate([Request(prompt=history, params=GREEDY, session_id="s")])
    assert engine.stats().pinned_tokens > 0
    time.sleep(0.4)
    engine.generate([tokens(5, 13)], GREEDY)  # any step expires due pins
    assert engine.stats().pinned_tokens == 0
    for seed in range(40, 46):
        engine.generate([tokens(150, seed)], GREEDY)
    assert engine.generate([history], GREEDY)[0].cached_tokens < 50


def test_pinned_tokens_are_capped_oldest_first(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=2000, max_pinned_tokens=250)
    for i in range(3):  # 3 sessions x ~107 tokens > 250: the first pin must go
        engine.generate([Request(prompt=tokens(100, 50 + i), params=GREEDY, session_id=f"s{i}")])
    assert engine.cache is not None
    assert not engine.cache.is_pinned("s0")
    assert engine.cache.is_pinned("s1") and engine.cache.is_pinned("s2")
    assert engine.stats().pinned_tokens <= 250


def test_requests_sent_together_share_a_prefix_computed_by_a_running_one(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    """Eight requests with one 120-token system prompt, queued at once, 64 prompt tokens per step:
    the first computes the prefix; the others, admitted while it still runs, reuse it."""
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096, chunk_size=64)
    prefix = tokens(120, 21)
    prompts = [prefix + tokens(10, 30 + i) for i in range(8)]
    outputs = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=40))
    assert outputs[0].cached_tokens == 0
    assert all(o.cached_tokens >= 120 for o in outputs[1:]), [o.cached_tokens for o in outputs]
    alone = Engine(str(path), max_kv_tokens=4096, enable_prefix_cache=False)
    assert [o.token_ids for o in outputs] == [o.token_ids for o in alone.generate(
        prompts, SamplingParams(temperature=0, max_new_tokens=40))]
    assert_no_leaks(engine)


def test_two_running_requests_that_computed_the_same_prefix_keep_one_copy(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    """Admitted in the same step, both compute the prefix; when the second's K/V enters the cache
    the first copy wins, the second's duplicate slots go back to the pool, and results hold."""
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096, chunk_size=512)
    prefix = tokens(100, 41)
    prompts = [prefix + tokens(5, 42), prefix + tokens(5, 43)]
    outputs = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=30))
    assert engine.stats().cached_tokens < 2 * 100 + 2 * (5 + 30)  # one copy of the prefix, not two
    alone = Engine(str(path), max_kv_tokens=4096, enable_prefix_cache=False)
    assert [o.token_ids for o in outputs] == [o.token_ids for o in alone.generate(
        prompts, SamplingParams(temperature=0, max_new_tokens=30))]
    assert_no_leaks(engine)


def test_a_request_waits_a_step_for_a_prefix_being_computed(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    """A chunk budget that would admit all eight at once: the first computes the 120-token prefix
    alone, the others are admitted a step later and reuse it (without the wait, each of them
    would compute it too)."""
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096, chunk_size=4096)
    prefix = tokens(120, 51)
    prompts = [prefix + tokens(10, 60 + i) for i in range(8)] + [tokens(50, 99)]  # the last shares nothing
    outputs = engine.generate(prompts, SamplingParams(temperature=0, max_new_tokens=12))
    assert outputs[0].cached_tokens == 0
    assert all(o.cached_tokens >= 120 for o in outputs[1:8]), [o.cached_tokens for o in outputs]
    alone = Engine(str(path), max_kv_tokens=4096, enable_prefix_cache=False)
    assert [o.token_ids for o in outputs] == [o.token_ids for o in alone.generate(
        prompts, SamplingParams(temperature=0, max_new_tokens=12))]
    assert_no_leaks(engine)
