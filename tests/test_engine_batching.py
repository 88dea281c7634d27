"""Continuous batching must not change results: together == alone, also under memory pressure
(chunked prefill, retraction)."""

from __future__ import annotations

import pytest
import torch

from engine import Engine, Request, SamplingParams
from tests.helpers import assert_no_leaks

GREEDY = SamplingParams(temperature=0, max_new_tokens=24)


def mixed_prompts(n: int = 32, seed: int = 11) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 90, (n,), generator=g).tolist()
    return [torch.randint(0, 512, (length,), generator=g).tolist() for length in lengths]


@pytest.fixture(scope="module")
def alone(tiny_llama) -> list[list[int]]:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=4096, enable_prefix_cache=False)
    return [engine.generate([p], GREEDY)[0].token_ids for p in mixed_prompts()]


def test_batch_equals_alone(tiny_llama, alone) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=8192)
    outputs = engine.generate(mixed_prompts(), GREEDY)
    assert [o.token_ids for o in outputs] == alone
    stats = engine.stats()
    assert stats.retractions == 0
    assert_no_leaks(engine)


def test_batch_equals_alone_under_memory_pressure(tiny_llama, alone) -> None:  # type: ignore[no-untyped-def]
    """A pool of 400 slots for 32 requests needing ~2,200: prompts prefill in 16-token chunks
    beside the decodes, and the newest requests are retracted and resumed as the pool fills."""
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=400, chunk_size=16, reserve_ratio=0.0)
    outputs = engine.generate(mixed_prompts(), GREEDY)
    stats = engine.stats()
    assert stats.chunked_prefills > 0
    assert stats.retractions > 0
    assert [o.token_ids for o in outputs] == alone
    assert all(len(o.token_ids) == GREEDY.max_new_tokens for o in outputs)
    assert_no_leaks(engine)


def test_decode_steps_carry_prefill_chunks(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    """A long prompt arriving while another request decodes is prefilled in chunks inside the
    same steps as those decodes: the running request gains a token every step meanwhile."""
    path, _ = tiny_llama
    engine = Engine(str(path), max_kv_tokens=2048, chunk_size=8)
    first = engine.add_request(Request(prompt=[5, 6, 7], params=SamplingParams(temperature=0, max_new_tokens=30)))
    engine.step()  # prefill of the short prompt, first token
    second = engine.add_request(Request(prompt=list(range(100, 140)),
                                        params=SamplingParams(temperature=0, max_new_tokens=2)))
    seen = []
    for _ in range(5):  # 40 prompt tokens / chunks of 8 = 5 steps
        seen.append({d.request_id for d in engine.step()})
    assert all(first in ids for ids in seen)  # decode never paused
    assert all(second not in ids for ids in seen[:4])  # still prefilling
    assert second in seen[4]  # last chunk sampled its first token
    assert engine.stats().chunked_prefills == 1
