"""``EngineStats``: a snapshot of what the engine holds and has done (``Engine.stats()``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EngineStats:
    running: int
    waiting: int
    kv_used: int
    """Slots not free: held by running requests or by the prefix cache."""
    kv_total: int
    kv_free: int
    cached_tokens: int
    """Slots held by the prefix cache."""
    evictable_tokens: int
    pinned_tokens: int
    cached_hit_tokens: int
    """Prompt tokens served from the prefix cache, summed over admitted requests."""
    prompt_tokens: int
    generated_tokens: int
    retractions: int
    chunked_prefills: int
    steps: int
    """Forward passes run."""
    forced_tokens: int = 0
    """Output tokens appended by fast-forward (included in ``generated_tokens``)."""
