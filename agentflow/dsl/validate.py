"""Workflow validation: structure (pydantic) and meaning (graph, names, schemas), every problem at once.

:func:`validate_data` takes plain data (parsed YAML or JSON), turns pydantic's errors into
:class:`ValidationIssue` objects with stable codes and JSON pointers, and, when the structure is
sound, runs the semantic checks of :func:`validate_spec` (which the Python builder uses directly).

Structural codes: ``missing_field``, ``unknown_field``, ``unknown_kind``, ``missing_kind``,
``wrong_type``, ``invalid_value``, and the IR's own rules ``prompt_or_messages``,
``conflicting_constraints``, ``expression_or_prompt``. Semantic codes: ``duplicate_id``, ``unknown_node``,
``unreachable``, ``cycle``, ``edge_from_end``, ``unknown_variable``, ``unknown_state_key``,
``unknown_input_field``, ``template_syntax``, ``invalid_schema``, ``invalid_regex``,
``unknown_tool``, ``unknown_workflow``, ``wrong_type`` (a state default) and ``invalid_value``
(a reducer that does not fit its key's type, a reserved node id). docs/workflow-yaml.md explains each.
"""

from __future__ import annotations

import difflib
import re
import typing
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jsonschema.exceptions
import jsonschema.validators
from pydantic import BaseModel, ValidationError
from pydantic_core import core_schema

from agentflow.dsl.errors import TemplateError, ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import (
    IDENTIFIER,
    NODE_KINDS,
    AgentNode,
    AnyNode,
    Body,
    Defaults,
    Edge,
    EndNode,
    InterruptNode,
    LLMNode,
    LoopNode,
    MapNode,
    Message,
    ParallelNode,
    RetryPolicy,
    Sampling,
    StateKey,
    SwitchNode,
    ToolNode,
    WorkflowNode,
    WorkflowSpec,
)
from agentflow.dsl.templates import ENV, references

Locate = Callable[[str], tuple[int, int] | None]
"""Maps a JSON pointer to a 1-based (line, column) in the source, or None."""
LocateText = Callable[[str, str], tuple[int, int] | None]
"""Maps (JSON pointer of a string, regex) to the (line, column) of the regex's first match inside it."""

NAMESPACE = ("input", "state")
MAP_SCOPE = ("item", "index")
LOOP_SCOPE = ("iteration", "last")
RESERVED_IDS = frozenset({*NAMESPACE, *MAP_SCOPE, *LOOP_SCOPE, "output", "error", "loop", *ENV.globals})
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "object": (dict,),
    "array": (list,), "null": (type(None),),
}


def json_pointer(parts: Iterable[str | int]) -> str:
    """An RFC 6901 pointer from path parts: ``("nodes", 0, "a/b")`` -> ``/nodes/0/a~1b``."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


# --------------------------------------------------------------------------------------------------
# Structure: pydantic errors -> issues

_BUILTIN_ERRORS = frozenset(typing.get_args(core_schema.ErrorType))
_CODES = {"missing": "missing_field", "extra_forbidden": "unknown_field", "union_tag_invalid": "unknown_kind",
          "union_tag_not_found": "missing_kind", "int_from_float": "wrong_type", "none_required": "wrong_type"}
_UNION_TAGS = {"str": "a string", "dict[str,str]": "a mapping of strings"}


_NODE_MODELS: dict[str, type[BaseModel]] = {
    typing.get_args(m.model_fields["kind"].annotation)[0]: m for m in typing.get_args(AnyNode)}
_KEYED_MODELS: dict[str, tuple[str, type[BaseModel]]] = {  # mappings from user-chosen names to models
    "state": ("a state key", StateKey), "branches": ("a branch", Body)}
_FIELD_MODELS: dict[str, tuple[str, type[BaseModel]]] = {
    "defaults": ("`defaults`", Defaults), "sampling": ("`sampling`", Sampling), "retry": ("`retry`", RetryPolicy),
    "body": ("a body", Body)}
_LIST_MODELS: dict[str, tuple[str, type[BaseModel]]] = {"edges": ("an edge", Edge), "messages": ("a message", Message)}


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
    hint = _suggest(name, fields, 0.75) or f"; its fields are: {', '.join(fields)}"
    return f"unknown field `{name}` for {label}{hint}"


def _error_code(kind: str) -> str:
    if kind in _CODES:
        return _CODES[kind]
    if kind not in _BUILTIN_ERRORS:
        return kind  # a PydanticCustomError raised by the IR: its type is its code
    if kind.endswith(("_type", "_parsing")):
        return "wrong_type"
    return "invalid_value"


def _describe(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "mapping",
             type(None): "null"}
    text = repr(value)
    return f"{names.get(type(value), type(value).__name__)} {text if len(text) <= 40 else text[:37] + '...'}"


def _closest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _suggest(word: str, choices: Iterable[str], cutoff: float = 0.6) -> str:
    close = _closest(word, choices, cutoff)
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
        text = f"unknown node kind {tag!r}{_suggest(tag, NODE_KINDS, 0.75)}; expected one of: {', '.join(NODE_KINDS)}"
    elif code == "missing_kind":
        text = f"node has no `kind`; expected one of: {', '.join(NODE_KINDS)}"
    elif error["type"] in _BUILTIN_ERRORS:
        if where.path and isinstance(where.path[-1], int):
            name = f"{name}[{where.path[-1]}]"
        subject = f"`{name}`" if name else "the workflow"
        text = f"{subject} {_rephrase(error)}, got {_describe(value)}"
    else:
        text = error["msg"]
    return f"node {where.node_id!r}: {text}" if where.node_id else text


def _structure_issues(data: object, exc: ValidationError) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    unions: dict[str, list[tuple[ValidationIssue, _Located]]] = {}
    for error in exc.errors():
        code = _error_code(error["type"])
        where = _walk_loc(data, error["loc"], missing=code in ("missing_field", "missing_kind"))
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
        text = f"`{name}` should be {wanted}, got {_describe(value)}"
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


# --------------------------------------------------------------------------------------------------
# Meaning: graph levels, names, schemas


@dataclass
class _Level:
    """One graph level: the workflow's top level or one Body, with what its templates can see."""

    nodes: list[AnyNode]
    edges: list[Any]
    start: list[str] | None
    pointer: str
    label: str
    outer: frozenset[str] = frozenset()  # node ids of enclosing levels
    scope: frozenset[str] = frozenset()  # item/index, iteration/last
    output: str | None = None

    @cached_property
    def ids(self) -> dict[str, int]:
        """Node id -> index of its first node in this level."""
        found: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            found.setdefault(node.id, i)
        return found


def _bodies(node: AnyNode) -> Iterator[tuple[Body, str, str, tuple[str, ...]]]:
    """Each body of a composite node: (body, pointer, label, scope variables it binds)."""
    if isinstance(node, ParallelNode):
        for name, body in node.branches.items():
            yield body, json_pointer(["branches", name]), f"branch {name!r} of parallel node {node.id!r}", ()
    elif isinstance(node, MapNode):
        yield node.body, "/body", f"the body of map node {node.id!r}", MAP_SCOPE
    elif isinstance(node, LoopNode):
        yield node.body, "/body", f"the body of loop node {node.id!r}", LOOP_SCOPE


def _levels(spec: WorkflowSpec) -> list[_Level]:
    top = _Level(list(spec.nodes), list(spec.edges), spec.start, "", "the top level")
    levels, todo = [], [top]
    while todo:
        level = todo.pop(0)
        levels.append(level)
        handlers = {n.on_error for n in level.nodes if n.on_error}
        for i, node in enumerate(level.nodes):
            node_ptr = f"{level.pointer}/nodes/{i}"
            for body, sub, label, binds in _bodies(node):
                outer = (level.outer | set(level.ids)) - {node.id}
                scope = level.scope | set(binds) | ({"error"} if node.id in handlers else set())
                todo.append(_Level(list(body.nodes), list(body.edges), body.start, node_ptr + sub, label,
                                   frozenset(outer), scope, body.output))
    return levels


@dataclass
class _Found:
    issue: ValidationIssue
    pattern: str | None = None  # a regex locating the problem inside the string at the pointer


class _Checker:
    """Runs every semantic check on a spec and collects what it finds."""

    def __init__(self, spec: WorkflowSpec, tools: Collection[str] | None, workflows: Collection[str] | None):
        self.spec = spec
        self.tools = tools
        self.workflows = workflows
        self.found: list[_Found] = []
        self.levels = _levels(spec)
        self.where: dict[str, str] = {}  # node id -> label of its level (first occurrence)
        props = spec.input.get("properties")
        self.input_fields = set(props) if isinstance(props, dict) else None

    def add(self, code: str, pointer: str, message: str, pattern: str | None = None) -> None:
        self.found.append(_Found(ValidationIssue(code=code, message=message, pointer=pointer), pattern))

    def run(self) -> list[_Found]:
        self.check_state()
        self.check_schema(self.spec.input, "/input", "input schema")
        self.check_ids()
        for level in self.levels:
            _GraphCheck(self, level).run()
            self.check_level_names(level)
        names = frozenset({*NAMESPACE, *self.levels[0].ids})
        output = self.spec.output
        if isinstance(output, str):
            self.check_text(output, "/output", names, "the workflow output", expression=True)
        elif isinstance(output, dict):
            for key, expr in output.items():
                self.check_text(expr, json_pointer(["output", key]), names, "the workflow output", expression=True)
        return self.found

    # -- state, schemas, ids ---------------------------------------------------------------------

    def check_state(self) -> None:
        for key, spec in self.spec.state.items():
            ptr = json_pointer(["state", key])
            if spec.reducer == "merge" and spec.type not in ("object", "any"):
                self.add("invalid_value", ptr + "/reducer",
                         f"state key {key!r}: reducer `merge` needs type object (or any), not {spec.type}")
            if spec.reducer == "append" and spec.type not in ("array", "any"):
                self.add("invalid_value", ptr + "/reducer",
                         f"state key {key!r}: reducer `append` needs type array (or any), not {spec.type}")
            expected = _JSON_TYPES.get(spec.type)
            value = spec.default
            if expected and value is not None and (not isinstance(value, expected) or (
                    isinstance(value, bool) and bool not in expected)):
                self.add("wrong_type", ptr + "/default",
                         f"state key {key!r}: default {_describe(value)} is not of type {spec.type}")

    def check_schema(self, schema: dict[str, Any], ptr: str, what: str) -> None:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.validators.Draft202012Validator)
        try:
            validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            self.add("invalid_schema", ptr + json_pointer(list(exc.path)),
                     f"{what} is not a valid JSON Schema: {exc.message}")

    def check_ids(self) -> None:
        first: dict[str, str] = {}
        for level in self.levels:
            for i, node in enumerate(level.nodes):
                ptr = f"{level.pointer}/nodes/{i}/id"
                if node.id in first:
                    self.add("duplicate_id", ptr, f"node id {node.id!r} is already used at {first[node.id][:-3]}; "
                             "ids must be unique in the whole workflow, bodies included")
                    continue
                first[node.id] = ptr
                self.where[node.id] = level.label
                if node.id in RESERVED_IDS:
                    self.add("invalid_value", ptr, f"node id {node.id!r} is reserved: templates use that name "
                             "for something else")

    # -- templates and expressions -----------------------------------------------------------------

    def check_level_names(self, level: _Level) -> None:
        base = frozenset({*NAMESPACE, *level.outer, *level.ids, *level.scope})
        error_targets = {n.on_error for n in level.nodes if n.on_error}
        for i, node in enumerate(level.nodes):
            ptr = f"{level.pointer}/nodes/{i}"
            names = base | {"error"} if node.id in error_targets else base
            _NodeCheck(self, node, ptr, names).run()
        if level.output is not None:
            self.check_text(level.output, level.pointer + "/output", base, f"the output of {level.label}",
                            expression=True)

    def check_text(self, text: str, ptr: str, names: frozenset[str], what: str, *, expression: bool = False) -> None:
        """Check the names a template (or expression) reads."""
        if not expression and "{" not in text:
            return
        try:
            refs = references(text, expression=expression)
        except TemplateError as exc:
            hint = " (expressions are written without {{ }})" if expression and "{{" in text else ""
            self.add("template_syntax", ptr, f"{what}: {exc}{hint}")
            return
        reported: set[str] = set()
        for name, attr in refs:
            if name == "state" and attr is not None and attr not in self.spec.state:
                declared = ", ".join(self.spec.state) or "none declared"
                self.add("unknown_state_key", ptr, f"{what} reads `state.{attr}`, but {attr!r} is not a state "
                         f"key{_suggest(attr, self.spec.state)} (state keys: {declared})",
                         rf"\bstate\s*(\.\s*{re.escape(attr)}\b|\[\s*['\"]{re.escape(attr)}['\"])")
            elif name == "input" and attr is not None and self.input_fields is not None \
                    and attr not in self.input_fields:
                self.add("unknown_input_field", ptr, f"{what} reads `input.{attr}`, but the input schema has no "
                         f"property {attr!r}{_suggest(attr, self.input_fields)}",
                         rf"\binput\s*(\.\s*{re.escape(attr)}\b|\[\s*['\"]{re.escape(attr)}['\"])")
            elif name not in names and name not in reported:
                reported.add(name)
                self.add("unknown_variable", ptr, f"{what} uses `{name}`, {self.why_unknown(name, names)}",
                         rf"(?<![\w.]){re.escape(name)}\b")

    def why_unknown(self, name: str, names: frozenset[str]) -> str:
        if name in self.where:
            return f"but node {name!r} is in {self.where[name]} and not visible here"
        if name in MAP_SCOPE:
            return "which is only bound inside a map body"
        if name in LOOP_SCOPE:
            return "which is only bound inside a loop body and its condition"
        if name == "output":
            return "which is only bound in a node's `writes` mapping"
        if name == "error":
            return "which is only bound in a node that an `on_error` edge leads to"
        return f"which is not `input`, `state`, a node id or a bound variable{_suggest(name, names)}"


class _NodeCheck:
    """The per-node checks: templates, expressions, writes, schemas, regex, tools, workflows."""

    def __init__(self, checker: _Checker, node: AnyNode, ptr: str, names: frozenset[str]):
        self.c, self.node, self.ptr, self.names = checker, node, ptr, names
        self.what = f"node {node.id!r}"

    def text(self, value: str | None, key: str, *, expression: bool = False, extra: Iterable[str] = ()) -> None:
        if value is not None:
            self.c.check_text(value, self.ptr + key, self.names | set(extra), f"{self.what} {key.split('/')[1]}",
                              expression=expression)

    def nested(self, value: object, key: str) -> None:
        if isinstance(value, str):
            self.text(value, key)
        elif isinstance(value, dict):
            for k, v in value.items():
                self.nested(v, key + json_pointer([k]))
        elif isinstance(value, list):
            for j, v in enumerate(value):
                self.nested(v, f"{key}/{j}")

    def run(self) -> None:
        node = self.node
        self.writes()
        if isinstance(node, LLMNode | AgentNode):
            self.text(node.system, "/system")
            self.text(node.prompt, "/prompt")
            for j, message in enumerate(node.messages or []):
                self.text(message.content, f"/messages/{j}/content")
        if isinstance(node, LLMNode):
            if node.output_schema is not None:
                self.c.check_schema(node.output_schema, self.ptr + "/output_schema", f"{self.what} output_schema")
            if node.regex is not None:
                self.regex(node.regex)
        elif isinstance(node, AgentNode):
            for j, tool in enumerate(node.tools):
                self.tool(tool, f"/tools/{j}")
        elif isinstance(node, ToolNode):
            self.tool(node.tool, "/tool")
            self.nested(node.args, "/args")
        elif isinstance(node, SwitchNode):
            self.text(node.expression, "/expression", expression=True)
            self.text(node.prompt, "/prompt")
        elif isinstance(node, MapNode):
            self.text(node.over, "/over", expression=True)
        elif isinstance(node, LoopNode):
            body_ids = [n.id for n in node.body.nodes]  # the condition runs in the body's scope
            self.text(node.condition, "/condition", expression=True, extra=[*LOOP_SCOPE, *body_ids])
        elif isinstance(node, WorkflowNode):
            self.nested(node.input, "/input")
            if self.c.workflows is not None and node.workflow not in self.c.workflows:
                self.c.add("unknown_workflow", self.ptr + "/workflow", f"{self.what} runs workflow "
                           f"{node.workflow!r}, which is not registered{_suggest(node.workflow, self.c.workflows)}")
        elif isinstance(node, InterruptNode):
            self.text(node.prompt, "/prompt")
            if node.value_schema is not None:
                self.c.check_schema(node.value_schema, self.ptr + "/schema", f"{self.what} schema")

    def writes(self) -> None:
        writes, state = self.node.writes, self.c.spec.state
        if isinstance(writes, str):
            keys = {writes: self.ptr + "/writes"}
        elif isinstance(writes, dict):
            keys = {key: self.ptr + "/writes" + json_pointer([key]) for key in writes}
            for key, expr in writes.items():
                self.c.check_text(expr, keys[key], self.names | {"output"}, f"{self.what} writes", expression=True)
        else:
            return
        for key, ptr in keys.items():
            if key not in state:
                self.c.add("unknown_state_key", ptr, f"{self.what} writes state key {key!r}, which is not declared "
                           f"under `state`{_suggest(key, state)}")

    def regex(self, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.c.add("invalid_regex", self.ptr + "/regex", f"{self.what} regex {pattern!r} does not compile: "
                       f"{exc.msg} at position {exc.pos}")

    def tool(self, name: str, key: str) -> None:
        if self.c.tools is not None and name not in self.c.tools:
            self.c.add("unknown_tool", self.ptr + key,
                       f"{self.what} uses tool {name!r}, which is not registered{_suggest(name, self.c.tools)}")


class _GraphCheck:
    """One level's graph: references to nodes, reachability from ``start``, cycles, edges out of ``end``."""

    def __init__(self, checker: _Checker, level: _Level):
        self.c, self.level = checker, level
        self.ids = level.ids
        self.arcs: list[tuple[str, str, str]] = []  # (from, to, pointer of the reference to `to`)
        self.excused: set[str] = set()  # nodes whose unreachability another issue already explains

    def run(self) -> None:
        level = self.level
        for k, edge in enumerate(level.edges):
            ptr = f"{level.pointer}/edges/{k}"
            src_ok = self.ref(edge.source, ptr + "/from", "edge `from`")
            if src_ok and isinstance(level.nodes[self.ids[edge.source]], EndNode):
                self.c.add("edge_from_end", ptr + "/from", f"edge from end node {edge.source!r}: an `end` node "
                           "finishes the run, so nothing can follow it")
            if self.ref(edge.target, ptr + "/to", "edge `to`") and src_ok:
                self.arcs.append((edge.source, edge.target, ptr + "/to"))
            elif not src_ok:
                self.excused.add(edge.target)
        for i, node in enumerate(level.nodes):
            ptr = f"{level.pointer}/nodes/{i}"
            if isinstance(node, SwitchNode):
                for case, target in node.cases.items():
                    self.arc(node.id, target, ptr + json_pointer(["cases", case]), f"switch case {case!r}")
                if node.default is not None:
                    self.arc(node.id, node.default, ptr + "/default", "switch `default`")
            if node.on_error is not None:
                self.arc(node.id, node.on_error, ptr + "/on_error", "`on_error`")
        starts = [s for j, s in enumerate(level.start or []) if self.ref(s, f"{level.pointer}/start/{j}", "`start`")]
        if level.start is None:
            starts = [level.nodes[0].id]
        elif not level.start:
            self.c.add("invalid_value", f"{level.pointer}/start", f"`start` in {level.label} is empty; name at "
                       "least one node (or leave it out to start at the first node)")
        if starts:
            self.reachability(starts)
        self.cycles(starts)

    def ref(self, name: str, ptr: str, what: str) -> bool:
        if name in self.ids:
            return True
        if name in self.c.where:
            hint = f"; {name!r} is in {self.c.where[name]}, and references cannot cross graph levels"
        else:
            hint = _suggest(name, self.ids)
            close = _closest(name, self.ids)
            if close:  # a typo: the node it meant is not also reported unreachable
                self.excused.add(close)
        self.c.add("unknown_node", ptr, f"{what} names {name!r}, but there is no such node in "
                   f"{self.level.label}{hint}")
        return False

    def arc(self, src: str, dst: str, ptr: str, what: str) -> None:
        if self.ref(dst, ptr, f"node {src!r} {what}"):
            self.arcs.append((src, dst, ptr))

    def successors(self) -> dict[str, list[tuple[str, str]]]:
        """Node id -> [(next node id, pointer of the reference)]."""
        out: dict[str, list[tuple[str, str]]] = {}
        for src, dst, ptr in self.arcs:
            out.setdefault(src, []).append((dst, ptr))
        return out

    def reachability(self, starts: list[str]) -> None:
        out = self.successors()
        seen, todo = set(starts), list(starts)
        while todo:
            for dst, _ in out.get(todo.pop(), []):
                if dst not in seen:
                    seen.add(dst)
                    todo.append(dst)
        for i, node in enumerate(self.level.nodes):
            if node.id not in seen and node.id not in self.excused and self.ids[node.id] == i:
                self.c.add("unreachable", f"{self.level.pointer}/nodes/{i}/id",
                           f"node {node.id!r} in {self.level.label} is never run: no edge, switch case or "
                           f"on_error leads to it from the start node(s) {', '.join(starts)}")

    def cycles(self, starts: list[str]) -> None:
        """Depth-first search; each arc back onto the current path closes a cycle."""
        out = self.successors()
        done: set[str] = set()
        reported: set[frozenset[str]] = set()
        for root in [*starts, *self.ids]:
            if root in done:
                continue
            path, stack = [root], [iter(out.get(root, []))]
            while stack:
                step = next(stack[-1], None)
                if step is None:
                    done.add(path.pop())
                    stack.pop()
                    continue
                dst, ptr = step
                if dst in path:
                    loop = path[path.index(dst):]
                    if frozenset(loop) not in reported:
                        reported.add(frozenset(loop))
                        self.c.add("cycle", ptr, f"cycle {' -> '.join([*loop, dst])} in {self.level.label}: "
                                   "repeat work with a `loop` node instead")
                elif dst not in done:
                    path.append(dst)
                    stack.append(iter(out.get(dst, [])))


# --------------------------------------------------------------------------------------------------
# Public API


def _semantic(spec: WorkflowSpec, tools: Collection[str] | None, workflows: Collection[str] | None) -> list[_Found]:
    return _Checker(spec, tools, workflows).run()


def validate_spec(spec: WorkflowSpec, *, tools: Collection[str] | None = None,
                  workflows: Collection[str] | None = None) -> list[ValidationIssue]:
    """The semantic checks on a built spec; ``tools`` / ``workflows``, when given, are the known names."""
    return [found.issue for found in _semantic(spec, tools, workflows)]


def check(spec: WorkflowSpec, *, tools: Collection[str] | None = None,
          workflows: Collection[str] | None = None) -> WorkflowSpec:
    """``spec`` itself, or :class:`WorkflowValidationError` listing every semantic problem."""
    issues = validate_spec(spec, tools=tools, workflows=workflows)
    if issues:
        raise WorkflowValidationError(issues)
    return spec


def validate_data(data: object, *, locate: Locate | None = None, tools: Collection[str] | None = None,
                  workflows: Collection[str] | None = None,
                  locate_text: LocateText | None = None) -> tuple[WorkflowSpec | None, list[ValidationIssue]]:
    """Validate plain data (parsed YAML/JSON): ``(spec, [])`` when valid, else ``(None, every issue)``.

    Structural errors are all reported; the semantic checks run only when the structure is valid.
    ``locate`` adds line and column to each issue from its pointer; ``locate_text`` (optional) places
    a problem inside a multi-line template more precisely.
    """
    if not isinstance(data, dict):
        found = [_Found(ValidationIssue(code="wrong_type", message="a workflow must be a mapping (name, nodes, "
                                        f"edges, ...), got {_describe(data)}"))]
        spec = None
    else:
        try:
            spec = WorkflowSpec.model_validate(data, by_alias=True, by_name=False)  # YAML names only
        except ValidationError as exc:
            found = [_Found(issue) for issue in _structure_issues(data, exc)]
            spec = None
        else:
            found = _semantic(spec, tools, workflows)
    issues = [_place(f, locate, locate_text) for f in found]
    return (spec if not issues else None), issues


def _place(found: _Found, locate: Locate | None, locate_text: LocateText | None) -> ValidationIssue:
    issue = found.issue
    where = None
    if locate_text is not None and found.pattern is not None:
        where = locate_text(issue.pointer, found.pattern)
    if where is None and locate is not None:
        where = locate(issue.pointer)
    if where is None:
        return issue
    return issue.model_copy(update={"line": where[0], "column": where[1]})


__all__ = ["Locate", "LocateText", "check", "json_pointer", "validate_data", "validate_spec"]
