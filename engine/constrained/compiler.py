"""Compile a ``ConstraintSpec`` with llguidance into a fresh per-request matcher.

Per engine tokenizer, one llguidance tokenizer (``llg_tokenizer``; building it takes about a
second on a 150k vocabulary, so it is cached). Per request, ``compile_constraint`` builds the
grammar and an ``llguidance.LLMatcher`` and wraps it in a ``GrammarConstraint``
(``engine/constrained/matcher.py``).

Errors. An invalid or unsupported schema, regex or grammar fails at submit (``InvalidRequestError``
with llguidance's message).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

import llguidance

from engine.constrained.matcher import GrammarConstraint
from engine.constrained.spec import ConstraintSpec
from engine.errors import InvalidRequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

    from engine.tokenizer import Tokenizer

__all__ = ["JSON_OPTIONS", "compile_constraint", "grammar_for", "llg_tokenizer"]

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
