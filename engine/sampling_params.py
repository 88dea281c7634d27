"""``SamplingParams``: how to pick tokens for one request. Plain data; no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from engine.errors import InvalidRequestError

MAX_TEMPERATURE = 1e6
"""Past this every allowed token is equally likely to within float32 rounding; much larger values
overflow float32 on the way to the sampler (inf, then NaN probabilities)."""


@dataclass
class SamplingParams:
    """How to pick tokens for one request. Validated at construction (``InvalidRequestError``)."""

    max_new_tokens: int = 128
    """Upper bound on generated tokens (>= 1). Generation also stops at the model's context."""
    temperature: float = 1.0
    """0 means greedy; otherwise logits are divided by it before truncation and the draw."""
    top_k: int = 0
    """Keep only the k most likely tokens; 0 or -1 disables."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's, in [0, 1]."""
    repetition_penalty: float = 1.0
    """HF-style: logits of tokens seen in prompt or output are divided (if > 0) or multiplied by it."""
    frequency_penalty: float = 0.0
    """OpenAI-style: subtract penalty x count of the token in the output so far, in [-2, 2]."""
    presence_penalty: float = 0.0
    """OpenAI-style: subtract penalty once if the token occurs in the output so far, in [-2, 2]."""
    seed: int | None = None
    """Same seed, same prompt, same parameters → the same random draws, whatever else shares the batch; the
    same tokens as long as the logits are the same, which a prefix-cache hit or another chunking of the
    prompt can change in the last bits (see ``engine/sampling.py``): best effort, as OpenAI's ``seed``."""
    stop: Sequence[str] = ()
    """Strings that end generation; matched across token boundaries, excluded from the text."""
    stop_token_ids: Sequence[int] = ()
    """Token ids that end generation, in addition to the model's EOS tokens."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks)."""
    include_stop_str_in_output: bool = False
    """Keep the matched stop string at the end of the text."""
    logprobs: bool = False
    """Return the log-probability of each chosen token."""
    skip_special_tokens: bool = True
    """Leave special tokens (e.g. ``<|im_end|>``) out of the detokenized text."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        self.stop_token_ids = tuple(self.stop_token_ids)
        _check(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
               "max_new_tokens", f"must be an integer >= 1, got {self.max_new_tokens!r}")
        _check(_is_number(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE,
               "temperature", f"must be a number in [0, {MAX_TEMPERATURE:g}], got {self.temperature!r}")
        _check(isinstance(self.top_k, int) and self.top_k >= -1,
               "top_k", f"must be an integer >= 1, or 0 / -1 to disable, got {self.top_k!r}")
        _check(_is_number(self.top_p) and 0 < self.top_p <= 1,
               "top_p", f"must be in (0, 1], got {self.top_p!r}")
        _check(_is_number(self.min_p) and 0 <= self.min_p <= 1,
               "min_p", f"must be in [0, 1], got {self.min_p!r}")
        _check(_is_number(self.repetition_penalty) and 0 < self.repetition_penalty < math.inf,
               "repetition_penalty", f"must be a finite number > 0, got {self.repetition_penalty!r}")
        for name in ("frequency_penalty", "presence_penalty"):
            value = getattr(self, name)
            _check(_is_number(value) and -2 <= value <= 2, name, f"must be in [-2, 2], got {value!r}")
        _check(self.seed is None or isinstance(self.seed, int), "seed",
               f"must be an integer or None, got {self.seed!r}")
        _check(all(isinstance(s, str) and s for s in self.stop), "stop",
               "must be non-empty strings")
        _check(all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids), "stop_token_ids",
               "must be non-negative integers")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def has_penalties(self) -> bool:
        return (self.repetition_penalty != 1.0 or self.frequency_penalty != 0.0
                or self.presence_penalty != 0.0)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise InvalidRequestError(message, field=field_name)
