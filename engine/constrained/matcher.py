"""Enforce a compiled constraint token by token: ``GrammarConstraint`` wraps one request's
``llguidance.LLMatcher`` (built by ``engine/constrained/compiler.py``) behind the engine's
``TokenConstraint`` protocol.

EOS and termination. The llguidance tokenizer is built with the engine's EOS ids (the tokenizer's
``eos_token_ids``, which are the engine's ``eos_token_ids``), so the mask allows EOS exactly where
the grammar may end. ``is_terminated`` is the matcher's ``is_stopped``: the grammar is complete and
admits no further token (``{...}`` closed, a choice or a fixed-length regex fully matched), or EOS
was consumed. The engine then finishes the request with ``stop`` without spending a step on EOS.
Where the grammar may end but could also go on (``[a-z]+``), the model chooses EOS or more text.

Fast-forward. ``forced_tokens`` is llguidance's ``compute_ff_tokens``: the canonical tokens of the
text the grammar forces next, cut where tokenization is still ambiguous (``{"name": `` stops before
`` "`` because `` "`` may merge with what follows). At every one of them the mask allows that token
alone, so sampling would have produced exactly these tokens: the engine appends them unsampled
(``tests/test_constrained_engine.py`` checks the property on random walks through a schema).

Threads. ``fill_bitmask`` runs on the engine's mask worker threads while the forward pass runs;
llguidance computes the mask with the GIL released. ``fill_bitmasks`` fills a whole step's rows in
one call on llguidance's own thread pool (``LLExecutor``): on an H100 host one mask of a JSON
schema over Qwen2.5's vocabulary took 214 µs, 64 of them one after the other 13.7 ms, twice the
forward pass they should hide behind. The engine never fills and advances one matcher at the same
time.

Errors. A parser limit hit mid-output (``too many expressions``), or a grammar that admits no
output at all, sets ``error``: the engine ends that request alone with ``finish_reason="error"``.
A token the mask forbade (an engine bug, logged as one) fails its request the same way.
"""

from __future__ import annotations

import logging

import llguidance
import torch

from engine.errors import EngineError
from engine.sampling import bitmask_words

__all__ = ["GrammarConstraint"]

log = logging.getLogger(__name__)

_EXECUTOR: llguidance.LLExecutor | None = None


def _executor() -> llguidance.LLExecutor:
    """One llguidance thread pool per process (its default size: the machine's cores)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = llguidance.LLExecutor()
    return _EXECUTOR


class GrammarConstraint:
    """One request's llguidance matcher, behind the engine's ``TokenConstraint`` protocol."""

    fills_whole_row = True
    """``fill_bitmask`` writes every word of the row (the engine need not preset it)."""

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer) -> None:
        self._matcher = matcher
        self._tokenizer = tokenizer
        self._words = bitmask_words(tokenizer.vocab_size)
        """Mask words llguidance fills; the model's logit rows may be wider (padded embedding)."""
        self._failed = False
        self.error: str | None = None
        """Why the matcher failed (a parser limit, a grammar that admits nothing); the engine then ends
        the request with ``finish_reason="error"``."""

    def fill_bitmask(self, bitmask: torch.Tensor) -> None:
        """Fill one int32 CPU row of ``ceil(model_vocab / 32)`` words. Bits past the tokenizer's
        vocabulary stay 0: llguidance clears them inside its last word, we zero the words after."""
        if bitmask.dtype != torch.int32 or bitmask.dim() != 1 or not bitmask.is_cpu:
            raise EngineError(f"the bitmask must be a 1-D int32 CPU row, got {bitmask.dtype} {tuple(bitmask.shape)} "
                              f"on {bitmask.device}", field="constraint")
        width = bitmask.numel()
        if width >= self._words and bitmask.is_contiguous():
            self._compute_mask_into(bitmask[: self._words])
            bitmask[self._words:] = 0
        else:  # logits narrower than the tokenizer (rare), or a strided row: go through a scratch row
            scratch = torch.empty(self._words, dtype=torch.int32)
            self._compute_mask_into(scratch)
            n = min(width, self._words)
            bitmask.zero_()
            bitmask[:n] = scratch[:n]

    @staticmethod
    def fill_bitmasks(constraints: list[GrammarConstraint], bitmask: torch.Tensor) -> None:
        """Fill row ``k`` of the int32 CPU ``bitmask`` [C, W] for ``constraints[k]``, all at once on
        llguidance's thread pool (one tokenizer's matchers; else row by row)."""
        words = constraints[0]._words
        same = all(c._words == words and c._tokenizer is constraints[0]._tokenizer for c in constraints)
        if not same or bitmask.dim() != 2 or bitmask.shape[1] < words or bitmask.dtype != torch.int32:
            for k, c in enumerate(constraints):
                c.fill_bitmask(bitmask[k])
            return
        exact = bitmask.shape[1] == words and bitmask.is_contiguous()
        target = bitmask if exact else torch.empty((len(constraints), words), dtype=torch.int32)
        _executor().unsafe_compute_mask_ptr([(c._matcher, k) for k, c in enumerate(constraints)],
                                            target.data_ptr(), words * 4, len(constraints))
        if not exact:
            bitmask[:, :words] = target
            bitmask[:, words:] = 0
        for c in constraints:
            c._note_error()

    def _compute_mask_into(self, row: torch.Tensor) -> None:
        """llguidance writes exactly ``self._words`` int32 words at ``row``'s address (a contiguous CPU row)."""
        self._matcher.unsafe_compute_mask_ptr(row.data_ptr(), self._words * 4)
        self._note_error()

    def _note_error(self) -> None:
        if self._matcher.is_error() and not self._failed:
            # A parser limit hit mid-output, or a grammar with no way on. llguidance's mask now allows
            # only EOS; the engine ends this request with an error and keeps serving the others.
            self._failed = True
            self.error = _first_line(self._matcher.get_error())
            log.warning("constrained decoding failed; ending the request with an error: %s", self.error)

    def advance(self, token_id: int) -> None:
        """Consume the sampled token. A matcher that fails while consuming it sets ``error``, which ends
        this request alone: a parser limit hit ("Too many items", say, from a recursive schema no output
        satisfies) or, were the sampler to ignore the mask, a token the grammar forbids (logged as the
        engine bug it would be). Either way the other requests of the step go on."""
        if not self._matcher.consume_token(token_id):
            if not self._failed and _PARSER_LIMIT not in self._matcher.get_error().lower():
                text = self._tokenizer.decode_str([token_id]) if 0 <= token_id < self._tokenizer.vocab_size else ""
                log.error("sampled token %d (%r) is not allowed by the grammar (the sampler did not apply the "
                          "mask?): %s", token_id, text, _first_line(self._matcher.get_error()))
            self._note_error()
            if not self._failed:  # consume failed but the matcher reports no error state: fail it ourselves
                self._failed = True
                self.error = _first_line(self._matcher.get_error())

    def forced_tokens(self) -> list[int]:
        """The tokens the grammar forces next, without consuming them (empty when the next token is
        a choice, the grammar has ended, or the matcher failed)."""
        if self._failed or self._matcher.is_stopped() or self._matcher.is_error():
            return []
        return list(self._matcher.compute_ff_tokens())

    def is_terminated(self) -> bool:
        """The grammar is complete and admits nothing more, or EOS was consumed."""
        return self._matcher.is_stopped()

    def is_accepting(self) -> bool:
        """The output so far is a complete match (the grammar may still allow more)."""
        return self._matcher.is_accepting()


_PARSER_LIMIT = "too many"
"""In llguidance's error (lowercased) when consuming a token hit a parser limit ("lexer error: too many expressions
constructed", "Too many items") rather than the token being one the mask forbade ("token ... doesn't satisfy the
grammar")."""


def _first_line(message: str) -> str:
    """llguidance errors end in a multi-line parser state dump; the first line says what happened."""
    return message.strip().splitlines()[0] if message.strip() else "unknown error"
