"""Workflow validation: structure (pydantic) and meaning (graph, names, schemas), every problem at once.

:func:`validate_data` takes plain data (parsed YAML or JSON), turns pydantic's errors into
:class:`ValidationIssue` objects with stable codes and JSON pointers, and, when the structure is
sound, runs the semantic checks of :func:`validate_spec` (which the Python builder uses directly).

Structural codes: ``missing_field``, ``unknown_field``, ``unknown_kind``, ``missing_kind``,
``wrong_type``, ``invalid_value``, and the IR's own rules ``prompt_or_messages``,
``conflicting_constraints``, ``expression_or_prompt``. Semantic codes: ``duplicate_id``, ``duplicate_trigger``,
``unknown_node``,
``unreachable``, ``cycle``, ``edge_from_end``, ``unknown_variable``, ``unknown_state_key``,
``unknown_input_field``, ``template_syntax``, ``invalid_schema``, ``invalid_regex``,
``unknown_tool``, ``unknown_argument``, ``missing_argument``, ``unknown_workflow``, ``workflow_cycle``,
``wrong_type`` (a state default) and ``invalid_value`` (a reducer that does not fit its key's type, a
reserved node id, a node named twice in ``start``). docs/workflow-yaml.md explains each.

What the caller knows widens the checks: ``tools`` as names checks tool names; as a ``ToolRegistry`` (or a
mapping name -> ``Tool``) a tool node's argument names too. ``workflows`` as names checks workflow names;
given as ``WorkflowSpec`` objects (or a mapping name -> spec) it also refuses calls that come back around.
A workflow calling itself is refused in any case.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema.exceptions
import jsonschema.validators
from pydantic import ValidationError

from agentflow.dsl.errors import TemplateError, ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import (
    AgentNode,
    AnyNode,
    EndNode,
    InterruptNode,
    LLMNode,
    LoopNode,
    MapNode,
    SwitchNode,
    ToolNode,
    WorkflowNode,
    WorkflowSpec,
)
from agentflow.dsl.levels import (
    LOOP_SCOPE,
    MAP_SCOPE,
    KnownWorkflows,
    Level,
    call_cycle,
    call_graph,
    levels_of,
    workflow_calls,
)
from agentflow.dsl.refs import ref_problems
from agentflow.dsl.structure import closest, describe_value, json_pointer, structure_issues, suggest
from agentflow.dsl.templates import ENV, references
from agentflow.dsl.tool_arguments import argument_names, tool_of
from agentflow.jsondata import json_problem
from agentflow.tool import BUILTIN_GROUPS

Locate = Callable[[str], tuple[int, int] | None]
"""Maps a JSON pointer to a 1-based (line, column) in the source, or None."""
LocateText = Callable[[str, str], tuple[int, int] | None]
"""Maps (JSON pointer of a string, regex) to the (line, column) of the regex's first match inside it."""

NAMESPACE = ("input", "state")
TRIGGER_SCOPE = frozenset({"payload", "headers"})
"""The names a trigger's input templates may use."""
RESERVED_IDS = frozenset({*NAMESPACE, *MAP_SCOPE, *LOOP_SCOPE, "output", "error", "loop", *ENV.globals})
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,), "object": (dict,),
    "array": (list,), "null": (type(None),),
}


# --------------------------------------------------------------------------------------------------
# Meaning: graph levels, names, schemas


@dataclass
class _Found:
    issue: ValidationIssue
    pattern: str | None = None  # a regex locating the problem inside the string at the pointer


class _Checker:
    """Runs every semantic check on a spec and collects what it finds."""

    def __init__(self, spec: WorkflowSpec, tools: Collection[str] | None, workflows: KnownWorkflows | None):
        self.spec = spec
        self.tools = tools
        self.found: list[_Found] = []
        self.levels = levels_of(spec)
        self.workflows, self.calls = call_graph(spec, self.levels, workflows)
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
        self.check_triggers()
        self.check_calls()
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
                         f"state key {key!r}: default {describe_value(value)} is not of type {spec.type}")

    def check_schema(self, schema: dict[str, Any], ptr: str, what: str) -> None:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.validators.Draft202012Validator)
        try:
            validator.check_schema(schema)
        except jsonschema.exceptions.SchemaError as exc:
            self.add("invalid_schema", ptr + json_pointer(list(exc.path)),
                     f"{what} is not a valid JSON Schema: {exc.message}")
            return
        for ref_ptr, why in ref_problems(schema):
            self.add("invalid_schema", ptr + ref_ptr, f"{what}: {why}")

    def check_calls(self) -> None:
        """Workflow nodes whose calls come back to a workflow already calling: they would never end."""
        done: set[str] = set()
        for ptr, node in workflow_calls(self.levels):
            chain = call_cycle(node.workflow, self.calls, [self.spec.name], done)
            if chain is not None:
                self.add("workflow_cycle", ptr + "/workflow", f"node {node.id!r} runs workflow {node.workflow!r}, "
                         f"and the calls come back around: {' -> '.join(chain)}; a workflow cannot call itself, "
                         "directly or through others (repeat work with a `loop` node)")

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

    def check_triggers(self) -> None:
        first: dict[str, int] = {}
        for i, trigger in enumerate(self.spec.triggers):
            ptr = f"/triggers/{i}"
            if trigger.name in first:
                self.add("duplicate_trigger", ptr + "/name", f"trigger name {trigger.name!r} is already used by "
                         f"/triggers/{first[trigger.name]}; each hook name starts one workflow")
            else:
                first[trigger.name] = i
            what = f"trigger {trigger.name!r} input"
            if isinstance(trigger.input, str):
                self.check_trigger_text(trigger.input, ptr + "/input", what)
            elif isinstance(trigger.input, dict):
                for key, value in trigger.input.items():
                    key_ptr = ptr + "/input" + json_pointer([key])
                    if self.input_fields is not None and key not in self.input_fields:
                        self.add("unknown_input_field", key_ptr, f"{what} sets {key!r}, but the input schema has no "
                                 f"property {key!r}{suggest(key, self.input_fields)}")
                    self.check_trigger_value(value, key_ptr, what)

    def check_trigger_value(self, value: object, ptr: str, what: str) -> None:
        if isinstance(value, str):
            self.check_trigger_text(value, ptr, what)
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_trigger_value(item, ptr + json_pointer([key]), what)
        elif isinstance(value, list):
            for j, item in enumerate(value):
                self.check_trigger_value(item, f"{ptr}/{j}", what)

    def check_trigger_text(self, text: str, ptr: str, what: str) -> None:
        """A trigger's template: it runs before the run exists, so it sees ``payload`` and ``headers`` only."""
        if "{" not in text:
            return
        try:
            refs = references(text)
        except TemplateError as exc:
            self.add("template_syntax", ptr, f"{what}: {exc}")
            return
        reported: set[str] = set()
        for name, _ in refs:
            if name not in TRIGGER_SCOPE and name not in reported:
                reported.add(name)
                self.add("unknown_variable", ptr, f"{what} uses `{name}`, but a trigger's templates see only "
                         f"`payload` (the JSON body) and `headers`{suggest(name, TRIGGER_SCOPE)}",
                         rf"(?<![\w.]){re.escape(name)}\b")

    # -- templates and expressions -----------------------------------------------------------------

    def check_level_names(self, level: Level) -> None:
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
                         f"key{suggest(attr, self.spec.state)} (state keys: {declared})",
                         rf"\bstate\s*(\.\s*{re.escape(attr)}\b|\[\s*['\"]{re.escape(attr)}['\"])")
            elif name == "input" and attr is not None and self.input_fields is not None \
                    and attr not in self.input_fields:
                self.add("unknown_input_field", ptr, f"{what} reads `input.{attr}`, but the input schema has no "
                         f"property {attr!r}{suggest(attr, self.input_fields)}",
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
        return f"which is not `input`, `state`, a node id or a bound variable{suggest(name, names)}"


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
            choice = node.tool_choice
            if choice not in ("auto", "required", "none") and choice not in node.tools \
                    and not any(t.startswith("mcp:") or t in BUILTIN_GROUPS for t in node.tools):
                self.c.add("unknown_tool", self.ptr + "/tool_choice",
                           f"{self.what} has tool_choice {choice!r}, which is none of auto, required, none and not "
                           f"one of its tools{suggest(choice, node.tools)}")
        elif isinstance(node, ToolNode):
            self.tool(node.tool, "/tool")
            self.nested(node.args, "/args")
            self.arguments(node)
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
                           f"{node.workflow!r}, which is not registered{suggest(node.workflow, self.c.workflows)}")
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
                           f"under `state`{suggest(key, state)}")

    def regex(self, pattern: str) -> None:
        try:
            re.compile(pattern)
        except re.error as exc:
            self.c.add("invalid_regex", self.ptr + "/regex", f"{self.what} regex {pattern!r} does not compile: "
                       f"{exc.msg} at position {exc.pos}")

    def tool(self, name: str, key: str) -> None:
        if self.c.tools is not None and name not in self.c.tools:
            self.c.add("unknown_tool", self.ptr + key,
                       f"{self.what} uses tool {name!r}, which is not registered{suggest(name, self.c.tools)}")

    def arguments(self, node: ToolNode) -> None:
        """The argument names against the tool's parameters, when the tool itself is known. Values are
        templates, rendered at run time, so only the names are checked."""
        tool = tool_of(self.c.tools, node.tool)
        if tool is None:
            return
        accepted, required = argument_names(tool)
        takes = f"it takes {', '.join(sorted(accepted)) or 'none'}" if accepted is not None else ""
        if accepted is not None:
            for name in node.args:
                if name not in accepted:
                    self.c.add("unknown_argument", self.ptr + "/args" + json_pointer([name]),
                               f"{self.what}: tool {node.tool!r} has no argument {name!r}{suggest(name, accepted)}; "
                               f"{takes}")
        missing = sorted(required - set(node.args))
        if missing:
            self.c.add("missing_argument", self.ptr + "/args", f"{self.what}: tool {node.tool!r} needs argument(s) "
                       f"{', '.join(missing)}, which `args` does not give" + (f"; {takes}" if takes else ""))


class _GraphCheck:
    """One level's graph: references to nodes, reachability from ``start``, cycles, edges out of ``end``."""

    def __init__(self, checker: _Checker, level: Level):
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
        for j, name in enumerate(level.start or []):
            first = (level.start or []).index(name)
            if first < j:
                self.c.add("invalid_value", f"{level.pointer}/start/{j}", f"`start` in {level.label} names {name!r} "
                           f"twice (also at {level.pointer}/start/{first}); each entry node runs once")
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
            hint = suggest(name, self.ids)
            close = closest(name, self.ids)
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


def _semantic(spec: WorkflowSpec, tools: Collection[str] | None, workflows: KnownWorkflows | None) -> list[_Found]:
    return _Checker(spec, tools, workflows).run()


def validate_spec(spec: WorkflowSpec, *, tools: Collection[str] | None = None,
                  workflows: KnownWorkflows | None = None) -> list[ValidationIssue]:
    """The semantic checks on a built spec. ``tools``, when given: the known tool names, or a ``ToolRegistry``
    (arguments are then checked too); ``workflows``: the known workflow names or specs (see module doc)."""
    return [found.issue for found in _semantic(spec, tools, workflows)]


def check(spec: WorkflowSpec, *, tools: Collection[str] | None = None,
          workflows: KnownWorkflows | None = None) -> WorkflowSpec:
    """``spec`` itself, or :class:`WorkflowValidationError` listing every semantic problem."""
    issues = validate_spec(spec, tools=tools, workflows=workflows)
    if issues:
        raise WorkflowValidationError(issues)
    return spec


def workflow_cycles(spec: WorkflowSpec, workflows: KnownWorkflows) -> list[ValidationIssue]:
    """Only the ``workflow_cycle`` check: ``spec``'s workflow nodes whose calls, followed through the specs in
    ``workflows``, come back to a workflow already calling."""
    checker = _Checker(spec, None, workflows)
    checker.check_calls()
    return [found.issue for found in checker.found]


def validate_data(data: object, *, locate: Locate | None = None, tools: Collection[str] | None = None,
                  workflows: KnownWorkflows | None = None,
                  locate_text: LocateText | None = None) -> tuple[WorkflowSpec | None, list[ValidationIssue]]:
    """Validate plain data (parsed YAML/JSON): ``(spec, [])`` when valid, else ``(None, every issue)``.

    Structural errors are all reported; the semantic checks run only when the structure is valid.
    ``locate`` adds line and column to each issue from its pointer; ``locate_text`` (optional) places
    a problem inside a multi-line template more precisely.
    """
    problem = json_problem(data)
    if not isinstance(data, dict):
        found = [_Found(ValidationIssue(code="wrong_type", message="a workflow must be a mapping (name, nodes, "
                                        f"edges, ...), got {describe_value(data)}"))]
        spec = None
    elif problem is not None:  # a workflow is stored and served as JSON: .inf, .nan and broken strings cannot be
        found = [_Found(ValidationIssue(code="not_json", pointer=problem[0], message=problem[1]))]
        spec = None
    else:
        try:
            spec = WorkflowSpec.model_validate(data, by_alias=True, by_name=False)  # YAML names only
        except ValidationError as exc:
            found = [_Found(issue) for issue in structure_issues(data, exc)]
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


__all__ = ["KnownWorkflows", "Locate", "LocateText", "check", "json_pointer", "validate_data",
           "validate_spec", "workflow_cycles"]
