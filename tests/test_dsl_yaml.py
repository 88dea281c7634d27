"""The YAML front end: the invalid-workflow corpus, line numbers, valid examples, the JSON Schema."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.ir import (
    AgentNode,
    EndNode,
    InterruptNode,
    LLMNode,
    LoopNode,
    MapNode,
    ParallelNode,
    SwitchNode,
    ToolNode,
    Trigger,
    WorkflowNode,
    WorkflowSpec,
)
from agentflow.dsl.schema import workflow_json_schema
from agentflow.dsl.yaml_loader import load_workflow, load_yaml, validate_yaml

ROOT = Path(__file__).resolve().parents[1]
CORPUS = sorted((ROOT / "tests" / "invalid_yaml").glob("*.yaml"))
TOOLS = {"web_search", "http_get", "calculator", "read_file", "send_email", "fetch_url", "sql_query"}
WORKFLOWS = {"summarize", "translate", "triage"}
EXPECT = re.compile(r"^# expect: (?P<code>[a-z_]+) (?P<line>\d+)$", re.MULTILINE)
STRUCTURAL = {"yaml_syntax", "duplicate_key", "missing_field", "unknown_field", "missing_kind", "unknown_kind",
              "wrong_type", "invalid_value", "prompt_or_messages", "conflicting_constraints", "expression_or_prompt"}
CODES = {  # every code docs/workflow-yaml.md documents, except too_large (tested below)
    "yaml_syntax", "duplicate_key", "missing_field", "unknown_field", "missing_kind", "unknown_kind", "wrong_type",
    "invalid_value", "prompt_or_messages", "conflicting_constraints", "expression_or_prompt", "duplicate_id",
    "unknown_node", "unreachable", "cycle", "edge_from_end", "unknown_variable", "unknown_state_key",
    "unknown_input_field", "template_syntax", "invalid_schema", "invalid_regex", "unknown_tool", "unknown_workflow",
    "duplicate_trigger", "workflow_cycle",
}


def expectations(path: Path) -> set[tuple[str, int]]:
    return {(m["code"], int(m["line"])) for m in EXPECT.finditer(path.read_text())}


# -- the invalid corpus ----------------------------------------------------------------------------


def test_corpus_is_large_and_covers_every_code_several_times() -> None:
    assert len(CORPUS) >= 55
    counts: dict[str, int] = {}
    for path in CORPUS:
        assert path.read_text().startswith("# expect: "), path.name
        for code, _ in expectations(path):
            counts[code] = counts.get(code, 0) + 1
    assert set(counts) == CODES
    assert {code for code, n in counts.items() if n < 2} == set()


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_invalid_corpus_reports_expected_code_at_expected_line(path: Path) -> None:
    issues = validate_yaml(path.read_text(), source=str(path), tools=TOOLS, workflows=WORKFLOWS)
    assert {(i.code, i.line) for i in issues} == expectations(path), "\n".join(map(str, issues))
    assert all(i.column is not None and i.column >= 1 for i in issues)
    with pytest.raises(WorkflowValidationError) as caught:
        load_yaml(path.read_text(), source=path.name, tools=TOOLS, workflows=WORKFLOWS)
    assert caught.value.issues == issues
    assert caught.value.source == path.name
    assert path.name in str(caught.value)


MANY_MISTAKES = """\
name: many-mistakes
state:
  notes: {type: array, reducer: append}
nodes:
  - id: plan
    kind: llm
    prompt: "Plan {{ input.topic }} with {{ state.nots }}"
  - id: search
    kind: tool
    tool: web_search
    args: {query: "{{ plann }}"}
  - id: search
    kind: llm
    prompt: "again"
  - id: orphan
    kind: llm
    prompt: "{{ item }}"
  - id: stop
    kind: end
edges:
  - {from: plan, to: search}
  - {from: search, to: serch_results}
  - {from: stop, to: plan}
"""


def test_all_problems_are_reported_at_once() -> None:
    issues = validate_yaml(MANY_MISTAKES, tools={"calculator"})
    found = {(i.code, i.line, i.pointer) for i in issues}
    assert found == {
        ("unknown_state_key", 7, "/nodes/0/prompt"),
        ("unknown_tool", 10, "/nodes/1/tool"),
        ("unknown_variable", 11, "/nodes/1/args/query"),
        ("duplicate_id", 12, "/nodes/2/id"),
        ("unknown_variable", 17, "/nodes/3/prompt"),
        ("unreachable", 15, "/nodes/3/id"),
        ("unreachable", 18, "/nodes/4/id"),
        ("unknown_node", 22, "/edges/1/to"),
        ("edge_from_end", 23, "/edges/2/from"),
    }
    assert [i.line for i in issues] == sorted(i.line or 0 for i in issues)


def test_structural_errors_are_all_reported_too() -> None:
    text = ("name: x\nnodes:\n  - {id: a, kind: llm, promt: hi}\n  - {id: b, kind: tool}\n  - {id: c, kind: lmm}\n"
            "  - {id: d}\nedges:\n  - {from: a}\n")
    assert [(i.code, i.line, i.pointer) for i in validate_yaml(text)] == [
        ("unknown_field", 3, "/nodes/0/promt"),
        ("missing_field", 4, "/nodes/1/tool"),
        ("unknown_kind", 5, "/nodes/2/kind"),
        ("missing_kind", 6, "/nodes/3/kind"),
        ("missing_field", 8, "/edges/0/to"),
    ]


# -- positions and pointers -------------------------------------------------------------------------


def issue(text: str, **kw: Any) -> ValidationIssue:
    issues = validate_yaml(text, **kw)
    assert len(issues) == 1, issues
    return issues[0]


def test_pointer_strips_union_tag_and_uses_yaml_field_names() -> None:
    found = issue("name: x\nnodes:\n  - id: a\n    kind: interrupt\n    schema: 5\n")
    assert (found.code, found.pointer, found.line, found.column) == ("wrong_type", "/nodes/0/schema", 5, 5)
    found = issue("name: x\nnodes:\n  - {id: a, kind: end}\nedges:\n  - {from: 1, to: a}\n")
    assert (found.code, found.pointer, found.line, found.column) == ("wrong_type", "/edges/0/from", 5, 6)


def test_pointer_escapes_slash_and_tilde_in_keys() -> None:
    text = ("name: x\nnodes:\n  - id: s\n    kind: switch\n    expression: input.path\n    cases:\n"
            "      a/b~c: ghost\n")
    found = issue(text)
    assert (found.code, found.pointer, found.line, found.column) == ("unknown_node", "/nodes/0/cases/a~1b~0c", 7, 7)


def test_template_problem_is_located_inside_a_block_scalar() -> None:
    text = "name: x\nnodes:\n  - id: a\n    kind: llm\n    prompt: |\n      Hello\n        and {{ nobody }}\n"
    found = issue(text)
    assert (found.code, found.line, found.column) == ("unknown_variable", 7, 16)


def test_missing_field_points_at_the_object_that_lacks_it() -> None:
    found = issue("name: x\nnodes:\n  - id: a\n    kind: map\n    over: input.items\n")
    assert (found.code, found.pointer, found.line, found.column) == ("missing_field", "/nodes/0/body", 3, 5)


def test_duplicate_key_points_at_the_second_key() -> None:
    issues = validate_yaml("name: x\nnodes:\n  - id: a\n    kind: llm\n    prompt: a\n    prompt: b\n")
    assert [(i.code, i.line, i.column, i.pointer) for i in issues] == [("duplicate_key", 6, 5, "/nodes/0/prompt")]
    assert "first at line 5" in issues[0].message


def test_top_level_must_be_a_mapping() -> None:
    assert [(i.code, i.line) for i in validate_yaml("- a\n- b\n")] == [("wrong_type", 1)]
    assert [(i.code, i.line) for i in validate_yaml("")] == [("wrong_type", 1)]
    assert [i.code for i in validate_yaml("just text")] == ["wrong_type"]


# -- the YAML reader ---------------------------------------------------------------------------------


def test_python_tags_are_refused_as_yaml_syntax() -> None:
    for text in ("name: !!python/object:os.system {}\nnodes: []\n",
                 "name: x\nnodes:\n  - !!python/object/apply:os.system [echo]\n",
                 "name: !!python/name:os.system\n",
                 "name: !!binary aGk=\n"):
        found = issue(text)
        assert found.code == "yaml_syntax" and "unsupported tag" in found.message


def test_syntax_error_has_line_and_column() -> None:
    found = issue("name: x\nnodes:\n  - id: a\n    kind: llm\n    prompt: [unclosed\n")
    assert found.code == "yaml_syntax" and found.line is not None and found.line >= 5


def test_unclosed_quote_points_at_its_opening() -> None:
    found = issue('name: x\nnodes:\n  - id: a\n    kind: llm\n    prompt: "Hello\n')
    assert (found.code, found.line, found.column) == ("yaml_syntax", 5, 13)


def test_keys_are_strings_as_written() -> None:
    text = ("name: x\nnodes:\n  - id: s\n    kind: switch\n    expression: input.answer\n"
            "    cases: {yes: a, no: b, on: a, 1: b}\n  - {id: a, kind: end}\n  - {id: b, kind: end}\n")
    spec = load_yaml(text)
    switch = spec.nodes[0]
    assert isinstance(switch, SwitchNode)
    assert switch.cases == {"yes": "a", "no": "b", "on": "a", "1": "b"}


def test_anchors_and_merge_keys() -> None:
    text = """\
name: anchors
defaults: &base
  sampling: &cold {temperature: 0}
nodes:
  - id: a
    kind: llm
    prompt: one
    sampling: *cold
  - <<: {kind: llm, sampling: {temperature: 1}}
    id: b
    prompt: two
edges: [{from: a, to: b}]
"""
    spec = load_yaml(text)
    a, b = spec.nodes
    assert isinstance(a, LLMNode) and isinstance(b, LLMNode)
    assert a.sampling is not None and a.sampling.temperature == 0
    assert b.sampling is not None and b.sampling.temperature == 1
    assert spec.defaults.sampling.temperature == 0


def test_recursive_alias_and_alias_bombs_are_refused() -> None:
    assert issue("name: &a [*a]\n").code == "yaml_syntax"
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6))
    found = issue(bomb)
    assert found.code == "too_large"


def test_validate_yaml_never_raises_for_garbage() -> None:
    for text in ("\x00\x01", "{", "]", "%YAML 9.9\n---\na: 1", "a: *nowhere", "? [a, b]\n: c\n", "\t\t"):
        issues = validate_yaml(text)
        assert issues and all(isinstance(i, ValidationIssue) and i.line for i in issues)


# -- files -----------------------------------------------------------------------------------------


def test_load_workflow_reads_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(VALID["llm"])
    data = yaml.safe_load(VALID["llm"])
    (tmp_path / "a.json").write_text(json.dumps(data, indent=2))
    assert load_workflow(tmp_path / "a.yml") == load_workflow(str(tmp_path / "a.json"))


def test_load_workflow_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=r"workflow file not found: .*nope\.yaml"):
        load_workflow(missing)
    with pytest.raises(ValueError, match=r"\.yaml, \.yml or \.json"):
        load_workflow(tmp_path / "flow.txt")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x",\n "nodes": [\n  {"id": "a", "kind": "llm", "prompt": "{{ ghost }}"}]}')
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(bad)
    assert caught.value.source == str(bad)
    assert [(i.code, i.line) for i in caught.value.issues] == [("unknown_variable", 3)]
    assert str(bad) in str(caught.value)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: x\n\xff\xfe")
    with pytest.raises(WorkflowValidationError) as caught:
        load_workflow(binary)
    assert [(i.code, i.line) for i in caught.value.issues] == [("yaml_syntax", 2)]


# -- valid examples, one per node kind ---------------------------------------------------------------

VALID: dict[str, str] = {
    "llm": """\
name: classify-ticket
input:
  type: object
  properties: {ticket: {type: string}}
defaults:
  model: small
  sampling: {temperature: 0.1}
nodes:
  - id: classify
    kind: llm
    system: You sort tickets.
    prompt: "Classify: {{ input.ticket }}"
    choices: [billing, bug]
    sampling: {max_tokens: 4}
    timeout: 30
    retry: {max_attempts: 2}
output: classify
""",
    "tool": """\
name: fetch
nodes:
  - id: fetch
    kind: tool
    tool: http_get
    args:
      url: "{{ input.url }}"
      headers: {accept: application/json}
      tries: [1, 2]
""",
    "agent": """\
name: research
nodes:
  - id: researcher
    kind: agent
    messages:
      - {role: system, content: You research.}
      - {role: user, content: "Find papers on {{ input.topic }}"}
    tools: [web_search, fetch_url]
    max_steps: 12
""",
    "switch": """\
name: route
nodes:
  - id: route
    kind: switch
    expression: "'long' if input.text | length > 100 else 'short'"
    cases: {long: summarize, short: done}
    default: done
  - {id: summarize, kind: llm, prompt: "Summarise {{ input.text }}"}
  - {id: done, kind: end}
""",
    "parallel": """\
name: both
nodes:
  - id: both
    kind: parallel
    branches:
      a:
        nodes: [{id: a1, kind: llm, prompt: "a {{ input.x }}"}]
      b:
        nodes:
          - {id: b1, kind: tool, tool: calculator, args: {expression: "1+1"}}
          - {id: b2, kind: llm, prompt: "{{ b1 }}"}
        edges: [{from: b1, to: b2}]
        output: b2
  - {id: join, kind: llm, prompt: "{{ both.a }} {{ both.b }}"}
edges: [{from: both, to: join}]
""",
    "map": """\
name: per-item
state:
  seen: {type: array, reducer: append}
nodes:
  - id: each
    kind: map
    over: input['items']
    concurrency: 3
    body:
      nodes:
        - id: echo
          kind: llm
          prompt: "{{ index }}: {{ item }}"
          writes: seen
""",
    "loop": """\
name: refine
nodes:
  - id: refine
    kind: loop
    max_iterations: 4
    condition: "grade.score < 8 and iteration < 3"
    body:
      nodes:
        - {id: write, kind: llm, prompt: "Improve {{ last }}"}
        - {id: grade, kind: llm, prompt: "Grade {{ write }}", output_schema: {type: object}}
      edges: [{from: write, to: grade}]
""",
    "workflow": """\
name: caller
nodes:
  - id: sub
    kind: workflow
    workflow: translate
    input: {text: "{{ input.text }}", target: de}
""",
    "interrupt": """\
name: approval
nodes:
  - id: approve
    kind: interrupt
    prompt: "Approve {{ input.amount }}?"
    schema:
      type: object
      properties: {approved: {type: boolean}}
  - {id: after, kind: llm, prompt: "Approved: {{ approve.approved }}"}
edges: [{from: approve, to: after}]
""",
    "end": """\
name: ending
nodes:
  - {id: first, kind: llm, prompt: hi, writes: {last_greeting: output}}
  - {id: stop, kind: end}
state:
  last_greeting: {type: string, default: ""}
edges: [{from: first, to: stop}]
output: {greeting: state.last_greeting}
""",
    "triggers": """\
name: on-push
input:
  type: object
  required: [repo, commits]
  properties:
    repo: {type: string}
    commits: {type: integer}
    event: {type: string}
nodes:
  - {id: count, kind: tool, tool: calculator, args: {expression: "{{ input.commits }} * 2"}}
triggers:
  - name: github-push
    secret_env: GITHUB_WEBHOOK_SECRET
    scheme: github
    tenant: acme
    input:
      repo: "{{ payload.repository.full_name }}"
      commits: "{{ payload.commits | length }}"
      event: "{{ headers['x-github-event'] }}"
  - name: ci_done
    secret_env: CI_WEBHOOK_SECRET
    description: the whole payload is the input
  - {name: rebuild, secret_env: CI_WEBHOOK_SECRET, input: "{{ {'repo': payload.repo, 'commits': 0} }}"}
""",
}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_valid_examples_have_no_issues(kind: str) -> None:
    assert validate_yaml(VALID[kind], tools=TOOLS, workflows=WORKFLOWS) == []


def test_llm_example() -> None:
    spec = load_yaml(VALID["llm"])
    node = spec.nodes[0]
    assert isinstance(node, LLMNode)
    assert (node.id, node.system, node.prompt, node.choices) == ("classify", "You sort tickets.",
                                                                  "Classify: {{ input.ticket }}", ["billing", "bug"])
    assert node.sampling is not None and node.sampling.max_tokens == 4
    assert node.timeout == 30 and node.retry is not None and node.retry.max_attempts == 2
    assert spec.defaults.model == "small" and spec.defaults.sampling.temperature == 0.1
    assert spec.output == "classify" and spec.input["properties"] == {"ticket": {"type": "string"}}


def test_tool_and_agent_examples() -> None:
    tool = load_yaml(VALID["tool"]).nodes[0]
    assert isinstance(tool, ToolNode)
    assert tool.tool == "http_get"
    assert tool.args == {"url": "{{ input.url }}", "headers": {"accept": "application/json"}, "tries": [1, 2]}
    agent = load_yaml(VALID["agent"]).nodes[0]
    assert isinstance(agent, AgentNode)
    assert agent.tools == ["web_search", "fetch_url"] and agent.max_steps == 12
    assert agent.messages is not None and [m.role for m in agent.messages] == ["system", "user"]


def test_switch_example() -> None:
    spec = load_yaml(VALID["switch"])
    switch, summarize, done = spec.nodes
    assert isinstance(switch, SwitchNode) and isinstance(summarize, LLMNode) and isinstance(done, EndNode)
    assert switch.cases == {"long": "summarize", "short": "done"} and switch.default == "done"
    assert switch.expression is not None and switch.expression.startswith("'long'")


def test_parallel_example() -> None:
    spec = load_yaml(VALID["parallel"])
    both = spec.nodes[0]
    assert isinstance(both, ParallelNode)
    assert list(both.branches) == ["a", "b"]
    branch_b = both.branches["b"]
    assert [n.id for n in branch_b.nodes] == ["b1", "b2"] and branch_b.output == "b2"
    assert [(e.source, e.target) for e in branch_b.edges] == [("b1", "b2")]
    assert [(e.source, e.target) for e in spec.edges] == [("both", "join")]


def test_map_and_loop_examples() -> None:
    spec = load_yaml(VALID["map"])
    each = spec.nodes[0]
    assert isinstance(each, MapNode)
    assert (each.over, each.concurrency, each.body.nodes[0].writes) == ("input['items']", 3, "seen")
    assert spec.state["seen"].reducer == "append"
    loop = load_yaml(VALID["loop"]).nodes[0]
    assert isinstance(loop, LoopNode)
    assert loop.max_iterations == 4 and loop.condition.startswith("grade.score")
    assert [n.id for n in loop.body.nodes] == ["write", "grade"]


def test_workflow_interrupt_and_end_examples() -> None:
    sub = load_yaml(VALID["workflow"], workflows=WORKFLOWS).nodes[0]
    assert isinstance(sub, WorkflowNode)
    assert sub.workflow == "translate" and sub.input == {"text": "{{ input.text }}", "target": "de"}
    approve = load_yaml(VALID["interrupt"]).nodes[0]
    assert isinstance(approve, InterruptNode)
    assert approve.value_schema == {"type": "object", "properties": {"approved": {"type": "boolean"}}}
    spec = load_yaml(VALID["end"])
    assert isinstance(spec.nodes[1], EndNode)
    assert spec.nodes[0].writes == {"last_greeting": "output"}
    assert spec.output == {"greeting": "state.last_greeting"}


def test_triggers_example() -> None:
    spec = load_yaml(VALID["triggers"])
    push, done, rebuild = spec.triggers
    assert push == Trigger(name="github-push", secret_env="GITHUB_WEBHOOK_SECRET", scheme="github", tenant="acme",
                           input={"repo": "{{ payload.repository.full_name }}",
                                  "commits": "{{ payload.commits | length }}",
                                  "event": "{{ headers['x-github-event'] }}"})
    assert (done.scheme, done.tenant, done.input) == ("standard", "default", None)
    assert rebuild.input == "{{ {'repo': payload.repo, 'commits': 0} }}"
    assert spec.to_dict()["triggers"][1] == {"name": "ci_done", "secret_env": "CI_WEBHOOK_SECRET",
                                             "description": "the whole payload is the input"}
    assert load_yaml(yaml.safe_dump(spec.to_dict())) == spec
    assert "triggers" not in load_yaml(VALID["tool"]).to_dict()  # none: left out


def test_trigger_problems_have_pointers_and_positions() -> None:
    base = VALID["triggers"]
    found = issue(base.replace("name: ci_done", "name: github-push"), tools=TOOLS)
    assert (found.code, found.pointer, found.line, found.column) == ("duplicate_trigger", "/triggers/1/name", 20, 5)
    found = issue(base.replace("payload.repository", "state.repository"), tools=TOOLS)
    assert (found.code, found.pointer, found.line, found.column) == ("unknown_variable", "/triggers/0/input/repo",
                                                                     17, 17)
    assert "`payload`" in found.message and "`headers`" in found.message
    found = issue(base.replace("event: \"{{", "evnt: \"{{"), tools=TOOLS)
    assert (found.code, found.pointer) == ("unknown_input_field", "/triggers/0/input/evnt")
    found = issue(base.replace("payload.commits | length", "payload.commits | length }"), tools=TOOLS)
    assert (found.code, found.pointer) == ("template_syntax", "/triggers/0/input/commits")
    found = issue(base.replace("scheme: github", "scheme: gitlab"), tools=TOOLS)
    assert (found.code, found.pointer, found.line) == ("invalid_value", "/triggers/0/scheme", 14)
    found = issue(base.replace("name: rebuild", "name: re/build"), tools=TOOLS)
    assert (found.code, found.pointer) == ("invalid_value", "/triggers/2/name")
    found = issue(base.replace("secret_env: GITHUB_WEBHOOK_SECRET", "secret_env: 'GITHUB-SECRET'"), tools=TOOLS)
    assert (found.code, found.pointer) == ("invalid_value", "/triggers/0/secret_env")
    found = issue(base.replace("tenant: acme", "tenant: a c m e"), tools=TOOLS)
    assert (found.code, found.pointer) == ("invalid_value", "/triggers/0/tenant")
    listed = base.replace("input: \"{{ {'repo'", "input: [\"{{ {'repo'").replace("0} }}\"}", "0} }}\"]}")
    found = issue(listed, tools=TOOLS)
    assert (found.code, found.pointer) == ("wrong_type", "/triggers/2/input")
    found = issue(base.replace("  - name: ci_done\n    secret_env: CI_WEBHOOK_SECRET\n", "  - name: ci_done\n"),
                  tools=TOOLS)
    assert (found.code, found.pointer) == ("missing_field", "/triggers/1/secret_env")


def test_yaml_and_python_dicts_give_the_same_ir() -> None:
    spec = load_yaml(VALID["parallel"])
    assert spec == WorkflowSpec.model_validate(yaml.safe_load(VALID["parallel"]))
    assert load_yaml(yaml.safe_dump(spec.to_dict())) == spec


def test_documentation_examples_are_valid() -> None:
    text = (ROOT / "docs" / "workflow-yaml.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 10
    assert validate_yaml(blocks[0], tools=TOOLS) == []
    for block in blocks[1:]:  # snippets: structurally valid once placed in a workflow
        data = yaml.safe_load(block)
        if data is None:
            continue
        if isinstance(data, list):  # nodes
            text = "name: doc\nnodes:\n" + textwrap.indent(block, "  ")
        elif set(data) <= set(WorkflowSpec.model_fields):  # top-level fields
            text = "name: doc\nnodes: [{id: n, kind: end}]\n" + block
        else:  # node fields
            text = "name: doc\nnodes:\n  - id: n\n    kind: llm\n    prompt: x\n" + textwrap.indent(block, "    ")
        codes = {i.code for i in validate_yaml(text)}
        assert not codes & STRUCTURAL, (block, codes)


# -- the JSON Schema --------------------------------------------------------------------------------


def test_committed_schema_is_up_to_date() -> None:
    committed = json.loads((ROOT / "docs" / "workflow.schema.json").read_text())
    assert committed == workflow_json_schema(), "run: python -m agentflow.dsl.schema > docs/workflow.schema.json"


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = workflow_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("kind", sorted(VALID))
def test_schema_accepts_valid_examples(kind: str, schema_validator: jsonschema.Draft202012Validator) -> None:
    assert list(schema_validator.iter_errors(yaml.safe_load(VALID[kind]))) == []


@pytest.mark.parametrize("mutate", [
    lambda d: d["nodes"][0].update(kind="lmm"),
    lambda d: d["nodes"][0].update(promt="x"),
    lambda d: d["nodes"][0].pop("kind"),
    lambda d: d.pop("name"),
    lambda d: d.update(version=0),
    lambda d: d["nodes"][0].update(id="bad-id"),
    lambda d: d["nodes"][0].update(messages=[{"role": "user", "content": "x"}]),  # prompt and messages
    lambda d: d["nodes"][0].update(regex="a"),  # choices and regex
    lambda d: d.update(edges=[{"from": "classify"}]),
    lambda d: d.update(triggers=[{"name": "hook"}]),
    lambda d: d.update(triggers=[{"name": "hook", "secret_env": "S", "scheme": "gitlab"}]),
], ids=["unknown-kind", "unknown-field", "no-kind", "no-name", "version-0", "bad-id", "prompt-and-messages",
        "two-constraints", "edge-without-to", "trigger-without-secret", "trigger-unknown-scheme"])
def test_schema_rejects_invalid_documents(mutate: Any, schema_validator: jsonschema.Draft202012Validator) -> None:
    data = yaml.safe_load(VALID["llm"])
    mutate(data)
    assert list(schema_validator.iter_errors(data))
    assert validate_yaml(yaml.safe_dump(data))  # the loader agrees


def test_schema_module_prints_the_schema() -> None:
    from agentflow.dsl.schema import dumps

    assert json.loads(dumps()) == workflow_json_schema()
    assert dumps().endswith("}\n")
