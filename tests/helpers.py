"""Helpers shared by tests: tiny checkpoints written by transformers, leak checks, a toy constraint."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
            initializer_range=0.1, bos_token_id=None, eos_token_id=None, pad_token_id=None)


def hf_config(arch: str, **overrides: object):  # type: ignore[no-untyped-def]
    """A tiny transformers config of one architecture family."""
    import transformers

    kwargs = {**TINY, **overrides}
    if arch == "llama":
        kwargs.setdefault("rope_scaling", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
        kwargs.setdefault("rope_theta", 500000.0)
        return transformers.LlamaConfig(**kwargs)
    if arch == "qwen2":
        kwargs.setdefault("tie_word_embeddings", True)
        return transformers.Qwen2Config(**kwargs)
    if arch == "qwen3":
        kwargs.setdefault("head_dim", 32)  # not hidden_size / heads: exercises the explicit key
        return transformers.Qwen3Config(**kwargs)
    if arch == "mistral":
        kwargs.setdefault("sliding_window", 16)
        return transformers.MistralConfig(**kwargs)
    raise ValueError(arch)


def save_hf_model(arch: str, path: Path, *, seed: int = 0, max_shard_size: str | None = None,
                  **overrides: object):  # type: ignore[no-untyped-def]
    """Instantiate transformers' own class with seeded random weights and save_pretrained it."""
    import transformers

    torch.manual_seed(seed)
    config = hf_config(arch, **overrides)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(path, **kwargs)
    return model


def assert_no_leaks(engine) -> None:  # type: ignore[no-untyped-def]
    """Nothing is held by requests: every lock released, every slot free or owned by the cache."""
    stats = engine.stats()
    assert stats.running == 0 and stats.waiting == 0
    if engine.cache is not None:
        assert all(node.lock_ref == 0 for node in engine.cache.nodes())
        assert stats.evictable_tokens == stats.cached_tokens - stats.pinned_tokens
    assert stats.kv_free + stats.cached_tokens == stats.kv_total
    assert engine.runner.slot_table.rows_in_use == 0  # every slot-table row went back


class ForceTokens:
    """A constraint that allows exactly the given tokens, in order (a real use of the hook)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.i = ids, 0

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        bitmask.zero_()
        if self.i < len(self.ids):
            t = self.ids[self.i]
            bitmask[t // 32] = torch.tensor(1 << (t % 32), dtype=torch.int64).to(torch.int32)

    def advance(self, token_id: int) -> None:
        assert token_id == self.ids[self.i]
        self.i += 1

    def is_terminated(self) -> bool:
        return self.i == len(self.ids)
