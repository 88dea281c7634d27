"""One request's state inside the engine. Plain data; no torch.

Tokens and KV: ``token_ids`` is prompt + output. The first ``num_computed`` of them have K/V in
the pool, at ``slots[:num_computed]``. Of those, ``slots[:num_tree]`` belong to the radix cache
(the matched prefix, locked through ``prefix_node``); the rest belong to this sequence until it
hands them to the cache on release. The last sampled token has no K/V until the next step; nor do
the tokens a grammar forced right after it (fast-forward), so a sequence past its prompt may have
several uncomputed tokens: the scheduler runs them as one chunk, like a prefill, and samples at its
end. They are output tokens all the same (``token_ids`` is the truth, computed or not), so they
survive retraction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from engine.sampling_params import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    session_id: str | None = None
    constraint: Any = None
    arrival: float = 0.0
    spec: Any = None
    """The request's ``constraint`` as given (a ``ConstraintSpec`` before compiling), for its structured result."""

    token_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    slots: list[int] = field(default_factory=list)
    num_tree: int = 0
    prefix_node: Any = None
    status: Status = Status.WAITING

    cached_tokens: int = -1
    """Prompt tokens served from the prefix cache at first admission (-1 before admission)."""
    num_chunks: int = 0
    """Prefill chunks used for the prompt at first admission (> 1 means chunked prefill)."""
    prefilled: bool = False
    """The first prefill has been scheduled to its end (later chunks are not the prompt's)."""
    num_retractions: int = 0
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    logprobs: list[float] = field(default_factory=list)
    detok: Any = None
    fast_forward: bool = False
    """Append the tokens the constraint forces instead of sampling them one per step."""
    num_reported: int = 0
    """Output tokens already sent in a ``Delta`` (0 until the first token is sampled)."""
    untexted: list[int] = field(default_factory=list)
    """Output tokens appended but not yet detokenized (overlap: their text is made next step)."""

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = list(self.prompt_ids)

    @property
    def num_prompt(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_output(self) -> int:
        return len(self.token_ids) - len(self.prompt_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_ids):]

    @property
    def num_uncomputed(self) -> int:
        """Tokens still to run through the model before the next token can be sampled."""
        return len(self.token_ids) - self.num_computed

    @property
    def in_prefill(self) -> bool:
        return self.num_uncomputed > 1

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def error(self) -> str | None:
        """Why the sequence ended with ``finish_reason="error"`` (its constraint failed), else None."""
        if self.finish_reason != "error":
            return None
        return f"the output constraint failed: {getattr(self.constraint, 'error', None) or 'unknown error'}"
