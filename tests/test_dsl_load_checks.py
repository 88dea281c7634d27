"""Load-time checks that need what the caller knows (tool signatures, other workflows), and template
corners: workflow-call cycles, `start` duplicates, tool arguments, `$ref`s, unknown filters, dict keys
against dict methods, `missing_kind` naming its node, and directory discovery (duplicates, cycles, tools)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from agentflow import Workflow
from agentflow.discovery import load_workflows
from agentflow.dsl.errors import TemplateError, ValidationIssue, WorkflowValidationError
from agentflow.dsl.templates import evaluate, references, render
from agentflow.dsl.yaml_loader import load_workflow, load_yaml, validate_yaml
from agentflow.schemas import schema_error
from agentflow.tool import Tool, ToolRegistry


def only(text: str, **kw: Any) -> ValidationIssue:
    issues = validate_yaml(text, **kw)
    assert len(issues) == 1, issues
    return issues[0]


# -- workflow-call cycles -----------------------------------------------------------------------------

CALLER = """\
name: {name}
nodes:
  - id: call_{callee}
    kind: workflow
    workflow: {callee}
"""


def caller(name: str, callee: str) -> str:
    return CALLER.format(name=name, callee=callee)


def test_a_workflow_calling_itself_is_refused_even_without_the_registry() -> None:
    found = only(caller("selfrec", "selfrec"))
    assert (found.code, found.pointer, found.line) == ("workflow_cycle", "/nodes/0/workflow", 5)
    assert "node 'call_selfrec' runs workflow 'selfrec'" in found.message
    assert "selfrec -> selfrec" in found.message


def test_a_cycle_through_other_workflows_is_refused_when_their_specs_are_known() -> None:
    wb, wc = load_yaml(caller("wb", "wc")), load_yaml(caller("wc", "wb"))
    main = caller("main", "wb")
    found = only(main, workflows=[wb, wc])
    assert (found.code, found.pointer, found.line) == ("workflow_cycle", "/nodes/0/workflow", 5)
    assert "main -> wb -> wc -> wb" in found.message
    assert only(main, workflows={"wb": wb, "wc": wc}).message == found.message  # a mapping name -> spec
    back = only(caller("wb", "main"), workflows=[load_yaml(main)])  # wb -> main -> wb
    assert "wb -> main -> wb" in back.message
    assert validate_yaml(main, workflows=["wb", "wc"]) == []  # names only: nothing to follow (as before)
    with pytest.raises(WorkflowValidationError, match="workflow_cycle"):
        load_yaml(main, workflows=[wb, wc])


def test_the_spec_being_checked_replaces_a_known_one_of_the_same_name() -> None:
    old = load_yaml(caller("main", "wb"))  # e.g. the registered version 1 that called wb
    wb = load_yaml(caller("wb", "main"))
    assert validate_yaml("name: main\nnodes: [{id: n, kind: end}]\n", workflows=[old, wb]) == []


def test_the_builder_refuses_a_workflow_that_calls_itself() -> None:
    flow = Workflow("selfrec")
    flow.workflow("again", flow)
    with pytest.raises(WorkflowValidationError, match=r"workflow_cycle.*selfrec -> selfrec"):
        flow.build()


# -- start ------------------------------------------------------------------------------------------------


def test_a_node_named_twice_in_start_is_refused() -> None:
    found = only("name: twice\nstart: [a, b, a]\nnodes:\n  - {id: a, kind: end}\n  - {id: b, kind: end}\n")
    assert (found.code, found.pointer, found.line) == ("invalid_value", "/start/2", 2)
    assert "names 'a' twice (also at /start/0)" in found.message
    body = ("name: m\nnodes:\n  - id: each\n    kind: map\n    over: '[1]'\n    body:\n      start: [x, x]\n"
            "      nodes: [{id: x, kind: end}]\n")
    found = only(body)
    assert (found.code, found.pointer, found.line) == ("invalid_value", "/nodes/0/body/start/1", 7)


# -- tool arguments ---------------------------------------------------------------------------------------


def slow(seconds: float = 1.0, tag: str = "") -> str:
    return tag


def flaky(key: str, fails: int = 1) -> int:
    return fails


def anything(**kwargs: Any) -> Any:
    return kwargs


BAD_ARGS = """\
name: badargs
nodes:
  - id: s
    kind: tool
    tool: slow
    args: {seconds: "{{ input.n }}", tagg: 1}
  - id: f
    kind: tool
    tool: flaky
    args: {fails: 2}
  - id: k
    kind: tool
    tool: anything
    args: {whatever: 1}
edges: [{from: s, to: f}, {from: f, to: k}]
"""


def test_tool_argument_names_are_checked_when_the_tools_are_known() -> None:
    registry = ToolRegistry([slow, flaky, anything])
    issues = validate_yaml(BAD_ARGS, tools=registry)
    assert [(i.code, i.pointer, i.line) for i in issues] == [
        ("unknown_argument", "/nodes/0/args/tagg", 6),
        ("missing_argument", "/nodes/1/args", 10),
    ]
    assert "tool 'slow' has no argument 'tagg' (did you mean `tag`?); it takes seconds, tag" in issues[0].message
    assert "node 'f': tool 'flaky' needs argument(s) key" in issues[1].message
    assert validate_yaml(BAD_ARGS, tools={"slow": registry.get("slow"), "flaky": registry.get("flaky"),
                                          "anything": registry.get("anything")}) == issues  # a mapping name -> Tool
    assert validate_yaml(BAD_ARGS, tools={"slow", "flaky", "anything"}) == []  # names only: as before
    fixed = BAD_ARGS.replace("tagg: 1", "tag: \"{{ input.n }}\"").replace("{fails: 2}", "{key: a}")
    assert validate_yaml(fixed, tools=registry) == []


def test_builtin_tools_and_explicit_parameter_schemas_are_checked_too() -> None:
    strict = Tool(name="strict", fn=anything, parameters={"type": "object", "properties": {"q": {"type": "string"}},
                                                          "required": ["q"], "additionalProperties": False})
    registry = ToolRegistry([strict])
    text = ("name: b\nnodes:\n  - {id: c, kind: tool, tool: calculator, args: {expresion: '1+1'}}\n"
            "  - {id: s, kind: tool, tool: strict, args: {p: 1}}\nedges: [{from: c, to: s}]\n")
    found = {(i.code, i.pointer) for i in validate_yaml(text, tools=registry)}
    assert found == {("unknown_argument", "/nodes/0/args/expresion"), ("missing_argument", "/nodes/0/args"),
                     ("unknown_argument", "/nodes/1/args/p"), ("missing_argument", "/nodes/1/args")}


# -- $ref in schemas ----------------------------------------------------------------------------------------


def test_a_ref_that_does_not_resolve_is_an_invalid_schema() -> None:
    found = only("name: r\ninput:\n  type: object\n  properties:\n    a: {$ref: '#/$defs/nope'}\n"
                 "nodes: [{id: n, kind: end}]\n")
    assert (found.code, found.pointer, found.line) == ("invalid_schema", "/input/properties/a/$ref", 5)
    assert "`$ref` '#/$defs/nope' points to nothing in the schema" in found.message
    remote = only("name: r\ninput: {$ref: 'http://10.255.255.1/schema.json'}\nnodes: [{id: n, kind: end}]\n")
    assert (remote.code, remote.pointer) == ("invalid_schema", "/input/$ref")
    assert "remote references are not fetched" in remote.message
    interrupt = only("name: i\nnodes:\n  - {id: ask, kind: interrupt, schema: {$ref: '#/nope'}}\n")
    assert (interrupt.code, interrupt.pointer, interrupt.line) == ("invalid_schema", "/nodes/0/schema/$ref", 3)
    output = only("name: o\nnodes:\n  - id: l\n    kind: llm\n    prompt: hi\n    output_schema:\n"
                  "      items: {$ref: '#/$defs/x'}\n")
    assert (output.code, output.pointer, output.line) == ("invalid_schema", "/nodes/0/output_schema/items/$ref", 7)
    not_a_schema = only("name: r\ninput:\n  $defs: {d: {type: string}}\n  items: {$ref: '#/$defs/d/type'}\n"
                        "nodes: [{id: n, kind: end}]\n")
    assert (not_a_schema.code, not_a_schema.pointer) == ("invalid_schema", "/input/items/$ref")
    assert "points to string 'string', which is not a schema" in not_a_schema.message


def test_refs_that_resolve_are_accepted() -> None:
    text = """\
name: ok
input:
  type: object
  $defs:
    date: {type: string, format: date}
    nested: {$id: "https://example.com/nested.json", $defs: {n: {type: integer}}, $ref: "#/$defs/n"}
  properties:
    when: {$ref: "#/$defs/date"}
    count: {$ref: "https://example.com/nested.json#/$defs/n"}
    meta: {$ref: "https://json-schema.org/draft/2020-12/schema"}
    data: {const: {$ref: "#/not/a/schema"}}
nodes: [{id: n, kind: end}]
"""
    assert validate_yaml(text) == []


def test_schema_error_reports_an_unresolvable_ref_instead_of_raising() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}}
    pointer, message = schema_error(schema, {"a": 1}) or ("", "")
    assert pointer == "/" and "cannot be checked" in message and "/$defs/nope" in message
    pointer, message = schema_error({"$ref": "http://10.255.255.1/schema.json"}, 1) or ("", "")
    assert "http://10.255.255.1/schema.json" in message and "not fetched" in message
    assert schema_error({"$ref": "#/$defs/x", "$defs": {"x": {"type": "integer"}}}, 3) is None


# -- templates ------------------------------------------------------------------------------------------------


def test_an_unknown_filter_or_test_is_a_template_syntax_issue() -> None:
    found = only("name: g\nnodes:\n  - {id: x, kind: tool, tool: echo, args: {x: '{{ 1 | nosuchfilter }}'}}\n")
    assert (found.code, found.pointer, found.line) == ("template_syntax", "/nodes/0/args/x", 3)
    assert "No filter named 'nosuchfilter'" in found.message
    found = only("name: g\nnodes:\n  - id: s\n    kind: switch\n    expression: input is nosuchtest\n"
                 "    cases: {a: e}\n  - {id: e, kind: end}\n")
    assert (found.code, found.pointer, found.line) == ("template_syntax", "/nodes/0/expression", 5)
    assert "No test named 'nosuchtest'" in found.message
    with pytest.raises(TemplateError, match="nosuchfilter"):
        references("{{ 1 | nosuchfilter }}")


def test_a_dict_key_wins_over_a_dict_method_however_the_template_is_written() -> None:
    ns = {"a": {"items": [1, 2], "keys": "k", "get": 3}, "d": {"x": 1}}
    assert render("{{ a.items }}", ns) == [1, 2]
    assert render("n={{ a.items }}", ns) == "n=[1, 2]"
    assert render("{{ a.items | length }}", ns) == 2
    assert render("{{ a.keys }}/{{ a.get }}", ns) == "k/3"
    assert evaluate("a.items | length", ns) == 2
    assert render("{{ d.items() | list }}", ns) == [("x", 1)]  # no such key: still the method
    with pytest.raises(TemplateError):
        render("{{ d.__class__ }} x", ns)  # the sandbox still guards attributes


def test_constants_that_overflow_to_infinity_evaluate_like_the_same_values_from_the_state() -> None:
    # Jinja folds constant arithmetic at compile time and used to write the result as the bare name `inf`
    assert evaluate("1e308 * 10", {}) == math.inf == evaluate("x * 10", {"x": 1e308})
    assert evaluate("-1e308 * 10", {}) == -math.inf
    assert math.isnan(evaluate("1e308 * 10 - 1e308 * 10", {}))
    assert render("{{ 1e308 * 10 }}", {}) == math.inf
    assert render("a {{ 1e308 * 10 }} b", {}) == "a inf b"
    assert evaluate("1.5 * 2", {}) == 3.0


# -- structure -----------------------------------------------------------------------------------------------


def test_missing_kind_names_the_node_without_one() -> None:
    body = ("name: s\nnodes:\n  - id: p\n    kind: parallel\n    branches:\n      a:\n        nodes:\n"
            "          - {id: z, tool: echo}\n")
    found = only(body)
    assert (found.code, found.pointer, found.line) == ("missing_kind", "/nodes/0/branches/a/nodes/0/kind", 8)
    assert found.message.startswith("node 'z': node has no `kind`")
    found = only("name: s\nnodes:\n  - {id: a, kind: end}\n  - {id: z, tool: echo}\n")
    assert (found.code, found.pointer, found.line) == ("missing_kind", "/nodes/1/kind", 4)
    assert found.message.startswith("node 'z': ")


# -- discovery -------------------------------------------------------------------------------------------------


def test_load_workflows_skips_files_that_share_a_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for stem in ("a_child", "b_child"):
        (tmp_path / f"{stem}.yaml").write_text(f"name: child\nnodes: [{{id: x, kind: end}}]\n# {stem}\n")
    (tmp_path / "other.yaml").write_text("name: other\nnodes: [{id: x, kind: end}]\n")
    with caplog.at_level(logging.WARNING, logger="agentflow.discovery"):
        specs, dirs = load_workflows([tmp_path], skip=None)
    assert [s.name for s in specs] == ["other"] and dirs == [str(tmp_path.resolve())]
    assert str(tmp_path.resolve() / "a_child.yaml") in caplog.text
    assert str(tmp_path.resolve() / "b_child.yaml") in caplog.text and "named 'child'" in caplog.text


def test_load_workflows_skips_workflows_whose_calls_come_back(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "b.yaml").write_text(caller("wb", "wc"))
    (tmp_path / "c.yaml").write_text(caller("wc", "wb"))
    (tmp_path / "into.yaml").write_text(caller("into", "wb"))  # not on the cycle, but never ends either
    (tmp_path / "fine.yaml").write_text(caller("fine", "leaf"))
    (tmp_path / "leaf.yaml").write_text("name: leaf\nnodes: [{id: x, kind: end}]\n")
    (tmp_path / "main.yaml").write_text(caller("main", "wb"))
    with caplog.at_level(logging.WARNING, logger="agentflow.discovery"):
        specs, _ = load_workflows([tmp_path], skip=tmp_path / "main.yaml")
    assert sorted(s.name for s in specs) == ["fine", "leaf"]
    assert "wb -> wc -> wb" in caplog.text and "workflow_cycle" in caplog.text and "into.yaml" in caplog.text
    with pytest.raises(WorkflowValidationError, match="unknown_workflow"):  # main is refused before it runs
        load_workflow(tmp_path / "main.yaml", workflows=specs)


def test_load_workflows_checks_sub_workflow_tools_when_given(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "child.yaml").write_text("name: child2\nnodes:\n  - {id: nt, kind: tool, tool: no_such_tool}\n")
    (tmp_path / "args.yaml").write_text("name: args\nnodes:\n  - {id: s, kind: tool, tool: slow, args: {tagg: 1}}\n")
    (tmp_path / "good.yaml").write_text("name: good\nnodes:\n  - {id: s, kind: tool, tool: slow, args: {tag: x}}\n")
    assert len(load_workflows([tmp_path], skip=None)[0]) == 3  # tools unknown: names are not checked
    with caplog.at_level(logging.WARNING, logger="agentflow.discovery"):
        specs, _ = load_workflows([tmp_path], skip=None, tools=ToolRegistry([slow]))
    assert [s.name for s in specs] == ["good"]
    assert "child.yaml" in caplog.text and "unknown_tool" in caplog.text and "'no_such_tool'" in caplog.text
    assert "args.yaml" in caplog.text and "unknown_argument" in caplog.text
