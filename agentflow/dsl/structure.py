"""Structural validation: pydantic's errors on workflow data, as issues with stable codes and pointers.

Codes: ``missing_field``, ``unknown_field`` (with the nearest known field suggested), ``unknown_kind``,
``missing_kind``, ``wrong_type``, ``invalid_value``, and the IR's own rules (``prompt_or_messages``,
``conflicting_constraints``, ``expression_or_prompt``) under their own names.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import core_schema

from agentflow.dsl.errors import ValidationIssue
from agentflow.dsl.ir import (
    IDENTIFIER,
    NODE_KINDS,
    AnyNode,
    Body,
    Defaults,
    Edge,
    Message,
    RetryPolicy,
    Sampling,
    StateKey,
    Trigger,
    WorkflowSpec,
)


def json_pointer(parts: Iterable[str | int]) -> str:
    """An RFC 6901 pointer from path parts: ``("nodes", 0, "a/b")`` -> ``/nodes/0/a~1b``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)



_BUILTIN_ERRORS = frozenset(typing.get_args(core_schema.ErrorType))
_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field", "union_tag_invalid": "unknown_kind",
          "union_tag_not_found": "missing_kind", "int_from_float": "wrong_type", "none_required": "wrong_type"}
_UNION_TAGS = {"str": "a string", "dict[str,str]": "a mapping of strings", "dict[str,any]": "a mapping"}


_NODE_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(m.model_fields["kind"].annotation)[0]: m for m in typing.get_args(AnyNode)}
_KEYED_MODELS: dict[str, tuple[str, type[BaseModel]]] = {  # mappings from user-chosen names to models
    "state": ("a state key", StateKey), "branches": ("a branch", Body)}
_FIELD_MODELS: dict[str, tuple[str, type[BaseModel]]] = {
    "defaults": ("`defaults`", Defaults), "sampling": ("`sampling`", Sampling), "retry": ("`retry`", RetryPolicy),
    "body": ("a body", Body)}
_LIST_MODELS: dict[str, tuple[str, type[BaseModel]]] = {"edges": ("an edge", Edge), "messages": ("a message", Message),
                                                         "triggers": ("a trigger", Trigger)}


def _fields(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_at(data: object, path: list[str | int]) -> tuple[str, type[BaseModel]] | None:
    """The IR model (and how to name it) of the mapping at ``path`` in ``data``, when it can be told."""
    value = _value_at(data, path)
    if not path:
        return "the workflow", WorkflowSpec
    if isinstance(value, dict) and isinstance(path[-1], int) and value.get("kind") in _NODE_MODELS:
        return f"a node of kind `{value['kind']}`", _NODE_MODELS[value["kind"]]
    parent = path[-2] if len(path) > 1 else None
    if isinstance(parent, str) and isinstance(path[-1], str) and parent in _KEYED_MODELS:
        return _KEYED_MODELS[parent]
    if isinstance(parent, str) and isinstance(path[-1], int) and parent in _LIST_MODELS:
        return _LIST_MODELS[parent]
    return _FIELD_MODELS.get(path[-1]) if isinstance(path[-1], str) else None


def _unknown_field(data: object, path: list[str | int]) -> str:
    name = str(path[-1]) if path else ""
    found = _model_at(data, path[:-1])
    if found is None:
        return f"unknown field `{name}`"
    label, model = found
    fields = _fields(model)
    hint = suggest(name, fields, 0.75) or f"; its fields are: {', '.join(fields)}"
    return f"unknown field `{name}` for {label}{hint}"


def _error_code(kind: str) -> str:
    if kind in _CODES:
        return _CODES[kind]
    if kind not in _BUILTIN_ERRORS:
        return kind  # a PydanticCustomError raised by the IR: its type is its code
    if kind.endswith(("_type", "_parsing")):
        return "wrong_type"
    return "invalid_value"


def describe_value(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
             type(None): "null"}
    text = repr(value)
    return f"{names.get(type(value), type(value).__name__)} {text if len(text) <= 40 else text[:37] + '...'}"


def closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def suggest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    close = closest(word, choices, cutoff)
    return f" (did you mean `{close}`?)" if close else ""


@dataclass
class _Located:
    """Where a pydantic error's ``loc`` lands in the input data."""

    path: list[str | int]
    union_at: int | None = None  # len(path) where a non-discriminated union member tag was skipped
    tags: list[str] = field(default_factory=list)
    node_id: str | None = None


def _walk_loc(data: object, loc: tuple[int | str, ...], missing: bool) -> _Located:
    """Follow ``loc`` through ``data``, dropping union tags (pydantic adds them to ``loc``)."""
    elements = list(loc)
    last = elements.pop() if missing and elements else None
    found = _Located(path=[])
    current, in_list_item = data, False
    for element in elements:
        if element == "[key]":
            continue
        if in_list_item and isinstance(current, dict) and element == current.get("kind"):
            in_list_item = False  # the discriminator tag of a node
            continue
        in_dict = isinstance(current, dict) and element in current
        if in_dict or (isinstance(current, list) and isinstance(element, int) and 0 <= element < len(current)):
            current = current[element]  # type: ignore[index]
        else:  # a member tag of a plain union (`writes: str | dict[str, str]`)
            if found.union_at is None:
                found.union_at = len(found.path)
            found.tags.append(str(element))
            continue
        found.path.append(element)
        in_list_item = isinstance(element, int)
        if in_list_item and isinstance(current, dict) and isinstance(current.get("id"), str):
            found.node_id = current["id"]  # list items with an id are nodes
    if last is not None:
        found.path.append(last)
    return found


def _rephrase(error: Any) -> str:
    """Pydantic's message, reworded for people who write YAML rather than Python."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in ("model_attributes_type", "model_type", "dict_type"):
        return "should be a mapping"
    if kind == "list_type":
        return "should be a list"
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == IDENTIFIER:
        return "should be an identifier (letters, digits and _, not starting with a digit)"
    message = str(error["msg"])
    return "should " + message[len("Input should "):] if message.startswith("Input should ") else \
        f"is invalid: {message[0].lower()}{message[1:]}"


def _structure_message(data: object, error: Any, code: str, where: _Located) -> str:
    name = next((p for p in reversed(where.path) if isinstance(p, str)), "")
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if code == "missing_field":
        text = f"missing required field `{name}`"
    elif code == "unknown_field":
        text = _unknown_field(data, where.path)
    elif code == "unknown_kind":
        tag = ctx.get("tag", "")
        text = f"unknown node kind {tag!r}{suggest(tag, NODE_KINDS, 0.75)}; expected one of: {', '.join(NODE_KINDS)}"
    elif code == "missing_kind":
        text = f"node has no `kind`; expected one of: {', '.join(NODE_KINDS)}"
    elif error["type"] in _BUILTIN_ERRORS:
        if where.path and isinstance(where.path[-1], int):
            name = f"{name}[{where.path[-1]}]"
        subject = f"`{name}`" if name else "the workflow"
        text = f"{subject} {_rephrase(error)}, got {describe_value(value)}"
    else:
        text = error["msg"]
    return f"node {where.node_id!r}: {text}" if where.node_id else text


def structure_issues(data: object, exc: ValidationError) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    unions: dict[str, list[tuple[ValidationIssue, _Located]]] = {}
    for error in exc.errors():
        code = _error_code(error["type"])
        # a missing field's name ends ``loc`` but is not in the data; a node without `kind` is itself the end
        where = _walk_loc(data, error["loc"], missing=code == "missing_field")
        if code in ("missing_kind", "unknown_kind"):
            where.path.append("kind")
        issue = ValidationIssue(code=code, message=_structure_message(data, error, code, where),
                                pointer=json_pointer(where.path))
        if where.union_at is None:
            issues.append(issue)
        else:
            unions.setdefault(json_pointer(where.path[:where.union_at]), []).append((issue, where))
    for prefix, members in unions.items():  # one issue per union, not one per member type
        deeper = [issue for issue, where in members if len(where.path) > (where.union_at or 0)]
        if deeper:
            issues.extend(deeper)
            continue
        where = members[0][1]
        wanted = " or ".join(dict.fromkeys(_UNION_TAGS.get(w.tags[0], w.tags[0]) for _, w in members))
        name = next((p for p in reversed(where.path) if isinstance(p, str)), "value")
        value = _value_at(data, where.path)
        text = f"`{name}` should be {wanted}, got {describe_value(value)}"
        issues.append(ValidationIssue(code="wrong_type", pointer=prefix,
                                      message=f"node {where.node_id!r}: {text}" if where.node_id else text))
    return issues


def _value_at(data: object, path: list[str | int]) -> object:
    for part in path:
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


__all__ = ["closest", "describe_value", "json_pointer", "structure_issues", "suggest"]
