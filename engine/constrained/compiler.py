"""Compile a ``ConstraintSpec`` with llguidance into a fresh per-request matcher.

Per engine tokenizer, one llguidance tokenizer (``llg_tokenizer``; building it takes about a
second on a 150k vocabulary, so it is cached). Per request, ``compile_constraint`` returns a
``GrammarConstraint`` (``engine/constrained/matcher.py``) around its own ``llguidance.LLMatcher``.

Compile cache. Building an ``LLMatcher`` takes ~1 ms for a small schema and up to seconds for big
ones (a 2,000-property object: ~0.6 s, plus ~0.1 s of metaschema check), while
``LLMatcher.deep_copy`` takes about a microsecond (the compiled grammar and lexer are shared, the
parser state is copied). ``CompileCache`` keeps compiled matchers that are never advanced, keyed by
the constraint's canonical JSON, the llguidance tokenizer and the parser limits, in a thread-safe LRU
(``COMPILE_CACHE_SIZE`` entries); each request gets a ``deep_copy``. Concurrent misses on one key
compile once. Failures are not cached.
Canonical JSON keeps the schema's key order: llguidance writes properties in that order, so two
schemas that differ only in order are two grammars.

Errors. Everything fails at submit, as ``InvalidRequestError`` with ``field`` naming the
constraint, and llguidance's own first line kept in the message:

- a JSON schema that is not JSON, or not valid against its metaschema (``schema_check.check_schema``:
  the JSON pointer of the offending place);
- a schema llguidance refuses (unsupported keyword, unknown format, dangling ``$ref``, bad
  ``pattern``): the keyword and the pointers of the schema objects that use it;
- a regex that does not compile: the regex and what is wrong with it;
- a Lark grammar that does not parse: line, column and llguidance's message.

Threads. Compiling releases the GIL; ``AsyncEngine`` runs it on a small pool of worker threads, so
a slow compile neither stalls the engine thread nor queues other submits behind it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import llguidance

from engine.constrained.matcher import GrammarConstraint
from engine.constrained.schema_check import check_schema, explain_llguidance_error, first_line, regex_reason
from engine.constrained.schema_patch import tighten
from engine.constrained.spec import ConstraintSpec
from engine.errors import InvalidRequestError

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

    from engine.tokenizer import Tokenizer

__all__ = ["COMPILE_CACHE_SIZE", "JSON_OPTIONS", "CompileCache", "CompileCacheStats", "compile_cache",
           "compile_constraint", "grammar_for", "llg_tokenizer"]

log = logging.getLogger(__name__)

JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""How JSON is written: ``{"a": 1, "b": [2, 3]}``, the layout models see most in training, with no
free whitespace (a weak model would otherwise pad with newlines until it runs out of tokens). A
schema's own ``x-guidance`` options override these."""

COMPILE_CACHE_SIZE = 256
"""Compiled matchers the process-wide ``compile_cache`` keeps (least recently used go first)."""
SLOW_COMPILE_S = 0.1
"""Compiles slower than this are logged at INFO (the others at DEBUG)."""

_tokenizers: dict[tuple[str, tuple[int, ...]], llguidance.LLTokenizer] = {}
_tokenizers_lock = threading.Lock()

_LIMIT_NAMES = ("max_items_in_row", "initial_lexer_fuel", "step_lexer_fuel", "step_max_items", "max_lexer_states",
                "max_grammar_size", "precompute_large_lexemes", "verbose_errors")
_Key = tuple[int, str, str, tuple[object, ...] | None]
"""(id of the llguidance tokenizer, spec kind, canonical JSON or text of the spec, parser limits)."""


@dataclass(frozen=True)
class CompileCacheStats:
    hits: int
    """Lookups served without compiling (including those that waited for another thread's compile)."""
    misses: int
    """Lookups that compiled (successfully or not)."""
    size: int
    maxsize: int


@dataclass
class _Entry:
    tokenizer: llguidance.LLTokenizer
    """Held so that the ``id`` in the key stays this tokenizer's while the entry lives."""
    matcher: llguidance.LLMatcher
    """Compiled, never advanced: only ever deep-copied."""


class CompileCache:
    """A thread-safe LRU of compiled, never-advanced ``LLMatcher``s; ``matcher`` hands out copies."""

    def __init__(self, maxsize: int = COMPILE_CACHE_SIZE) -> None:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 0:
            raise ValueError(f"maxsize must be an integer >= 0 (0 disables caching), got {maxsize!r}")
        self.maxsize = maxsize
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._pending: dict[_Key, Future[llguidance.LLMatcher]] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._misses = 0

    def matcher(self, key: _Key, tokenizer: llguidance.LLTokenizer,
                build: Callable[[], llguidance.LLMatcher]) -> llguidance.LLMatcher:
        """A fresh copy of the matcher for ``key``, made by ``build`` on a miss. Threads that miss
        on a key being compiled wait for that compile (and get its error, if it fails)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.matcher.deep_copy()
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = Future()
                self._misses += 1
            else:
                self._hits += 1
        if not owner:
            return pending.result().deep_copy()
        try:
            matcher = build()
        except BaseException as e:
            with self._lock:
                del self._pending[key]
            pending.set_exception(e)
            raise
        with self._lock:
            del self._pending[key]
            if self.maxsize:
                self._entries[key] = _Entry(tokenizer, matcher)
                while len(self._entries) > self.maxsize:
                    self._entries.popitem(last=False)
        pending.set_result(matcher)
        return matcher.deep_copy()

    def clear(self) -> None:
        """Drop every entry (the counters stay)."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> CompileCacheStats:
        with self._lock:
            return CompileCacheStats(self._hits, self._misses, len(self._entries), self.maxsize)

    def __len__(self) -> int:
        return len(self._entries)


compile_cache = CompileCache()
"""The process-wide cache ``compile_constraint`` uses unless given another."""


def llg_tokenizer(tokenizer: Tokenizer) -> llguidance.LLTokenizer:
    """The llguidance tokenizer for ``tokenizer``, built on first use (thread-safe). Built once per
    tokenizer directory and EOS set in the process: it takes over a second for Qwen2.5's 151k tokens,
    most of it holding the GIL, so engines that share a tokenizer share it (and its compiles)."""
    key = (str(tokenizer.path.resolve()), tuple(tokenizer.eos_token_ids))
    with _tokenizers_lock:
        llt = _tokenizers.get(key)
        if llt is None:
            import llguidance.hf  # imports transformers, which the engine's tokenizer has loaded already

            start = time.perf_counter()
            try:
                llt = llguidance.hf.from_tokenizer(cast(Any, tokenizer.hf), eos_token=list(key[1]) or None)
            except ValueError as e:  # "Only fast tokenizers are supported"
                raise InvalidRequestError(f"constrained decoding needs a fast (Rust) tokenizer: {e}",
                                          field="constraint") from e
            log.info("built the llguidance tokenizer for %s in %.1f s (%d tokens, EOS %s)",
                     tokenizer.path, time.perf_counter() - start, llt.vocab_size, llt.eos_tokens)
            _tokenizers[key] = llt
        return llt


def grammar_for(spec: ConstraintSpec, *, chat_template: str | None = None) -> str:
    """The llguidance grammar (its JSON form) for ``spec``. Validity is checked by ``LLMatcher``.
    ``chat_template`` is read by ``tool_calls`` specs whose format is not given."""
    if spec.json_schema is not None:
        return llguidance.LLMatcher.grammar_from_json_schema(tighten(spec.json_schema), defaults=JSON_OPTIONS)
    if spec.regex is not None:
        return llguidance.LLMatcher.grammar_from_regex(spec.regex)
    if spec.choices is not None:
        # JSON string escapes are valid Lark string-literal escapes.
        return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec.choices))
    if spec.tool_calls is not None:
        # ---- tool calls: grammar, validation and its errors live in engine/constrained/toolcall.py ----
        from engine.constrained.toolcall import grammar_for_tool_calls  # imported here: toolcall imports us

        return grammar_for_tool_calls(spec.tool_calls, chat_template=chat_template)
    assert spec.grammar is not None  # ConstraintSpec guarantees exactly one field
    return llguidance.LLMatcher.grammar_from_lark(spec.grammar)


def compile_constraint(spec: ConstraintSpec, tokenizer: Tokenizer, *, limits: llguidance.LLParserLimits | None = None,
                       cache: CompileCache | None = None) -> GrammarConstraint:
    """A fresh matcher for one request: a copy of the cached compile of ``spec`` for ``tokenizer``,
    compiled now on a miss. Raises ``InvalidRequestError`` when the spec is invalid or uses something
    llguidance does not support (see the module docstring). ``limits``: llguidance's parser limits
    (its defaults when None). ``cache``: the process-wide ``compile_cache`` when None."""
    llt = llg_tokenizer(tokenizer)
    field = f"constraint.{spec.kind}"
    text = _canonical(spec, field)
    key: _Key = (id(llt), spec.kind, text, _limits_key(limits))
    cache = compile_cache if cache is None else cache
    matcher = cache.matcher(key, llt, lambda: _compile(spec, text, tokenizer, llt, limits, field))
    return GrammarConstraint(matcher, llt)


def _compile(spec: ConstraintSpec, text: str, tokenizer: Tokenizer, llt: llguidance.LLTokenizer,
             limits: llguidance.LLParserLimits | None, field: str) -> llguidance.LLMatcher:
    """Validate and compile ``spec`` (``text``: its canonical form) on a cache miss. Runs on the
    submitting thread; the llguidance part releases the GIL."""
    start = time.perf_counter()
    schema = json.loads(text) if spec.json_schema is not None else None  # plain JSON: string keys, lists
    if schema is not None:
        check_schema(schema, field=field)
    template = getattr(tokenizer.hf, "chat_template", None)
    try:
        grammar = grammar_for(spec, chat_template=template if isinstance(template, str) else None)
    except InvalidRequestError:
        raise
    except (TypeError, ValueError) as e:  # e.g. a schema that is not a JSON object
        raise InvalidRequestError(f"llguidance cannot compile it: {e}", field=field) from e
    matcher = llguidance.LLMatcher(llt, grammar, log_level=0, limits=limits)
    if matcher.is_error():
        raise InvalidRequestError(_explain(spec, schema, matcher.get_error()), field=field)
    for warning in matcher.get_grammar_warnings():
        log.warning("%s: %s", field, warning)
    elapsed = time.perf_counter() - start
    log.log(logging.INFO if elapsed >= SLOW_COMPILE_S else logging.DEBUG,
            "compiled a %s constraint in %.1f ms (%d grammar bytes)", spec.kind, elapsed * 1000, len(grammar))
    return matcher


def _explain(spec: ConstraintSpec, schema: dict[str, Any] | None, message: str) -> str:
    """What llguidance's error means for this kind of spec; its first line is always kept."""
    first = first_line(message)
    if schema is not None:
        return explain_llguidance_error(schema, message)
    if spec.regex is not None:
        return f"invalid regex {spec.regex!r}: {regex_reason(message)} (llguidance: {first})"
    if spec.grammar is not None:
        at = re.match(r"(?:at )?(\d+)\((\d+)\):", first)
        where = f" at line {at.group(1)}, column {at.group(2)}" if at else ""
        reason = regex_reason(message)
        detail = f" ({reason})" if reason != first and "regex parse error" in message else ""
        return f"invalid Lark grammar{where}: {first}{detail}"
    return f"llguidance cannot compile it: {first}"


def _canonical(spec: ConstraintSpec, field: str) -> str:
    """The cache key's text for ``spec``: JSON in the spec's own key order, or the text itself."""
    if spec.regex is not None:
        return spec.regex
    if spec.grammar is not None:
        return spec.grammar
    if spec.tool_calls is not None:
        tc = spec.tool_calls
        value: object = [tc.tools, tc.tool_choice, tc.parallel, tc.format, tc.min_calls, tc.call_limit]
    else:
        value = spec.json_schema if spec.json_schema is not None else spec.choices
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)
    except (TypeError, ValueError, RecursionError) as e:  # a set, an object, a cycle, absurd nesting
        raise InvalidRequestError(f"llguidance cannot compile it: it is not JSON ({e})", field=field) from e


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _limits_key(limits: llguidance.LLParserLimits | None) -> tuple[object, ...] | None:
    return None if limits is None else tuple(getattr(limits, name) for name in _LIMIT_NAMES)
