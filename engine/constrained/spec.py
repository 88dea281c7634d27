"""``ConstraintSpec``: what a request's output must look like, declared as data.

Exactly one of the five forms is set. The engine compiles the spec at submit time into a
per-request matcher (``engine/constrained/compiler.py``); this module is plain data and imports
neither torch nor llguidance, so callers can build specs without loading the engine.

``ToolCallSpec`` is the fifth form: the output is the model's answer in its native tool-call
format (grammar, parsing and streaming in ``engine/constrained/toolcall.py``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from engine.errors import InvalidRequestError


@dataclass
class ConstraintSpec:
    """A declarative output constraint; set exactly one field."""

    json_schema: dict[str, Any] | None = None
    """A JSON Schema (as a dict). The output is one JSON value matching it, written compactly with
    ``", "`` and ``": "`` separators and no other whitespace."""
    regex: str | None = None
    """A regular expression (Rust ``regex`` syntax) the whole output must match."""
    choices: Sequence[str] | None = None
    """The output is exactly one of these strings (stored as a tuple)."""
    grammar: str | None = None
    """A Lark grammar in llguidance's dialect (``start`` is the top rule)."""
    tool_calls: ToolCallSpec | None = None
    """Text and/or tool calls in the model's native tool-call format (see ``ToolCallSpec``)."""

    def __post_init__(self) -> None:
        given = [f.name for f in fields(self) if getattr(self, f.name) is not None]
        if len(given) != 1:
            got = ", ".join(given) if given else "none"
            raise InvalidRequestError("set exactly one of json_schema, regex, choices, grammar, tool_calls "
                                      f"(got {got})", field="constraint")
        if self.json_schema is not None and not isinstance(self.json_schema, dict):
            raise InvalidRequestError(f"must be a dict, got {type(self.json_schema).__name__}",
                                      field="constraint.json_schema")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidRequestError("must be a non-empty string", field=f"constraint.{name}")
        if self.choices is not None:
            self.choices = _check_choices(self.choices)
        if self.tool_calls is not None and not isinstance(self.tool_calls, ToolCallSpec):
            raise InvalidRequestError(f"must be a ToolCallSpec, got {type(self.tool_calls).__name__}",
                                      field="constraint.tool_calls")

    @property
    def kind(self) -> str:
        """The name of the field that is set: ``json_schema``, ``regex``, ``choices``, ``grammar`` or
        ``tool_calls``."""
        return next(f.name for f in fields(self) if getattr(self, f.name) is not None)


TOOL_CALL_FORMATS = ("hermes", "llama3_json")
"""Native tool-call formats: ``hermes`` (Qwen2.5, Qwen3, Hermes: ``<tool_call>`` blocks) and
``llama3_json`` (Llama 3.1's JSON tool calls)."""

TOOL_CHOICES = ("auto", "required", "none")

_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
"""What an omitted ``parameters`` means in OpenAI's format: a function without arguments."""


@dataclass
class ToolCallSpec:
    """The output is text and/or tool calls in the model's native format; every call names one of
    ``tools`` and its arguments match that tool's ``parameters``. Validated at construction."""

    tools: Sequence[Mapping[str, Any]] = ()
    """Tools in OpenAI function format, ``{"type": "function", "function": {"name": ..., "description":
    ..., "parameters": {JSON Schema of an object}}}`` (stored as a tuple). An omitted ``parameters``
    means no arguments."""
    tool_choice: str | Mapping[str, Any] = "auto"
    """``auto``: free text, then optionally calls; ``required``: one or more calls and nothing else;
    ``none``: text that never contains a call; ``{"type": "function", "function": {"name": N}}``:
    exactly one call of tool N."""
    parallel: bool = True
    """Allow more than one call in a turn (``auto`` and ``required``). ``llama3_json`` makes one call
    at most whatever this says (see ``engine/constrained/toolcall.py``)."""
    format: str | None = None
    """``hermes``, ``llama3_json``, or None: detect from the model's chat template at compile time."""
    min_calls: int = 1
    """When the turn makes calls, it makes at least this many (``required``: always)."""
    call_limit: int | None = None
    """At most this many calls in a turn (None: no limit beyond ``parallel``)."""
    _parameters: dict[str, dict[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.tools, (str, bytes, Mapping)) or not isinstance(self.tools, Sequence):
            raise InvalidRequestError(f"must be a list of tools, got {type(self.tools).__name__}",
                                      field="constraint.tool_calls.tools")
        self.tools = tuple(self.tools)
        self._parameters = {}
        for i, tool in enumerate(self.tools):
            name, parameters = _check_tool(tool, f"constraint.tool_calls.tools[{i}]")
            if name in self._parameters:
                raise InvalidRequestError(f"duplicate tool name {name!r}", field=f"constraint.tool_calls.tools[{i}]")
            self._parameters[name] = parameters
        self._check_choice()
        if not isinstance(self.parallel, bool):
            raise InvalidRequestError(f"must be a bool, got {type(self.parallel).__name__}",
                                      field="constraint.tool_calls.parallel")
        for name in ("min_calls", "call_limit"):
            value = getattr(self, name)
            if value is None and name == "call_limit":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequestError(f"must be a positive integer, got {value!r}",
                                          field=f"constraint.tool_calls.{name}")
        limit = self.max_calls
        if limit is not None and limit > 0 and self.min_calls > limit:
            raise InvalidRequestError(f"asks for at least {self.min_calls} calls but this turn allows at most "
                                      f"{limit} (tool_choice {self.mode}, parallel={self.parallel}, "
                                      f"call_limit={self.call_limit})", field="constraint.tool_calls.min_calls")
        if self.format is not None and self.format not in TOOL_CALL_FORMATS:
            raise InvalidRequestError(f"unknown tool-call format {self.format!r}; use one of "
                                      f"{', '.join(TOOL_CALL_FORMATS)} (or None to detect it from the chat template)",
                                      field="constraint.tool_calls.format")

    def _check_choice(self) -> None:
        where = "constraint.tool_calls.tool_choice"
        choice = self.tool_choice
        if isinstance(choice, str):
            if choice not in TOOL_CHOICES:
                raise InvalidRequestError(f"must be one of {', '.join(TOOL_CHOICES)} or "
                                          f'{{"type": "function", "function": {{"name": ...}}}}, got {choice!r}',
                                          field=where)
            if choice == "required" and not self.tools:
                raise InvalidRequestError("is 'required' but no tools are given", field=where)
            return
        function = choice.get("function") if isinstance(choice, Mapping) else None
        name = function.get("name") if isinstance(function, Mapping) else None
        if not isinstance(choice, Mapping) or choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequestError(f'must be {{"type": "function", "function": {{"name": ...}}}}, got {choice!r}',
                                      field=where)
        if not self.tools:
            raise InvalidRequestError(f"names tool {name!r} but no tools are given", field=where)
        if name not in self._parameters:
            raise InvalidRequestError(f"names tool {name!r}, which is not among the tools "
                                      f"({', '.join(self._parameters)})", field=where)

    @property
    def forced_name(self) -> str | None:
        """The tool a named ``tool_choice`` forces, else None."""
        if isinstance(self.tool_choice, Mapping):
            return str(self.tool_choice["function"]["name"])
        return None

    @property
    def mode(self) -> str:
        """``auto``, ``required``, ``none`` or ``named``."""
        return "named" if isinstance(self.tool_choice, Mapping) else self.tool_choice

    @property
    def callable_names(self) -> tuple[str, ...]:
        """The tools the output may call, in the order given: all of them, the named one, or none."""
        forced = self.forced_name
        if forced is not None:
            return (forced,)
        return () if self.tool_choice == "none" else tuple(self._parameters)

    @property
    def max_calls(self) -> int | None:
        """How many calls ``tool_choice``, ``parallel`` and ``call_limit`` let one turn make: None for any
        number (0 for ``none``). The ``llama3_json`` format makes one at most in any case."""
        if self.mode == "none":
            return 0
        if self.mode == "named" or not self.parallel:
            return 1
        return self.call_limit

    def parameters(self, name: str) -> dict[str, Any]:
        """The JSON Schema of tool ``name``'s arguments (``KeyError`` if there is no such tool)."""
        return self._parameters[name]


def _check_tool(tool: object, where: str) -> tuple[str, dict[str, Any]]:
    """Validate one OpenAI-format tool; return its name and its parameters schema."""
    function = tool.get("function") if isinstance(tool, Mapping) else None
    if not isinstance(tool, Mapping) or tool.get("type", "function") != "function" or not isinstance(function, Mapping):
        raise InvalidRequestError('must be {"type": "function", "function": {"name": ..., "parameters": ...}}, '
                                  f"got {tool!r:.200}", field=where)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError(f"a tool needs a non-empty string name, got {name!r}", field=f"{where}.function.name")
    if any(c in '"\\' or ord(c) < 0x20 for c in name):
        # Chat templates write the name into the JSON verbatim; these would need escaping there.
        raise InvalidRequestError(f"tool name {name!r} must not contain quotes, backslashes or control characters",
                                  field=f"{where}.function.name")
    parameters = function.get("parameters")
    if parameters is None:
        return name, dict(_NO_ARGUMENTS)
    if isinstance(parameters, Mapping) and not parameters:  # {} (vLLM takes it): any arguments
        return name, {"type": "object"}
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise InvalidRequestError(f'tool {name!r}: parameters must be a JSON Schema with "type": "object", '
                                  f"got {parameters!r:.200}", field=f"{where}.function.parameters")
    _check_schema(dict(parameters), name, f"{where}.function.parameters")
    return name, dict(parameters)


def _check_schema(schema: dict[str, Any], name: str, where: str) -> None:
    """Reject a parameters schema that is not valid JSON Schema (checked against its meta-schema)."""
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"tool {name!r}: parameters is not JSON: {e}", field=where) from e
    problem = _schema_problem(text)
    if problem is not None:
        raise InvalidRequestError(f"tool {name!r}: parameters is not a valid JSON Schema: {problem}", field=where)


@lru_cache(maxsize=4096)
def _schema_problem(schema_json: str) -> str | None:
    """Why the schema fails its meta-schema, or None. Cached: checking takes about a millisecond, and
    an agent sends the same tools with every turn."""
    from jsonschema.exceptions import SchemaError  # pure Python; imported on first use
    from jsonschema.validators import validator_for

    schema = json.loads(schema_json)
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        return f"{e.message:.200}" + (f" (at {path})" if path else "")
    return None


def _check_choices(choices: object) -> tuple[str, ...]:
    if isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence):
        raise InvalidRequestError(f"must be a list of strings, got {type(choices).__name__}",
                                  field="constraint.choices")
    if not choices:
        raise InvalidRequestError("must not be empty", field="constraint.choices")
    bad = next((c for c in choices if not isinstance(c, str) or not c), None)
    if bad is not None:
        raise InvalidRequestError(f"every choice must be a non-empty string, got {bad!r}",
                                  field="constraint.choices")
    return tuple(choices)
