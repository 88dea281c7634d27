"""Validation on plain data and built specs: every check's code and pointer, scopes, tools and workflows."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest

from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import WorkflowSpec
from agentflow.dsl.validate import check, json_pointer, validate_data, validate_spec


def llm(node_id: str, prompt: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"id": node_id, "kind": "llm", "prompt": prompt, **fields}


def chain(*ids: str) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in itertools.pairwise(ids)]


def wf(*nodes: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "t", "nodes": list(nodes), **fields}


def found(data: object, **kw: Any) -> list[tuple[str, str]]:
    spec, issues = validate_data(data, **kw)
    assert (spec is None) == bool(issues)
    return [(i.code, i.pointer) for i in issues]


def only(data: object, **kw: Any) -> ValidationIssue:
    _, issues = validate_data(data, **kw)
    assert len(issues) == 1, issues
    return issues[0]


# -- a valid workflow -------------------------------------------------------------------------------

COMPLEX: dict[str, Any] = {
    "name": "complex",
    "input": {"type": "object", "properties": {"topic": {"type": "string"}, "urls": {"type": "array"}}},
    "state": {"notes": {"type": "array", "reducer": "append", "default": []},
              "profile": {"type": "object", "reducer": "merge"},
              "score": {"type": "number", "default": 0}},
    "defaults": {"model": "m", "retry": {"max_attempts": 2}, "timeout": 30},
    "nodes": [
        llm("plan", "Plan {{ input.topic }} ({{ state.notes | length }} notes)", writes="notes"),
        {"id": "fetch", "kind": "map", "over": "input.urls", "body": {"nodes": [
            {"id": "get", "kind": "tool", "tool": "http_get", "args": {"url": "{{ item }}", "n": ["{{ index }}"]},
             "on_error": "skip"},
            llm("skip", "failed {{ error }} on {{ item }} after planning {{ plan }}"),
            llm("digest", "{{ get }}", writes={"notes": "output", "score": "state.score + 1"}),
        ], "edges": chain("get", "digest"), "output": "digest"}},
        {"id": "refine", "kind": "loop", "condition": "grade.score < 8 and iteration < 3", "body": {"nodes": [
            llm("write", "Improve {{ last }} using {{ fetch }} (round {{ iteration }})"),
            llm("grade", "Grade {{ write }}", output_schema={"type": "object"}),
        ], "edges": chain("write", "grade")}},
        {"id": "branches", "kind": "parallel", "branches": {
            "a": {"nodes": [{"id": "ask", "kind": "agent", "prompt": "{{ refine }}", "tools": ["web_search"]}]},
            "b": {"nodes": [{"id": "sub", "kind": "workflow", "workflow": "translate",
                             "input": {"text": "{{ refine.write }}"}}]},
        }},
        {"id": "route", "kind": "switch", "expression": "branches.a", "cases": {"ok": "done", "more": "human"},
         "default": "done"},
        {"id": "human", "kind": "interrupt", "prompt": "Check {{ branches.b }}",
         "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
        {"id": "done", "kind": "end"},
        llm("pick", "{{ human.ok }}", regex="yes|no", messages=None),
    ],
    "edges": [*chain("plan", "fetch", "refine", "branches", "route"), {"from": "human", "to": "pick"}],
    "output": {"notes": "state.notes", "final": "branches"},
}


def test_a_valid_complex_workflow_has_no_issues() -> None:
    spec, issues = validate_data(COMPLEX, tools={"http_get", "web_search"}, workflows={"translate"})
    assert issues == []
    assert isinstance(spec, WorkflowSpec) and spec.name == "complex"
    assert validate_spec(spec) == []
    assert check(spec) is spec


def test_check_raises_with_every_issue() -> None:
    spec = WorkflowSpec.model_validate(wf(llm("a", "{{ ghost }}"), llm("b"), llm("a")))
    with pytest.raises(WorkflowValidationError) as caught:
        check(spec)
    codes = [i.code for i in caught.value.issues]
    assert sorted(codes) == ["duplicate_id", "unknown_variable", "unreachable"]
    assert all(i.line is None for i in caught.value.issues)  # built specs have no source lines


def test_locate_adds_lines_and_columns() -> None:
    spec, issues = validate_data(wf(llm("a", "{{ ghost }}")), locate=lambda p: (len(p), 7))
    assert spec is None
    assert [(i.pointer, i.line, i.column) for i in issues] == [("/nodes/0/prompt", len("/nodes/0/prompt"), 7)]


# -- structure -------------------------------------------------------------------------------------


def test_structural_codes_and_pointers() -> None:
    data = wf(
        {"id": "a", "kind": "llm"},                                      # prompt_or_messages
        {"id": "b", "kind": "llm", "prompt": "x", "regex": "a", "choices": ["x"]},
        {"id": "c", "kind": "switch", "cases": {"x": "a"}},               # expression_or_prompt
        {"id": "d", "kind": "lmm"},
        {"id": "e"},
        {"id": "f", "kind": "tool", "tool": 5, "args": {}},
        {"id": "g", "kind": "interrupt", "schema": "nope"},
        {"id": "h-1", "kind": "end", "colour": "red"},
        edges=[{"from": "a"}], version=0,
    )
    assert sorted(found(data)) == sorted([
        ("prompt_or_messages", "/nodes/0"),
        ("conflicting_constraints", "/nodes/1"),
        ("expression_or_prompt", "/nodes/2"),
        ("unknown_kind", "/nodes/3/kind"),
        ("missing_kind", "/nodes/4/kind"),
        ("wrong_type", "/nodes/5/tool"),
        ("wrong_type", "/nodes/6/schema"),
        ("invalid_value", "/nodes/7/id"),
        ("unknown_field", "/nodes/7/colour"),
        ("missing_field", "/edges/0/to"),
        ("invalid_value", "/version"),
    ])


def test_discriminator_tag_equal_to_a_field_name_is_stripped() -> None:
    # the tool node's tag is "tool" and it has a field `tool`: the pointer names the field once
    data = wf({"id": "t", "kind": "tool", "tool": "x", "args": "not a dict"},
              {"id": "w", "kind": "workflow", "workflow": ["x"]})
    assert sorted(found(data)) == [("wrong_type", "/nodes/0/args"), ("wrong_type", "/nodes/1/workflow")]


def test_plain_unions_give_one_issue() -> None:
    assert found(wf(llm("a", writes=5))) == [("wrong_type", "/nodes/0/writes")]
    assert found(wf(llm("a", writes={"k": 5}))) == [("wrong_type", "/nodes/0/writes/k")]
    issue = only(wf(llm("a"), output=[1]))
    assert (issue.code, issue.pointer) == ("wrong_type", "/output")
    assert "a string" in issue.message and "a mapping of strings" in issue.message


def test_structural_messages_say_what_and_where() -> None:
    issue = only(wf(llm("summary", promt="x")))
    assert "node 'summary'" in issue.message and "`promt`" in issue.message and "`prompt`" in issue.message
    issue = only(wf({"id": "a", "kind": "lmm", "prompt": "x"}))
    assert "'lmm'" in issue.message and "llm" in issue.message
    issue = only(wf(llm("a", sampling={"temperature": "hot"})))
    assert (issue.code, issue.pointer) == ("wrong_type", "/nodes/0/sampling/temperature")
    assert "'hot'" in issue.message


def test_non_mapping_data_is_wrong_type() -> None:
    for data in ([1], "text", None, 3):
        issue = only(data)
        assert (issue.code, issue.pointer) == ("wrong_type", "")


def test_nested_structural_pointers() -> None:
    data = wf({"id": "m", "kind": "map", "over": "input.x", "body": {"nodes": [
        {"id": "p", "kind": "parallel", "branches": {"bad-name": {"nodes": [{"id": "q", "kind": "end", "x": 1}]}}},
    ]}})
    assert sorted(found(data)) == [
        ("invalid_value", "/nodes/0/body/nodes/0/branches/bad-name"),
        ("unknown_field", "/nodes/0/body/nodes/0/branches/bad-name/nodes/0/x"),
    ]


# -- graph -------------------------------------------------------------------------------------------


def test_duplicate_ids_across_levels() -> None:
    data = wf(llm("a"), {"id": "l", "kind": "loop", "condition": "false", "body": {"nodes": [llm("a")]}})
    data["edges"] = chain("a", "l")
    assert found(data) == [("duplicate_id", "/nodes/1/body/nodes/0/id")]


def test_unknown_node_in_every_kind_of_reference() -> None:
    data = wf(
        llm("a", on_error="ghost1"),
        {"id": "s", "kind": "switch", "expression": "a", "cases": {"x": "ghost2", "y": "b"}, "default": "ghost3"},
        llm("b"),
        edges=[{"from": "a", "to": "s"}, {"from": "ghost4", "to": "b"}], start=["a", "ghost5"],
    )
    assert sorted(found(data)) == sorted([
        ("unknown_node", "/nodes/0/on_error"),
        ("unknown_node", "/nodes/1/cases/x"),
        ("unknown_node", "/nodes/1/default"),
        ("unknown_node", "/edges/1/from"),
        ("unknown_node", "/start/1"),
    ])


def test_edges_cannot_cross_levels() -> None:
    data = wf(llm("a"), {"id": "l", "kind": "loop", "condition": "false", "body": {"nodes": [llm("inner")]}},
              edges=[*chain("a", "l"), {"from": "inner", "to": "a"}])
    issue = only(data)
    assert (issue.code, issue.pointer) == ("unknown_node", "/edges/1/from")
    assert "body of loop node 'l'" in issue.message


def test_unreachable_per_level_and_with_explicit_start() -> None:
    data = wf(llm("a"), llm("b"), {"id": "m", "kind": "map", "over": "input.x", "body": {
        "nodes": [llm("x"), llm("y"), llm("z")], "edges": chain("x", "y")}})
    data["edges"] = chain("a", "m")
    assert sorted(found(data)) == [("unreachable", "/nodes/1/id"), ("unreachable", "/nodes/2/body/nodes/2/id")]
    data = wf(llm("a"), llm("b"), start=["b"])
    assert found(data) == [("unreachable", "/nodes/0/id")]
    assert found(wf(llm("a"), llm("b"), start=["a", "b"])) == []


def test_switch_cases_and_on_error_make_nodes_reachable() -> None:
    data = wf({"id": "s", "kind": "switch", "expression": "input.k", "cases": {"x": "a"}, "default": "b"},
              llm("a", on_error="c"), llm("b"), llm("c"))
    assert found(data) == []


def test_typo_in_an_edge_does_not_also_report_its_node_unreachable() -> None:
    assert found(wf(llm("fetch"), llm("summarize"), edges=chain("fetch", "summarise"))) == [
        ("unknown_node", "/edges/0/to")]
    assert found(wf(llm("fetch"), llm("summarize"), edges=chain("fetchh", "summarize"))) == [
        ("unknown_node", "/edges/0/from")]


def test_empty_start_is_invalid() -> None:
    assert found(wf(llm("a"), start=[])) == [("invalid_value", "/start")]


def test_cycles_through_edges_cases_and_on_error() -> None:
    assert found(wf(llm("a"), llm("b"), edges=[*chain("a", "b"), {"from": "b", "to": "a"}])) == [
        ("cycle", "/edges/1/to")]
    self_case = wf({"id": "s", "kind": "switch", "expression": "input.k", "cases": {"again": "s", "done": "e"}},
                   {"id": "e", "kind": "end"})
    assert found(self_case) == [("cycle", "/nodes/0/cases/again")]
    on_error = wf(llm("a", on_error="a"))
    assert found(on_error) == [("cycle", "/nodes/0/on_error")]
    issue = only(wf(llm("a"), llm("b"), llm("c"), edges=[*chain("a", "b", "c"), {"from": "c", "to": "b"}]))
    assert issue.code == "cycle" and "b -> c -> b" in issue.message and "`loop`" in issue.message


def test_cycle_inside_a_branch() -> None:
    data = wf({"id": "p", "kind": "parallel", "branches": {"x": {
        "nodes": [llm("a"), llm("b")], "edges": [*chain("a", "b"), {"from": "b", "to": "a"}]}}})
    assert found(data) == [("cycle", "/nodes/0/branches/x/edges/1/to")]


def test_edge_from_end() -> None:
    data = wf(llm("a"), {"id": "stop", "kind": "end"}, llm("b"), edges=[*chain("a", "stop"), *chain("stop", "b")])
    assert found(data) == [("edge_from_end", "/edges/1/from")]


# -- names in templates and expressions -------------------------------------------------------------


def test_unknown_variable_in_every_templated_field() -> None:
    data = wf(
        llm("a", "{{ v1 }}", system="{{ v2 }}"),
        {"id": "b", "kind": "agent", "messages": [{"role": "user", "content": "{{ v3 }}"}]},
        {"id": "c", "kind": "tool", "tool": "t", "args": {"x": {"y": ["ok", "{{ v4 }}"]}}},
        {"id": "d", "kind": "workflow", "workflow": "w", "input": {"q": "{{ v5 }}"}},
        {"id": "e", "kind": "interrupt", "prompt": "{{ v6 }}"},
        {"id": "f", "kind": "switch", "prompt": "{{ v7 }}", "cases": {"x": "g"}},
        {"id": "g", "kind": "switch", "expression": "v8", "cases": {"x": "h"}},
        {"id": "h", "kind": "map", "over": "v9", "body": {"nodes": [llm("i")], "output": "v10"}},
        {"id": "j", "kind": "loop", "condition": "v11", "body": {"nodes": [llm("k")]}},
        llm("z", writes={"s": "v12"}),
        edges=chain("a", "b", "c", "d", "e", "f"), state={"s": {}}, output={"out": "v13"},
    )
    data["edges"] += [*chain("h", "j", "z"), {"from": "e", "to": "h"}]
    assert sorted(found(data)) == sorted([
        ("unknown_variable", "/nodes/0/prompt"), ("unknown_variable", "/nodes/0/system"),
        ("unknown_variable", "/nodes/1/messages/0/content"), ("unknown_variable", "/nodes/2/args/x/y/1"),
        ("unknown_variable", "/nodes/3/input/q"), ("unknown_variable", "/nodes/4/prompt"),
        ("unknown_variable", "/nodes/5/prompt"), ("unknown_variable", "/nodes/6/expression"),
        ("unknown_variable", "/nodes/7/over"), ("unknown_variable", "/nodes/7/body/output"),
        ("unknown_variable", "/nodes/8/condition"), ("unknown_variable", "/nodes/9/writes/s"),
        ("unknown_variable", "/output/out"),
    ])


def test_jinja_locals_and_globals_are_not_unknown() -> None:
    prompt = ("{% for x in input.items %}{{ loop.index }} {{ x }}{% endfor %}{% set n = len(a) %}{{ n }}"
              "{{ range(3) | list }}{{ a | tojson }}")
    assert found(wf(llm("a"), llm("b", prompt), edges=chain("a", "b"))) == []


def test_map_body_sees_item_and_index_and_outer_nodes() -> None:
    body = {"nodes": [llm("inner", "{{ item }} {{ index }} {{ before }} {{ input.x }} {{ state }}")]}
    data = wf(llm("before"), {"id": "m", "kind": "map", "over": "before", "body": body}, edges=chain("before", "m"))
    assert found(data) == []
    issue = only(wf(llm("a", "{{ item }}")))
    assert issue.code == "unknown_variable" and "map body" in issue.message


def test_loop_body_and_condition_see_iteration_last_and_body_nodes() -> None:
    body = {"nodes": [llm("step", "{{ iteration }} {{ last }}")]}
    data = wf({"id": "l", "kind": "loop", "condition": "step and iteration < 3 and last", "body": body})
    assert found(data) == []
    data = wf({"id": "l", "kind": "loop", "condition": "true", "body": body}, llm("after", "{{ iteration }}"),
              edges=chain("l", "after"))
    assert found(data) == [("unknown_variable", "/nodes/1/prompt")]


def test_scope_variables_reach_nested_bodies() -> None:
    inner = {"id": "l", "kind": "loop", "condition": "false",
             "body": {"nodes": [llm("deep", "{{ item }} {{ iteration }} {{ outer }}")]}}
    data = wf(llm("outer"), {"id": "m", "kind": "map", "over": "outer", "body": {"nodes": [inner]}},
              edges=chain("outer", "m"))
    assert found(data) == []


def test_outer_cannot_see_inner_and_siblings_cannot_see_each_other() -> None:
    data = wf(
        {"id": "p", "kind": "parallel", "branches": {
            "a": {"nodes": [llm("in_a")]},
            "b": {"nodes": [llm("in_b", "{{ in_a }}")]},
        }},
        llm("after", "{{ in_b }} {{ p.a }}"),
        edges=chain("p", "after"),
    )
    assert sorted(found(data)) == [("unknown_variable", "/nodes/0/branches/b/nodes/0/prompt"),
                                   ("unknown_variable", "/nodes/1/prompt")]
    issue = only(wf(llm("x"), {"id": "m", "kind": "map", "over": "x", "body": {"nodes": [llm("y")]}},
                    llm("z", "{{ y }}"), edges=chain("x", "m", "z")))
    assert "body of map node 'm'" in issue.message and "not visible" in issue.message


def test_a_composite_node_is_not_visible_in_its_own_body() -> None:
    data = wf({"id": "m", "kind": "map", "over": "input.x", "body": {"nodes": [llm("y", "{{ m }}")]}})
    assert found(data) == [("unknown_variable", "/nodes/0/body/nodes/0/prompt")]


def test_error_only_in_on_error_targets_and_their_bodies() -> None:
    handler_body = {"id": "h", "kind": "map", "over": "error.items", "body": {"nodes": [llm("x", "{{ error }}")]}}
    data = wf(llm("a", on_error="h"), handler_body, llm("b", "{{ a }}"), edges=chain("a", "b"))
    assert found(data) == []
    data = wf(llm("a", on_error="h"), llm("h", "{{ error }}"), llm("b", "{{ error }}"), edges=chain("a", "b"))
    issue = only(data)
    assert (issue.code, issue.pointer) == ("unknown_variable", "/nodes/2/prompt") and "on_error" in issue.message


def test_output_only_in_writes_mappings() -> None:
    state = {"s": {"type": "string"}}
    assert found(wf(llm("a", writes={"s": "output | upper"}), state=state)) == []
    assert found(wf(llm("a", "{{ output }}", writes="s"), state=state)) == [("unknown_variable", "/nodes/0/prompt")]


def test_workflow_output_sees_top_level_nodes_only() -> None:
    data = wf(llm("a"), {"id": "m", "kind": "map", "over": "a", "body": {"nodes": [llm("inner")]}},
              edges=chain("a", "m"), output={"x": "a", "y": "m", "z": "inner"})
    assert found(data) == [("unknown_variable", "/output/z")]
    assert found(wf(llm("a"), output="a ~ input.q")) == []


def test_unknown_state_keys_in_templates_and_writes() -> None:
    state = {"doc": {"type": "string"}}
    data = wf(llm("a", "{{ state.doc }} {{ state.dco }} {{ state['other'] }}", writes="missing"),
              llm("b", writes={"doc": "output", "nope": "output"}), state=state, edges=chain("a", "b"))
    assert sorted(found(data)) == sorted([
        ("unknown_state_key", "/nodes/0/prompt"), ("unknown_state_key", "/nodes/0/prompt"),
        ("unknown_state_key", "/nodes/0/writes"), ("unknown_state_key", "/nodes/1/writes/nope"),
    ])
    messages = [i.message for i in validate_data(data)[1]]
    assert any("did you mean `doc`" in m for m in messages)


def test_unknown_input_field_only_when_properties_are_listed() -> None:
    schema = {"type": "object", "properties": {"topic": {"type": "string"}}}
    assert found(wf(llm("a", "{{ input.topic }} {{ input.topc }}"), input=schema)) == [
        ("unknown_input_field", "/nodes/0/prompt")]
    assert found(wf(llm("a", "{{ input.anything }}"))) == []
    assert found(wf({"id": "m", "kind": "map", "over": "input['urls']", "body": {"nodes": [llm("x")]}},
                    input=schema)) == [("unknown_input_field", "/nodes/0/over")]


def test_template_syntax_errors() -> None:
    data = wf(llm("a", "{{ state.x }"), {"id": "m", "kind": "map", "over": "{{ input.items }}",
                                           "body": {"nodes": [llm("x")]}}, edges=chain("a", "m"))
    assert found(data) == [("template_syntax", "/nodes/0/prompt"), ("template_syntax", "/nodes/1/over")]
    issue = validate_data(data)[1][1]
    assert "without {{ }}" in issue.message


# -- schemas, regex, state --------------------------------------------------------------------------


def test_invalid_schemas_point_inside_the_schema() -> None:
    data = wf(llm("a", output_schema={"type": "object", "properties": {"x": {"type": "strng"}}}),
              {"id": "i", "kind": "interrupt", "schema": {"minimum": "zero"}},
              input={"type": "object", "required": "topic"}, edges=chain("a", "i"))
    assert sorted(found(data)) == sorted([
        ("invalid_schema", "/nodes/0/output_schema/properties/x/type"),
        ("invalid_schema", "/nodes/1/schema/minimum"),
        ("invalid_schema", "/input/required"),
    ])


def test_schema_with_an_older_draft_is_checked_against_that_draft() -> None:
    draft4: dict[str, Any] = {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
              "properties": {"n": {"type": "integer", "exclusiveMinimum": True, "minimum": 0}}}
    assert found(wf(llm("a", output_schema=draft4))) == []
    draft4["properties"]["n"]["exclusiveMinimum"] = 0  # a number is draft 6+, not draft 4
    assert found(wf(llm("a", output_schema=draft4))) == [
        ("invalid_schema", "/nodes/0/output_schema/properties/n/exclusiveMinimum")]


def test_invalid_regex() -> None:
    issue = only(wf(llm("a", regex="[0-9+")))
    assert (issue.code, issue.pointer) == ("invalid_regex", "/nodes/0/regex")
    assert "unterminated character set" in issue.message
    assert found(wf(llm("a", regex=r"\d{4}-\d{2}"))) == []


def test_reducers_must_fit_the_type() -> None:
    state = {"a": {"type": "string", "reducer": "merge"}, "b": {"type": "object", "reducer": "append"},
             "c": {"type": "any", "reducer": "merge"}, "d": {"type": "array", "reducer": "append"},
             "e": {"type": "object", "reducer": "merge"}}
    assert sorted(found(wf(llm("x"), state=state))) == [("invalid_value", "/state/a/reducer"),
                                                         ("invalid_value", "/state/b/reducer")]


def test_state_defaults_must_match_the_type() -> None:
    state = {"a": {"type": "integer", "default": True}, "b": {"type": "number", "default": 2},
             "c": {"type": "array", "default": {}}, "d": {"type": "string", "default": None},
             "e": {"type": "any", "default": [1]}}
    assert sorted(found(wf(llm("x"), state=state))) == [("wrong_type", "/state/a/default"),
                                                         ("wrong_type", "/state/c/default")]


def test_reserved_node_ids() -> None:
    assert found(wf(llm("state"))) == [("invalid_value", "/nodes/0/id")]
    assert found(wf(llm("range"))) == [("invalid_value", "/nodes/0/id")]


# -- tools and workflows ------------------------------------------------------------------------------


def test_tools_are_checked_only_when_known() -> None:
    data = wf({"id": "t", "kind": "tool", "tool": "web_serch"},
              {"id": "a", "kind": "agent", "prompt": "x", "tools": ["calculator", "nope"]}, edges=chain("t", "a"))
    assert found(data) == []
    assert sorted(found(data, tools={"web_search", "calculator"})) == [("unknown_tool", "/nodes/0/tool"),
                                                                        ("unknown_tool", "/nodes/1/tools/1")]
    issue = validate_data(data, tools={"web_search", "calculator"})[1][0]
    assert "did you mean `web_search`" in issue.message


def test_workflows_are_checked_only_when_known() -> None:
    data = wf({"id": "w", "kind": "workflow", "workflow": "summarise"})
    assert found(data) == []
    assert found(data, workflows={"summarize"}) == [("unknown_workflow", "/nodes/0/workflow")]
    assert found(data, workflows=["summarise"]) == []


def test_validate_spec_matches_validate_data() -> None:
    data = copy.deepcopy(COMPLEX)
    data["nodes"][0]["prompt"] = "{{ state.missing }}"
    spec = WorkflowSpec.model_validate(data)
    assert [(i.code, i.pointer) for i in validate_spec(spec)] == found(data) == [
        ("unknown_state_key", "/nodes/0/prompt")]


def test_json_pointer_escapes() -> None:
    assert json_pointer(["nodes", 0, "a/b", "c~d"]) == "/nodes/0/a~1b/c~0d"
    assert json_pointer([]) == ""
