"""Compile a ``ConstraintSpec`` with llguidance and enforce it token by token.

Per engine tokenizer, one llguidance tokenizer (``llg_tokenizer``; building it takes about a
second on a 150k vocabulary, so it is cached). Per request, one ``GrammarConstraint`` wrapping an
``llguidance.LLMatcher``: the engine's ``TokenConstraint``.

EOS and termination. The llguidance tokenizer is built with the engine's EOS ids (the tokenizer's
``eos_token_ids``, which are the engine's ``eos_token_ids``), so the mask allows EOS exactly where
the grammar may end. ``is_terminated`` is the matcher's ``is_stopped``: the grammar is complete and
admits no further token (``{...}`` closed, a choice or a fixed-length regex fully matched), or EOS
was consumed. The engine then finishes the request with ``stop`` without spending a step on EOS.
Where the grammar may end but could also go on (``[a-z]+``), the model chooses EOS or more text.

Errors. An invalid or unsupported schema, regex or grammar fails at submit (``InvalidRequestError``
with llguidance's message). A parser limit hit mid-output ends that request with EOS and logs an
error. Sampling a token the mask forbade raises ``EngineError``: that is an engine bug.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

import llguidance
import torch

from engine.constrained.spec import ConstraintSpec
from engine.errors import EngineError, InvalidRequestError
from engine.sampling import bitmask_words

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

    from engine.tokenizer import Tokenizer

__all__ = ["JSON_OPTIONS", "GrammarConstraint", "compile_constraint", "grammar_for", "llg_tokenizer"]

log = logging.getLogger(__name__)

JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How JSON is written: ``{"a": 1, "b": [2, 3]}``, the layout models see most in training, with no
free whitespace (a weak model would otherwise pad with newlines until it runs out of tokens). A
schema's own ``x-guidance`` options override these."""

_tokenizers: WeakKeyDictionary[Tokenizer, llguidance.LLTokenizer] = WeakKeyDictionary()
_tokenizers_lock = threading.Lock()


def llg_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """The llguidance tokenizer for ``tokenizer``, built on first use (thread-safe, cached)."""
    with _tokenizers_lock:
        llt = _tokenizers.get(tokenizer)
        if llt is None:
            import llguidance.hf  # imports transformers, which the engine's tokenizer has loaded already

            eos = list(tokenizer.eos_token_ids) or None
            try:
                llt = llguidance.hf.from_tokenizer(cast(Any, tokenizer.hf), eos_token=eos)
            except ValueError as e:  # "Only fast tokenizers are supported"
                raise InvalidRequestError(f"constrained decoding needs a fast (Rust) tokenizer: {e}",
                                          field="constraint") from e
            log.info("built the llguidance tokenizer for %s (%d tokens, EOS %s)",
                     tokenizer.path, llt.vocab_size, llt.eos_tokens)
            _tokenizers[tokenizer] = llt
        return llt


def grammar_for(spec: ConstraintSpec) -> str:
    """The llguidance grammar (its JSON form) for ``spec``. Validity is checked by ``LLMatcher``."""
    if spec.json_schema is not None:
        return llguidance.LLMatcher.grammar_from_json_schema(spec.json_schema, defaults=JSON_OPTIONS)
    if spec.regex is not None:
        return llguidance.LLMatcher.grammar_from_regex(spec.regex)
    if spec.choices is not None:
        # JSON string escapes are valid Lark string-literal escapes.
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec.choices))
    assert spec.grammar is not None  # ConstraintSpec guarantees exactly one field
    return llguidance.LLMatcher.grammar_from_lark(spec.grammar)


def compile_constraint(spec: ConstraintSpec, tokenizer: Tokenizer, *,
                       limits: llguidance.LLParserLimits | None = None) -> GrammarConstraint:
    """A fresh matcher for one request. Raises ``InvalidRequestError`` (with llguidance's message)
    when the schema, regex or grammar is invalid or uses something llguidance does not support.
    ``limits``: llguidance's parser limits (its defaults when None)."""
    llt = llg_tokenizer(tokenizer)
    field = f"constraint.{spec.kind}"
    try:
        grammar = grammar_for(spec)
    except (TypeError, ValueError) as e:  # e.g. a schema that is not JSON-serializable
        raise InvalidRequestError(f"llguidance cannot compile it: {e}", field=field) from e
    matcher = llguidance.LLMatcher(llt, grammar, log_level=0, limits=limits)
    if matcher.is_error():
        raise InvalidRequestError(f"llguidance cannot compile it: {matcher.get_error().strip()}", field=field)
    for warning in matcher.get_grammar_warnings():
        log.warning("%s: %s", field, warning)
    return GrammarConstraint(matcher, llt)


class GrammarConstraint:
    """One request's llguidance matcher, behind the engine's ``TokenConstraint`` protocol."""

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer: llguidance.LLTokenizer) -> None:
        self._matcher = matcher
        self._tokenizer = tokenizer
        self._words = bitmask_words(tokenizer.vocab_size)
        """Mask words llguidance fills; the model's logit rows may be wider (padded embedding)."""
        self._failed = False

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

    def _compute_mask_into(self, row: torch.Tensor) -> None:
        """llguidance writes exactly ``self._words`` int32 words at ``row``'s address (a contiguous CPU row)."""
        self._matcher.unsafe_compute_mask_ptr(row.data_ptr(), self._words * 4)
        if self._matcher.is_error() and not self._failed:
            # A parser limit hit mid-output. llguidance's mask now allows only EOS, so the request
            # ends ("stop", output incomplete) and the engine keeps serving the others.
            self._failed = True
            log.error("constrained decoding failed; ending the request with EOS: %s",
                      _first_line(self._matcher.get_error()))

    def advance(self, token_id: int) -> None:
        """Consume the sampled token. A token the mask forbade is an engine bug, not a user error."""
        if not self._matcher.consume_token(token_id):
            text = self._tokenizer.decode_str([token_id]) if 0 <= token_id < self._tokenizer.vocab_size else ""
            raise EngineError(f"sampled token {token_id} ({text!r}) is not allowed by the grammar (the sampler "
                              f"did not apply the mask?): {_first_line(self._matcher.get_error())}",
                              field="constraint")

    def is_terminated(self) -> bool:
        """The grammar is complete and admits nothing more, or EOS was consumed."""
        return self._matcher.is_stopped()

    def is_accepting(self) -> bool:
        """The output so far is a complete match (the grammar may still allow more)."""
        return self._matcher.is_accepting()


def _first_line(message: str) -> str:
    """llguidance errors end in a multi-line parser state dump; the first line says what happened."""
    return message.strip().splitlines()[0] if message.strip() else "unknown error"
