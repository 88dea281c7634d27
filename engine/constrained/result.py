"""Structured results: a finished constrained output as data (``Output.json``, ``Output.tool_calls``).

The grammar already made the text parse and match; here it is parsed and checked once more with
jsonschema (with ECMA-262 patterns, as JSON Schema specifies: ``ecma_validator``), the independent
referee. Formats are annotations (draft 2020-12's default) and are not re-checked. A failure is an
engine (or llguidance) bug: it is logged and raised as ``ConstraintViolationError``, never passed on
as if the value were fine.

Only outputs that ended where the grammar let them are parsed (``finish_reason == "stop"`` without a
stop string). One cut short (``length``, ``abort``, a stop string) has no ``json``; its tool calls
are those complete before the cut.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import regex

from engine.constrained.ecma_validator import ecma_validator
from engine.constrained.spec import ConstraintSpec
from engine.constrained.toolcall import ToolCallResult, parse_tool_calls
from engine.errors import ConstraintViolationError, EngineError

log = logging.getLogger(__name__)

__all__ = ["Structured", "structure"]


@dataclass
class Structured:
    content: str | None = None
    """Tool-call outputs: the text before the calls."""
    tool_calls: list[ToolCallResult] | None = None
    """Tool-call outputs: the calls, arguments validated (empty when the model made none)."""
    json: Any = None
    """JSON-schema outputs that ended where the grammar allows: the parsed, validated value."""
    parsed: bool = False
    """True when ``json`` holds a parsed value (which may itself be null)."""


def structure(spec: object, text: str, finish_reason: str | None, stop_reason: str | int | None, *,
              chat_template: str | None = None) -> Structured:
    """The structured view of a finished request's ``text`` under constraint ``spec`` (a
    ``ConstraintSpec``; anything else, or None, gives an empty ``Structured``)."""
    if not isinstance(spec, ConstraintSpec) or (spec.json_schema is None and spec.tool_calls is None):
        return Structured()
    complete = finish_reason == "stop" and not isinstance(stop_reason, str)
    if spec.tool_calls is not None:
        try:
            content, calls = parse_tool_calls(text, spec.tool_calls, chat_template=chat_template, complete=complete)
        except EngineError as e:
            raise _violation(f"the tool-call output does not parse or validate: {e}", text) from e
        return Structured(content=content, tool_calls=calls)
    if not complete:
        return Structured()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise _violation(f"the output is not JSON ({e})", text) from e
    schema = spec.json_schema
    assert schema is not None
    try:
        error = next(iter(ecma_validator(schema).iter_errors(value)), None)
    except (regex.error, re.error) as e:  # a pattern even the regex module cannot compile: the grammar's check stands
        log.warning("cannot re-check the output with jsonschema (pattern: %s); relying on the grammar", e)
        error = None
    if error is not None:
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        raise _violation(f"the output breaks its JSON schema at {where}: {error.message}", text)
    return Structured(json=value, parsed=True)


def _violation(message: str, text: str) -> ConstraintViolationError:
    full = f"{message}. This is a bug in the engine's constrained decoding, not in the request; output: {text[:500]!r}"
    log.error("%s", full)
    return ConstraintViolationError(full, field="constraint")
