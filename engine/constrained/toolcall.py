"""Tool calls in the model's native format: the llguidance grammar that constrains them, and the
parser that turns the output back into calls, whole (``parse_tool_calls``) or streamed
(``ToolCallStream``).

Formats (``ToolCallSpec.format``; ``detect_format`` reads it off the chat template):

* ``hermes`` (Qwen2.5, Qwen3, Hermes). The template renders an assistant turn as its text, a
  newline, then each call as ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``,
  calls joined by a newline. The grammar asks for exactly that: in ``auto``, free text (never
  containing ``<tool_call>``) and then optionally calls, nothing after them but end of sequence.
* ``llama3_json`` (Llama 3.1, custom tools). The template renders a call as the whole assistant
  turn, ``{"name": "f", "parameters": {...}}``, and raises on a turn with more than one call
  ("This model only supports single tool-calls at once!"), so the model never saw parallel calls in
  this format: the grammar allows **one call at most whatever ``parallel`` says**, as writing two
  would be off-distribution and no Llama 3.1 parser splits them. In ``auto`` the output is either
  that call or text whose first non-space character is not ``{``.

Special tokens. ``<tool_call>`` and ``</tool_call>`` are single added tokens in Qwen2.5 (151657,
151658). ``llguidance.hf.from_tokenizer`` treats every added token as special, whatever HF's
``special`` flag says: the token's bytes are ``0xFF`` + its id, so no quoted string or regex in a
grammar ever matches it. A grammar spelling ``"<tool_call>"`` in quotes admits only the multi-token
spelling (``<``, ``tool``, ``_call``, ``>``) and rejects the token the model emits; worse, where that
literal is forced, llguidance 1.9.1 tokenizes it with the HF tokenizer (which does match added
tokens), so its mask allows *only* 151657, which ``consume_token`` then refuses. llguidance's Lark
names special tokens outside quotes, ``<tool_call>`` (or by id, ``<[151657]>``); the grammar uses the
name, so it holds for every tokenizer that has these tokens (one without them fails to compile).

JSON layout. Arguments follow ``compiler.JSON_OPTIONS`` (``", "`` and ``": "``, no free whitespace),
which is also what the chat templates' ``tojson`` writes, and llguidance writes object properties
in the schema's order. The text around the arguments is fixed to the template's bytes.

Parsing. The output text is what the engine's detokenizer produced; with Qwen2.5 the tags survive
``skip_special_tokens`` (their HF ``special`` flag is false). For a tokenizer whose tags are special,
decode with ``tool_call_text``. Parsing is strict: the grammar admitted the output, so anything that
does not parse, names another tool or has arguments its schema rejects is an ``EngineError`` (the
decoder let it through), never dropped silently. Only a call cut off by the token limit is dropped
(``complete=False``), with a warning.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from jsonschema.exceptions import ValidationError
from jsonschema.validators import validator_for

from engine.constrained.spec import ToolCallSpec
from engine.errors import EngineError, InvalidRequestError

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

__all__ = [
    "ContentDelta", "ToolCallArgumentsDelta", "ToolCallComplete", "ToolCallResult", "ToolCallStart", "ToolCallStream",
    "ToolStreamEvent", "detect_format", "grammar_for_tool_calls", "parse_tool_calls", "resolve_format",
    "tool_call_text",
]

log = logging.getLogger(__name__)

OPEN_TAG = "<tool_call>"
CLOSE_TAG = "</tool_call>"
_FIELD = "constraint.tool_calls"


# --- formats ---------------------------------------------------------------------------------------

def detect_format(chat_template: str) -> str:
    """The tool-call format a chat template trains its model on: ``hermes`` when it writes
    ``<tool_call>`` blocks, ``llama3_json`` for a Llama 3.1-style template (asks for ``{"name": ...,
    "parameters": ...}``, knows ``<|python_tag|>`` / the ``ipython`` role). Anything else is an
    ``InvalidRequestError``: guessing would constrain the model to a format it never learned."""
    if OPEN_TAG in chat_template:
        return "hermes"
    if '"parameters"' in chat_template and ("<|python_tag|>" in chat_template or "ipython" in chat_template):
        return "llama3_json"
    raise InvalidRequestError("cannot tell the model's tool-call format from its chat template (no <tool_call> "
                              "blocks, no Llama 3.1 JSON tool calls); pass format='hermes' or format='llama3_json'",
                              field=f"{_FIELD}.format")


def resolve_format(spec: ToolCallSpec, chat_template: str | None = None) -> str:
    """``spec.format``, or the format ``detect_format`` finds in ``chat_template`` when it is None."""
    if spec.format is not None:
        return spec.format
    if not chat_template:
        raise InvalidRequestError("no format given and no chat template to detect it from; pass format='hermes' "
                                  "or format='llama3_json'", field=f"{_FIELD}.format")
    return detect_format(chat_template)


@dataclass(frozen=True)
class _Layout:
    """The fixed text around a call's name and arguments, as the chat template renders it."""

    head: str
    """From the start of a call to the name (names contain no quote, so they are written verbatim)."""
    mid: str
    """From the name to the arguments object."""
    tail: str
    """From the arguments object to the end of the call."""
    between: str | None
    """Between two calls (None: the format makes one call at most)."""
    after_text: bool
    """A call may follow text (hermes), or only open the output (llama3_json)."""


_LAYOUTS = {
    "hermes": _Layout(head=OPEN_TAG + '\n{"name": "', mid='", "arguments": ', tail="}\n" + CLOSE_TAG,
                      between="\n", after_text=True),
    "llama3_json": _Layout(head='{"name": "', mid='", "parameters": ', tail="}", between=None, after_text=False),
}


# --- grammar ---------------------------------------------------------------------------------------

_HERMES_TEXT = "TEXT: /(?s:.+)/ & ~/(?s:.*)<tool_call>(?s:.*)/"
"""Text that never spells the tag out either: a parser (ours, or any Hermes parser) would take it for
a call. The tag *token* cannot appear in text at all: special tokens never match a regex."""
_LLAMA_TEXT = r"TEXT: /(?s:.*)/ & ~/\s*\{(?s:.*)/"
"""Text that cannot be mistaken for a JSON call (Llama parsers take output opening with ``{`` for one)."""


def grammar_for_tool_calls(spec: ToolCallSpec, *, chat_template: str | None = None) -> str:
    """The llguidance grammar for ``spec`` in the model's native format, ready for ``LLMatcher`` like
    ``compiler.grammar_for``'s result (``chat_template`` is read only when ``spec.format`` is None).

    Built from Lark with one ``%json`` sub-grammar per tool for its arguments, and the Hermes tags as
    special tokens (see the module docstring). The grammar is validated here, so a tool schema that
    llguidance cannot compile fails as an ``InvalidRequestError`` naming the tool."""
    import llguidance

    fmt = resolve_format(spec, chat_template)
    lark = _hermes_lark(spec) if fmt == "hermes" else _llama3_lark(spec)
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        _raise_for_tool(spec, messages[0] if messages else "unknown error")
    return grammar


def _hermes_lark(spec: ToolCallSpec) -> str:
    names = spec.callable_names
    if not names:  # "none", or "auto" without tools
        return "\n".join(["%llguidance {}", "start: TEXT?", _HERMES_TEXT]) + "\n"
    start = {"auto": "start: TEXT? calls?", "required": "start: calls", "named": "start: call"}[spec.mode]
    calls = "calls: call" + _more_calls(spec.min_calls, spec.max_calls)
    return "\n".join(["%llguidance {}", start, calls, _HERMES_TEXT,
                      r'call: <tool_call> "\n" fn "\n" </tool_call>', *_function_rules(spec, "arguments")]) + "\n"


def _more_calls(least: int, most: int | None) -> str:
    """The grammar after a turn's first call: between ``least - 1`` and ``most - 1`` more (no bound for None)."""
    if most == 1:
        return ""
    low = max(least - 1, 0)
    if most is None:
        return r' ("\n" call)*' if low == 0 else rf' ("\n" call){{{low},}}'
    return rf' ("\n" call){{{low},{most - 1}}}'


def _llama3_lark(spec: ToolCallSpec) -> str:
    names = spec.callable_names
    if not names:
        return "\n".join(["%llguidance {}", "start: TEXT", _LLAMA_TEXT]) + "\n"
    if spec.min_calls > 1:
        raise InvalidRequestError(f"min_calls={spec.min_calls}, but the llama3_json format makes one call at most",
                                  field=f"{_FIELD}.min_calls")
    if spec.parallel and spec.mode in ("auto", "required"):
        log.debug("llama3_json makes one tool call at most; parallel=True allows no more")
    start = "start: TEXT | fn" if spec.mode == "auto" else "start: fn"
    return "\n".join(["%llguidance {}", start, _LLAMA_TEXT, *_function_rules(spec, "parameters")]) + "\n"


def _function_rules(spec: ToolCallSpec, key: str) -> list[str]:
    """``fn``: one alternative per callable tool, its name and key fixed, its arguments a ``%json``."""
    from engine.constrained.compiler import JSON_OPTIONS  # here, not at the top: compiler may import us
    from engine.constrained.schema_patch import tighten

    names = spec.callable_names
    rules = ["fn: " + " | ".join(f"fn_{i}" for i in range(len(names)))]
    for i, name in enumerate(names):
        schema = tighten(dict(spec.parameters(name)))
        schema["x-guidance"] = {**JSON_OPTIONS, **schema.get("x-guidance", {})}  # the schema's own options win
        head = '{"name": ' + json.dumps(name, ensure_ascii=False) + f', "{key}": '
        # A JSON string literal is a valid Lark string literal.
        rules.append(f"fn_{i}: {json.dumps(head, ensure_ascii=False)} args_{i} " + '"}"')
        rules.append(f"args_{i}: %json {json.dumps(schema)}")
    return rules


def _raise_for_tool(spec: ToolCallSpec, message: str) -> None:
    """The grammar failed to compile: blame the first tool whose schema fails alone, if any."""
    import llguidance

    from engine.constrained.compiler import JSON_OPTIONS

    first_line = message.strip().splitlines()[0] if message.strip() else message
    for name in spec.callable_names:
        alone = llguidance.LLMatcher.grammar_from_json_schema(spec.parameters(name), defaults=JSON_OPTIONS)
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(alone)
        if failed:
            index = next(i for i, t in enumerate(spec.tools) if t["function"]["name"] == name)
            reason = messages[0].strip().splitlines()[0] if messages else first_line
            raise InvalidRequestError(f"tool {name!r}: llguidance cannot compile its parameters schema: {reason}",
                                      field=f"{_FIELD}.tools[{index}].function.parameters")
    raise InvalidRequestError(f"llguidance cannot compile the tool-call grammar: {first_line}", field=_FIELD)


# --- results and stream events ---------------------------------------------------------------------

@dataclass
class ToolCallResult:
    """One call the model made, its arguments parsed and validated against the tool's schema."""

    id: str
    """``call_`` + 24 hex digits (OpenAI's shape), fresh for every call."""
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ContentDelta:
    """Plain text the model wrote (before its calls)."""

    text: str


@dataclass(frozen=True)
class ToolCallStart:
    """A call began and its name is complete; arguments follow."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ToolCallArgumentsDelta:
    """A piece of the call's arguments JSON text; the pieces of one call join to the whole object."""

    index: int
    arguments: str


@dataclass(frozen=True)
class ToolCallComplete:
    """The call's arguments closed, parsed and validated: it can be dispatched now, before the turn ends."""

    index: int
    call: ToolCallResult


ToolStreamEvent: TypeAlias = ContentDelta | ToolCallStart | ToolCallArgumentsDelta | ToolCallComplete


# --- parsing ---------------------------------------------------------------------------------------

def parse_tool_calls(text: str, spec: ToolCallSpec, *, chat_template: str | None = None,
                     complete: bool = True) -> tuple[str, list[ToolCallResult]]:
    """Split finished output into ``(content, calls)``: the text before the calls (without the newline
    that separates it from the first call) and the calls, arguments validated with jsonschema.

    ``complete``: the output ended where the grammar allowed (EOS, or the grammar finished). Pass
    False when it was cut off (``finish_reason == "length"``): a call cut in half is then dropped
    with a warning instead of raising. Raises ``EngineError`` on anything the grammar forbids."""
    stream = ToolCallStream(spec, chat_template=chat_template)
    stream.feed(text)
    stream.finish(complete=complete)
    return stream.content, stream.calls


class _Codec(Protocol):
    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = ...) -> str: ...


def tool_call_text(tokenizer: _Codec, token_ids: Sequence[int]) -> str:
    """The output text with special tokens skipped except the tool-call tags, for tokenizers whose
    tags are special tokens (``skip_special_tokens`` would drop them and the calls with them). With
    Qwen2.5 this equals the engine's text. ``tokenizer``: the engine's ``Tokenizer``."""
    tags: dict[int, str] = {}
    for tag in (OPEN_TAG, CLOSE_TAG):
        ids = tokenizer.encode(tag, add_special_tokens=False)
        if len(ids) == 1:
            tags[ids[0]] = tag
    parts: list[str] = []
    run: list[int] = []
    for token in token_ids:
        if token in tags:
            parts += [tokenizer.decode(run, skip_special_tokens=True), tags[token]]
            run = []
        else:
            run.append(token)
    parts.append(tokenizer.decode(run, skip_special_tokens=True))
    return "".join(parts)


class _ObjectEnd:
    """Finds where one JSON object ends in text that arrives in pieces (aware of strings and escapes)."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def scan(self, text: str) -> int | None:
        """The index in ``text`` just past the object's closing brace, or None if it is still open."""
        for i, c in enumerate(text):
            if self._depth == 0:
                if c != "{":
                    raise EngineError(f"tool-call arguments must be a JSON object, got {text[i:i + 40]!r}",
                                      field=_FIELD)
                self._depth = 1
            elif self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == "\\":
                    self._escaped = True
                elif c == '"':
                    self._in_string = False
            elif c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            elif c in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i + 1
        return None


class ToolCallStream:
    """Turns output text, fed in deltas split anywhere (mid-tag, mid-name, mid-escape), into events:
    ``ContentDelta`` (held back only while its tail could begin a call), ``ToolCallStart`` once the
    name is complete, ``ToolCallArgumentsDelta`` pieces, and ``ToolCallComplete`` the moment a call's
    arguments close, before the model ends its turn, so the caller can dispatch the tool early.

    Pure Python (no engine, no llguidance). Raises ``EngineError`` as soon as the text departs from
    what the grammar allows; see ``parse_tool_calls`` for ``finish``'s ``complete``."""

    def __init__(self, spec: ToolCallSpec, *, chat_template: str | None = None) -> None:
        self._spec = spec
        self._layout = _LAYOUTS[resolve_format(spec, chat_template)]
        self._buf = ""
        """Text received but not yet turned into events."""
        self._state = "text"
        """text → head → name → mid → args → tail → after (→ head for the next call); plain: text only."""
        self._name = ""
        self._id = ""
        self._args = ""
        self._object_end = _ObjectEnd()
        self._validators: dict[str, Validator] = {}
        self._finished = False
        self.dropped: int | None = None
        """The index of a call the output cut off before its arguments were whole (``finish(complete=False)``)."""
        self.content = ""
        """The text emitted so far (the content before the calls)."""
        self.calls: list[ToolCallResult] = []
        """The calls completed so far, in order."""

    def feed(self, delta: str) -> list[ToolStreamEvent]:
        """Take the next piece of output text; return the events it completes."""
        if self._finished:
            raise EngineError("the tool-call stream is finished; it takes no more text", field=_FIELD)
        self._buf += delta
        events: list[ToolStreamEvent] = []
        while self._step(events):
            pass
        return events

    def finish(self, *, complete: bool = True) -> list[ToolStreamEvent]:
        """The output ended: release held-back text and check that nothing is missing."""
        self._finished = True
        events: list[ToolStreamEvent] = []
        if self._state in ("text", "plain"):
            self._emit_text(self._buf, events)
            self._buf = ""
        elif self._state != "after":
            index = len(self.calls) - 1 if self._state == "tail" else len(self.calls)
            if complete:
                raise EngineError(f"the output ended inside tool call #{index} (at {self._state}, after "
                                  f"{(self._args + self._buf)[-80:]!r})", field=_FIELD)
            kept = "kept (its arguments were complete)" if self._state == "tail" else "dropped"
            if self._state != "tail":
                self.dropped = index
            log.info("the output was cut off inside tool call #%d; the call is %s", index, kept)
        if complete and self._spec.mode in ("required", "named") and not self.calls:
            raise EngineError(f"tool_choice is {self._spec.mode} but the output makes no tool call", field=_FIELD)
        return events

    # One state step each; True when it consumed something and the loop should go on.

    def _step(self, events: list[ToolStreamEvent]) -> bool:
        state = self._state
        if state == "text":
            return self._step_text(events)
        if state == "plain":
            self._emit_text(self._buf, events)
            self._buf = ""
            return False
        if state == "head":
            return self._expect(self._layout.head, "name")
        if state == "name":
            return self._step_name(events)
        if state == "mid":
            return self._expect(self._layout.mid, "args")
        if state == "args":
            return self._step_args(events)
        if state == "tail":
            return self._expect(self._layout.tail, "after")
        return self._step_after()

    def _step_text(self, events: list[ToolStreamEvent]) -> bool:
        layout = self._layout
        if not layout.after_text:  # a call only opens the output: decided by its first character
            if not self._buf:
                return False
            self._state = "head" if self._buf.startswith(layout.head[0]) else "plain"
            return True
        at = self._buf.find(OPEN_TAG)
        if at >= 0:
            text = self._buf[:at]
            self._emit_text(text[:-1] if text.endswith("\n") else text, events)  # the newline before a call
            self._buf = self._buf[at:]
            self._state = "head"
            return True
        held = _pending_prefix(self._buf, ("\n" + OPEN_TAG, OPEN_TAG))
        self._emit_text(self._buf[:len(self._buf) - held], events)
        self._buf = self._buf[len(self._buf) - held:]
        return False

    def _emit_text(self, text: str, events: list[ToolStreamEvent]) -> None:
        if not text:
            return
        if self._spec.mode in ("required", "named"):
            raise EngineError(f"tool_choice is {self._spec.mode} but the output has text: {text[:80]!r}", field=_FIELD)
        self.content += text
        events.append(ContentDelta(text))

    def _expect(self, literal: str, then: str) -> bool:
        """Consume ``literal`` from the buffer once it is all there; fail as soon as it cannot be."""
        if then == "name":
            self._check_call_allowed()
        n = min(len(literal), len(self._buf))
        if self._buf[:n] != literal[:n]:
            raise EngineError(f"expected {literal!r} in the tool-call output, got {self._buf[:len(literal)]!r}",
                              field=_FIELD)
        if n < len(literal):
            return False
        self._buf = self._buf[len(literal):]
        self._state = then
        return True

    def _check_call_allowed(self) -> None:
        limit = self._spec.max_calls
        if limit is not None and len(self.calls) >= limit:
            what = "no tool call" if limit == 0 else f"at most {limit} tool call"
            raise EngineError(f"the output makes tool call #{len(self.calls)}, but this turn allows {what} "
                              f"(tool_choice {self._spec.mode}, parallel={self._spec.parallel})", field=_FIELD)

    def _step_name(self, events: list[ToolStreamEvent]) -> bool:
        end = self._buf.find('"')
        so_far = self._buf if end < 0 else self._buf[:end]
        allowed = self._spec.callable_names
        if not any(n.startswith(so_far) for n in allowed) or (end >= 0 and so_far not in allowed):
            raise EngineError(f"the output calls {so_far!r}{'...' if end < 0 else ''}, which is not one of the "
                              f"callable tools ({', '.join(allowed)})", field=_FIELD)
        if end < 0:
            return False
        self._name, self._id, self._args = so_far, _new_call_id(), ""
        self._object_end = _ObjectEnd()
        events.append(ToolCallStart(len(self.calls), self._id, self._name))
        self._buf = self._buf[end:]  # the closing quote is the start of `mid`
        self._state = "mid"
        return True

    def _step_args(self, events: list[ToolStreamEvent]) -> bool:
        end = self._object_end.scan(self._buf)
        piece = self._buf if end is None else self._buf[:end]
        if piece:
            self._args += piece
            events.append(ToolCallArgumentsDelta(len(self.calls), piece))
        self._buf = self._buf[len(piece):]
        if end is None:
            return False
        call = ToolCallResult(self._id, self._name, self._checked_arguments())
        self.calls.append(call)
        events.append(ToolCallComplete(len(self.calls) - 1, call))
        self._state = "tail"
        return True

    def _checked_arguments(self) -> dict[str, Any]:
        """The arguments, parsed and validated: a failure here means the constrained decoder let it through."""
        try:
            arguments = json.loads(self._args)
        except json.JSONDecodeError as e:
            raise EngineError(f"tool call {self._name!r}: arguments are not valid JSON ({e}): {self._args[:200]!r}",
                              field=_FIELD) from e
        validator = self._validators.get(self._name)
        if validator is None:
            schema = self._spec.parameters(self._name)
            validator = self._validators[self._name] = validator_for(schema)(schema)
        try:
            validator.validate(arguments)
        except ValidationError as e:
            raise EngineError(f"tool call {self._name!r}: arguments break the tool's schema ({e.message}): "
                              f"{self._args[:200]!r}", field=_FIELD) from e
        return dict(arguments)

    def _step_after(self) -> bool:
        between = self._layout.between
        if not self._buf:
            return False
        if between is None:
            raise EngineError(f"text after the tool call: {self._buf[:80]!r}", field=_FIELD)
        return self._expect(between, "head")


def _pending_prefix(text: str, markers: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``markers``."""
    longest = max(len(m) for m in markers) - 1
    for n in range(min(longest, len(text)), 0, -1):
        tail = text[-n:]
        if any(m.startswith(tail) and len(m) > n for m in markers):
            return n
    return 0


def _new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
