"""The Python builder: every node kind written both ways (builder and YAML) gives equal IR.

Each case in ``CASES`` is one node kind, built in Python and written in YAML; the two must be equal
specs, and the builder's ``to_yaml()`` must read back into the same spec. The remaining tests cover
the builder's own behaviour: ``>>`` wiring, tool functions, schemas from pydantic models, nesting,
and the errors it raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

import agentflow.dsl as dsl
from agentflow.dsl import (
    LLMNode,
    LoopNode,
    MapNode,
    NodeRef,
    ParallelNode,
    RetryPolicy,
    Sampling,
    Subgraph,
    SwitchNode,
    ToolNode,
    Workflow,
    WorkflowSpec,
    WorkflowValidationError,
    load_yaml,
)
from agentflow.dsl.ir import NODE_KINDS
from agentflow.tool import Tool, ToolRegistry, as_tool


def assert_same(built: WorkflowSpec, text: str) -> None:
    """``built`` equals the YAML ``text`` read by the YAML front end (dicts compared first, for a readable diff)."""
    parsed = load_yaml(text)
    assert built.to_dict() == parsed.to_dict()
    assert built == parsed


# -- tools used by the cases --------------------------------------------------------------------------


def fetch(url: str, headers: dict[str, str] | None = None) -> str:
    """Fetch a URL and return its body."""
    return ""


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression."""
    return 0.0


class Approval(BaseModel):
    approved: bool
    note: str = ""


APPROVAL_SCHEMA = """
      type: object
      title: Approval
      properties:
        approved: {title: Approved, type: boolean}
        note: {default: '', title: Note, type: string}
      required: [approved]
"""

# -- one case per node kind -----------------------------------------------------------------------------


def llm_case() -> Workflow:
    wf = Workflow("llm_kinds")
    wf.state("label", type="string")
    summarize = wf.llm("summarize", "Summarize {{ input.text }}", system="You are terse.", model="qwen",
                       temperature=0.2, max_tokens=200, stop="\n\n", description="one paragraph", timeout=30,
                       retry={"max_attempts": 3})
    label = wf.llm("label", messages=[{"role": "user", "content": "Label: {{ summarize }}"}], choices=["spam", "ham"],
                   writes="label")
    code = wf.llm("code", "A code for {{ state.label }}", regex=r"[A-Z]{3}-\d{4}", seed=7)
    extract = wf.llm("extract", "Extract the name from {{ input.text }}", sampling=Sampling(top_p=0.9), temperature=0,
                     output_schema={"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]})
    summarize >> label >> code >> extract
    return wf


LLM_YAML = r"""
name: llm_kinds
state:
  label: {type: string}
nodes:
  - id: summarize
    kind: llm
    description: one paragraph
    model: qwen
    system: You are terse.
    prompt: Summarize {{ input.text }}
    sampling: {temperature: 0.2, max_tokens: 200, stop: ["\n\n"]}
    timeout: 30
    retry: {max_attempts: 3}
  - id: label
    kind: llm
    messages:
      - {role: user, content: "Label: {{ summarize }}"}
    choices: [spam, ham]
    writes: label
  - id: code
    kind: llm
    prompt: A code for {{ state.label }}
    regex: '[A-Z]{3}-\d{4}'
    sampling: {seed: 7}
  - id: extract
    kind: llm
    prompt: Extract the name from {{ input.text }}
    sampling: {top_p: 0.9, temperature: 0}
    output_schema:
      type: object
      properties:
        name: {type: string}
      required: [name]
edges:
  - {from: summarize, to: label}
  - {from: label, to: code}
  - {from: code, to: extract}
"""


def tool_case() -> Workflow:
    wf = Workflow("tool_kinds")
    get = wf.tool("get", fetch, args={"url": "{{ input.url }}", "headers": {"accept": "text/html"}},
                  on_error="failed", retry=RetryPolicy(max_attempts=2, initial_delay=1))
    search = wf.tool("search", "web.search", {"query": "{{ get }}", "sites": ["{{ input.site }}", "example.org"]})
    wf.end("failed")
    get >> search
    return wf


TOOL_YAML = """
name: tool_kinds
nodes:
  - id: get
    kind: tool
    tool: fetch
    args:
      url: "{{ input.url }}"
      headers: {accept: text/html}
    on_error: failed
    retry: {max_attempts: 2, initial_delay: 1}
  - id: search
    kind: tool
    tool: web.search
    args:
      query: "{{ get }}"
      sites: ["{{ input.site }}", example.org]
  - id: failed
    kind: end
edges:
  - {from: get, to: search}
"""


def agent_case() -> Workflow:
    wf = Workflow("agent_kinds")
    solver = wf.agent("solver", "Solve {{ input.problem }}", tools=["web.search", calculator], max_steps=4,
                      model="qwen", system="Think step by step.", max_tokens=512)
    checker = wf.agent("checker", messages=[{"role": "system", "content": "You check answers."},
                                            {"role": "user", "content": "Check {{ solver }}"}])
    solver >> checker
    return wf


AGENT_YAML = """
name: agent_kinds
nodes:
  - id: solver
    kind: agent
    model: qwen
    system: Think step by step.
    prompt: Solve {{ input.problem }}
    tools: [web.search, calculator]
    max_steps: 4
    sampling: {max_tokens: 512}
  - id: checker
    kind: agent
    messages:
      - {role: system, content: You check answers.}
      - {role: user, content: "Check {{ solver }}"}
edges:
  - {from: solver, to: checker}
"""


def switch_case() -> Workflow:
    wf = Workflow("switch_kinds")
    grade = wf.llm("grade", "Grade {{ input.essay }}", choices=["good", "bad"])
    by_value = wf.switch("by_value", "grade", cases={"good": "praise", "bad": "triage"}, default="triage")
    wf.llm("praise", "Praise {{ input.essay }}")
    wf.switch("triage", prompt="Is {{ input.essay }} fixable?", cases={"yes": "fix", "no": "reject"}, model="judge",
              temperature=0, description="an LLM picks the case")
    wf.llm("fix", "Fix {{ input.essay }}")
    wf.end("reject")
    grade >> by_value
    return wf


SWITCH_YAML = """
name: switch_kinds
nodes:
  - {id: grade, kind: llm, prompt: "Grade {{ input.essay }}", choices: [good, bad]}
  - id: by_value
    kind: switch
    expression: grade
    cases: {good: praise, bad: triage}
    default: triage
  - {id: praise, kind: llm, prompt: "Praise {{ input.essay }}"}
  - id: triage
    kind: switch
    description: an LLM picks the case
    prompt: Is {{ input.essay }} fixable?
    model: judge
    sampling: {temperature: 0}
    cases: {yes: fix, no: reject}
  - {id: fix, kind: llm, prompt: "Fix {{ input.essay }}"}
  - {id: reject, kind: end}
edges:
  - {from: grade, to: by_value}
"""


def parallel_case() -> Workflow:
    wf = Workflow("parallel_kinds")
    wf.state("debate", type="object")
    pros = Subgraph()
    pros.llm("pros", "Pros of {{ input.topic }}")
    cons = Subgraph()
    cons.llm("cons", "Cons of {{ input.topic }}") >> cons.llm("rank_cons", "Rank {{ cons }}")
    cons.output("rank_cons")
    debate = wf.parallel("debate", {"pros": pros, "cons": cons}, writes={"debate": "output"}, timeout=60)
    debate >> wf.llm("verdict", "Weigh {{ debate.pros }} against {{ debate.cons }}")
    return wf


PARALLEL_YAML = """
name: parallel_kinds
state:
  debate: {type: object}
nodes:
  - id: debate
    kind: parallel
    writes: {debate: output}
    timeout: 60
    branches:
      pros:
        nodes:
          - {id: pros, kind: llm, prompt: "Pros of {{ input.topic }}"}
      cons:
        nodes:
          - {id: cons, kind: llm, prompt: "Cons of {{ input.topic }}"}
          - {id: rank_cons, kind: llm, prompt: "Rank {{ cons }}"}
        edges:
          - {from: cons, to: rank_cons}
        output: rank_cons
  - id: verdict
    kind: llm
    prompt: Weigh {{ debate.pros }} against {{ debate.cons }}
edges:
  - {from: debate, to: verdict}
"""


def map_case() -> Workflow:
    wf = Workflow("map_kinds")
    body = Subgraph()
    body.llm("summarize_doc", "Summarize {{ item }} (#{{ index }})") >> body.tool(
        "store", "kv.put", args={"key": "{{ index }}", "value": "{{ summarize_doc }}"})
    body.output("summarize_doc")
    wf.map("summaries", over="input.docs", body=body, concurrency=4)
    return wf


MAP_YAML = """
name: map_kinds
nodes:
  - id: summaries
    kind: map
    over: input.docs
    concurrency: 4
    body:
      nodes:
        - {id: summarize_doc, kind: llm, prompt: "Summarize {{ item }} (#{{ index }})"}
        - id: store
          kind: tool
          tool: kv.put
          args: {key: "{{ index }}", value: "{{ summarize_doc }}"}
      edges:
        - {from: summarize_doc, to: store}
      output: summarize_doc
"""


def loop_case() -> Workflow:
    wf = Workflow("loop_kinds")
    body = Subgraph()
    body.llm("draft", "Improve this ({{ iteration }}): {{ last if last else input.text }}")
    wf.loop("refine", body, condition="iteration < 2 and 'DONE' not in last", max_iterations=5)
    return wf


LOOP_YAML = """
name: loop_kinds
nodes:
  - id: refine
    kind: loop
    condition: iteration < 2 and 'DONE' not in last
    max_iterations: 5
    body:
      nodes:
        - id: draft
          kind: llm
          prompt: "Improve this ({{ iteration }}): {{ last if last else input.text }}"
"""

CHILD = Workflow("summarize_text")
CHILD.llm("summary", "Summarize {{ input.text }}")


def workflow_case() -> Workflow:
    wf = Workflow("workflow_kinds")
    by_name = wf.workflow("translated", "translate", input={"text": "{{ input.text }}", "lang": "fr"})
    by_object = wf.workflow("summarized", CHILD, {"text": "{{ translated }}"}, writes=None)
    by_name >> by_object
    return wf


WORKFLOW_YAML = """
name: workflow_kinds
nodes:
  - id: translated
    kind: workflow
    workflow: translate
    input: {text: "{{ input.text }}", lang: fr}
  - id: summarized
    kind: workflow
    workflow: summarize_text
    input: {text: "{{ translated }}"}
edges:
  - {from: translated, to: summarized}
"""


def interrupt_case() -> Workflow:
    wf = Workflow("interrupt_kinds")
    wf.llm("draft", "Draft a reply to {{ input.text }}") >> wf.interrupt(
        "review", "Approve {{ draft }}?", schema=Approval) >> wf.interrupt("ack")
    return wf


INTERRUPT_YAML = f"""
name: interrupt_kinds
nodes:
  - {{id: draft, kind: llm, prompt: "Draft a reply to {{{{ input.text }}}}"}}
  - id: review
    kind: interrupt
    prompt: Approve {{{{ draft }}}}?
    schema:{APPROVAL_SCHEMA}
  - {{id: ack, kind: interrupt}}
edges:
  - {{from: draft, to: review}}
  - {{from: review, to: ack}}
"""


def end_case() -> Workflow:
    wf = Workflow("end_kinds")
    wf.chain(wf.llm("answer", "Answer {{ input.question }}"), wf.end("done", description="stop here"))
    return wf


END_YAML = """
name: end_kinds
nodes:
  - {id: answer, kind: llm, prompt: "Answer {{ input.question }}"}
  - {id: done, kind: end, description: stop here}
edges:
  - {from: answer, to: done}
"""

CASES: dict[str, tuple[Callable[[], Workflow], str]] = {
    "llm": (llm_case, LLM_YAML),
    "tool": (tool_case, TOOL_YAML),
    "agent": (agent_case, AGENT_YAML),
    "switch": (switch_case, SWITCH_YAML),
    "parallel": (parallel_case, PARALLEL_YAML),
    "map": (map_case, MAP_YAML),
    "loop": (loop_case, LOOP_YAML),
    "workflow": (workflow_case, WORKFLOW_YAML),
    "interrupt": (interrupt_case, INTERRUPT_YAML),
    "end": (end_case, END_YAML),
}


def test_every_node_kind_has_a_case() -> None:
    assert set(CASES) == set(NODE_KINDS)


@pytest.mark.parametrize("kind", list(CASES))
def test_node_kind_builder_equals_yaml(kind: str) -> None:
    build, text = CASES[kind]
    spec = build().build()
    assert kind in {node.kind for node in spec.nodes}
    assert_same(spec, text)


@pytest.mark.parametrize("kind", list(CASES))
def test_node_kind_to_yaml_round_trips(kind: str) -> None:
    wf = CASES[kind][0]()
    assert load_yaml(wf.to_yaml()) == wf.build()


# -- whole workflows ------------------------------------------------------------------------------------


class Ticket(BaseModel):
    email: str
    text: str


class Category(BaseModel):
    label: Literal["billing", "bug", "other"]
    urgency: int = Field(ge=1, le=5)


def lookup_account(email: str) -> dict[str, Any]:
    """Find the customer's account by email."""
    return {"email": email, "plan": "pro"}


def triage_builder() -> Workflow:
    wf = Workflow("triage", description="Route a support ticket", input=Ticket)
    wf.defaults("qwen2.5-0.5b", temperature=0.2, retry={"max_attempts": 2})
    wf.state("category", type="object")
    classify = wf.llm("classify", "Classify this ticket:\n{{ input.text }}", output_schema=Category, temperature=0,
                      writes="category")
    route = wf.switch("route", "classify.label", cases={"billing": "lookup"}, default="handoff")
    lookup = wf.tool("lookup", lookup_account, args={"email": "{{ input.email }}"})
    reply = wf.llm("reply", system="You are a friendly support agent.",
                   prompt="Answer {{ input.text }} for a {{ lookup.plan }} customer.")
    wf.interrupt("handoff", "A human should answer: {{ input.text }}")
    classify >> route
    lookup >> reply >> wf.end("done")
    wf.output({"category": "state.category"})
    return wf


TRIAGE_YAML = r"""
name: triage
description: Route a support ticket
input:
  type: object
  title: Ticket
  properties:
    email: {title: Email, type: string}
    text: {title: Text, type: string}
  required: [email, text]
defaults:
  model: qwen2.5-0.5b
  sampling: {temperature: 0.2}
  retry: {max_attempts: 2}
state:
  category: {type: object}
nodes:
  - id: classify
    kind: llm
    prompt: "Classify this ticket:\n{{ input.text }}"
    sampling: {temperature: 0}
    writes: category
    output_schema:
      type: object
      title: Category
      properties:
        label: {enum: [billing, bug, other], title: Label, type: string}
        urgency: {maximum: 5, minimum: 1, title: Urgency, type: integer}
      required: [label, urgency]
  - id: route
    kind: switch
    expression: classify.label
    cases: {billing: lookup}
    default: handoff
  - id: lookup
    kind: tool
    tool: lookup_account
    args: {email: "{{ input.email }}"}
  - id: reply
    kind: llm
    system: You are a friendly support agent.
    prompt: Answer {{ input.text }} for a {{ lookup.plan }} customer.
  - id: handoff
    kind: interrupt
    prompt: "A human should answer: {{ input.text }}"
  - {id: done, kind: end}
edges:
  - {from: classify, to: route}
  - {from: lookup, to: reply}
  - {from: reply, to: done}
output:
  category: state.category
"""


def test_triage_workflow_builder_equals_yaml() -> None:
    wf = triage_builder()
    assert_same(wf.build(tools=["tracker.create"]), TRIAGE_YAML)
    assert wf.tools.names() == ["lookup_account"]


def test_triage_to_yaml_round_trips() -> None:
    wf = triage_builder()
    text = wf.to_yaml()
    assert load_yaml(text) == wf.build()
    assert text.startswith("name: triage\n")
    assert "- id: classify\n  kind: llm\n" in text  # nodes read id first, then kind


def test_workflow_level_fields_builder_equals_yaml() -> None:
    wf = Workflow("settings", version=2, description="every workflow-level field",
                  input={"type": "object", "properties": {"q": {"type": "string"}}})
    wf.state("notes", type="array", reducer="append", default=[], description="what we learned")
    wf.state("facts", type="object", reducer="merge", default={})
    wf.defaults("qwen", sampling={"top_k": 20}, max_tokens=64, timeout=120, retry=RetryPolicy(max_attempts=4))
    wf.llm("first", "About {{ input.q }}", writes="notes")
    wf.llm("second", "More about {{ input.q }}", writes={"facts": "{'second': output}"})
    wf.start("first", "second")
    wf.output("state.notes")
    assert_same(wf.build(), """
name: settings
version: 2
description: every workflow-level field
input: {type: object, properties: {q: {type: string}}}
state:
  notes: {type: array, reducer: append, default: [], description: what we learned}
  facts: {type: object, reducer: merge, default: {}}
defaults:
  model: qwen
  sampling: {top_k: 20, max_tokens: 64}
  retry: {max_attempts: 4}
  timeout: 120
nodes:
  - {id: first, kind: llm, prompt: "About {{ input.q }}", writes: notes}
  - {id: second, kind: llm, prompt: "More about {{ input.q }}", writes: {facts: "{'second': output}"}}
start: [first, second]
output: state.notes
""")


TRIGGERS_YAML = """
name: on_push
input:
  type: object
  required: [repo, commits]
  properties: {repo: {type: string}, commits: {type: integer}, event: {type: string}}
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
  - {name: ci_done, secret_env: CI_WEBHOOK_SECRET, description: the payload is the input}
  - {name: rebuild, secret_env: CI_WEBHOOK_SECRET, input: "{{ {'repo': payload.repo, 'commits': 0} }}"}
"""


def triggers_builder() -> Workflow:
    wf = Workflow("on_push", input={"type": "object", "required": ["repo", "commits"], "properties": {
        "repo": {"type": "string"}, "commits": {"type": "integer"}, "event": {"type": "string"}}})
    wf.tool("count", calculator, args={"expression": "{{ input.commits }} * 2"})
    mapping = {"repo": "{{ payload.repository.full_name }}", "commits": "{{ payload.commits | length }}",
               "event": "{{ headers['x-github-event'] }}"}
    wf.trigger("github-push", "GITHUB_WEBHOOK_SECRET", scheme="github", tenant="acme", input=mapping)
    mapping["repo"] = "changed after the call"  # the trigger keeps its own copy
    wf.trigger("ci_done", "CI_WEBHOOK_SECRET", description="the payload is the input")
    wf.trigger("rebuild", "CI_WEBHOOK_SECRET", input="{{ {'repo': payload.repo, 'commits': 0} }}")
    return wf


def test_triggers_builder_equals_yaml() -> None:
    wf = triggers_builder()
    assert_same(wf.build(), TRIGGERS_YAML)
    assert load_yaml(wf.to_yaml()) == wf.build()
    assert [t.name for t in wf.build().triggers] == ["github-push", "ci_done", "rebuild"]


def test_trigger_mistakes_are_reported() -> None:
    wf = triggers_builder()
    with pytest.raises(ValueError, match="duplicate trigger name 'ci_done'"):
        wf.trigger("ci_done", "OTHER_SECRET")
    with pytest.raises(WorkflowValidationError) as caught:
        wf.trigger("bad", "SECRET", scheme="gitlab")  # type: ignore[arg-type]
    assert [(i.code, i.pointer) for i in caught.value.issues] == [("literal_error", "/triggers/3/scheme")]
    wf.trigger("late", "SECRET", input={"repo": "{{ input.repo }}"})  # templates see payload and headers only
    with pytest.raises(WorkflowValidationError) as built:
        wf.build()
    assert [(i.code, i.pointer) for i in built.value.issues] == [("unknown_variable", "/triggers/3/input/repo")]


def test_nested_bodies_map_in_parallel_in_loop() -> None:
    per_item = Subgraph()
    per_item.llm("critique", "Critique {{ item }}")
    left = Subgraph()
    left.map("critiques", over="input.drafts", body=per_item, concurrency=2)
    right = Subgraph()
    right.llm("score", "Score round {{ iteration }}")
    round_ = Subgraph()
    round_.parallel("review", {"left": left, "right": right})
    wf = Workflow("nested")
    wf.loop("rounds", round_, condition="iteration < 3")

    spec = wf.build()
    loop = spec.nodes[0]
    assert isinstance(loop, LoopNode)
    parallel = loop.body.nodes[0]
    assert isinstance(parallel, ParallelNode)
    inner_map = parallel.branches["left"].nodes[0]
    assert isinstance(inner_map, MapNode) and inner_map.concurrency == 2
    assert isinstance(inner_map.body.nodes[0], LLMNode) and inner_map.body.nodes[0].id == "critique"
    assert_same(spec, """
name: nested
nodes:
  - id: rounds
    kind: loop
    condition: iteration < 3
    body:
      nodes:
        - id: review
          kind: parallel
          branches:
            left:
              nodes:
                - id: critiques
                  kind: map
                  over: input.drafts
                  concurrency: 2
                  body:
                    nodes:
                      - {id: critique, kind: llm, prompt: "Critique {{ item }}"}
            right:
              nodes:
                - {id: score, kind: llm, prompt: "Score round {{ iteration }}"}
""")
    assert load_yaml(wf.to_yaml()) == spec


def test_body_edited_after_it_was_attached_is_built_as_it_ends_up() -> None:
    body = Subgraph()
    wf = Workflow("late")
    wf.map("each", over="input.items", body=body)
    body.llm("late_node", "Handle {{ item }}")
    node = wf.build().nodes[0]
    assert isinstance(node, MapNode) and [n.id for n in node.body.nodes] == ["late_node"]


# -- wiring -------------------------------------------------------------------------------------------


def edges_of(wf: Workflow) -> list[tuple[str, str]]:
    return [(edge.source, edge.target) for edge in wf.build(validate=False).edges]


def test_rshift_chain_returns_the_right_hand_side() -> None:
    wf = Workflow("chain")
    a, b, c = (wf.llm(name, "x") for name in "abc")
    assert (a >> b >> c) is c
    assert edges_of(wf) == [("a", "b"), ("b", "c")]


def test_rshift_fan_out_and_join() -> None:
    wf = Workflow("fan")
    a, b, c, d = (wf.llm(name, "x") for name in "abcd")
    fanned = a >> [b, c]
    assert [ref.id for ref in fanned] == ["b", "c"]
    assert (fanned >> d) is d
    assert edges_of(wf) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]


def test_edges_by_id_chain_and_string_operands() -> None:
    wf = Workflow("ids")
    a = wf.llm("a", "x")
    later = a >> "b"  # a node added later, by id
    b = wf.llm("b", "x")
    assert later == b == wf["b"]
    "b" >> wf.llm("c", "x")
    d = wf.llm("d", "x")
    assert wf.chain("c", d, "e") == NodeRef(wf, "e")
    wf.edge("a", wf["d"])
    wf.llm("e", "x")
    assert edges_of(wf) == [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("a", "d")]
    with pytest.raises(KeyError, match="nope"):
        wf["nope"]


def test_cases_and_on_error_accept_node_refs() -> None:
    wf = Workflow("refs")
    fallback = wf.end("fallback")
    target = wf.llm("target", "x")
    wf.llm("first", "x", on_error=fallback)
    wf.switch("pick", "input.kind", cases={"a": target}, default=fallback)
    _, _, first, pick = wf.build(validate=False).nodes
    assert first.on_error == "fallback"
    assert isinstance(pick, SwitchNode) and pick.cases == {"a": "target"} and pick.default == "fallback"


def test_edge_between_graphs_raises() -> None:
    wf = Workflow("cross")
    body = Subgraph()
    inner = body.llm("inner", "x")
    outer = wf.llm("outer", "x")
    with pytest.raises(ValueError, match="another graph"):
        outer >> inner


def test_duplicate_node_id_raises_naming_the_id() -> None:
    wf = Workflow("dup")
    wf.llm("same", "x")
    with pytest.raises(ValueError, match="duplicate node id 'same'"):
        wf.tool("same", "web.search")
    with pytest.raises(ValueError, match="duplicate node id 'same'"):
        wf.function("same")(calculator)
    assert wf.tools.names() == []  # the refused node registered nothing


def test_duplicate_edge_and_state_key_raise() -> None:
    wf = Workflow("dup")
    a, b = wf.llm("a", "x"), wf.llm("b", "x")
    a >> b
    with pytest.raises(ValueError, match="'a' -> 'b'"):
        wf.edge(a, b)
    wf.state("k")
    with pytest.raises(ValueError, match="duplicate state key 'k'"):
        wf.state("k")


# -- tools from plain functions ---------------------------------------------------------------------------


def test_function_tool_lands_in_tools_with_name_and_docstring() -> None:
    wf = Workflow("tools")
    wf.tool("lookup", lookup_account, args={"email": "{{ input.email }}"})
    registry = wf.tools
    assert isinstance(registry, ToolRegistry)
    tool = registry.get("lookup_account")
    assert tool.fn is lookup_account
    assert tool.description == "Find the customer's account by email."
    assert tool.parameters["required"] == ["email"]


def test_function_decorator_registers_a_tool_node() -> None:
    wf = Workflow("decorated")

    @wf.function("normalize", args={"text": "{{ input.text }}"}, writes="clean")
    def normalize(text: str) -> str:
        """Collapse whitespace."""
        return " ".join(text.split())

    wf.state("clean", type="string")
    wf["normalize"] >> wf.llm("answer", "Answer {{ state.clean }}")
    assert normalize("  a   b ") == "a b"  # still a plain function
    assert wf.tools.get("normalize").description == "Collapse whitespace."
    assert_same(wf.build(), """
name: decorated
state:
  clean: {type: string}
nodes:
  - {id: normalize, kind: tool, tool: normalize, args: {text: "{{ input.text }}"}, writes: clean}
  - {id: answer, kind: llm, prompt: "Answer {{ state.clean }}"}
edges:
  - {from: normalize, to: answer}
""")


def test_tools_are_collected_from_bodies_and_agents() -> None:
    body = Subgraph()
    body.tool("fetch_each", fetch, args={"url": "{{ item }}"})
    wf = Workflow("collect")
    wf.map("pages", over="input.urls", body=body)
    wf.agent("solve", "Solve", tools=[calculator, as_tool(lookup_account, name="account")])
    wf.tool("again", fetch, args={"url": "x"})  # the same function twice is one tool
    assert wf.tools.names() == ["account", "calculator", "fetch"]
    assert body.tools.names() == ["fetch"]


def test_two_functions_with_one_name_raise() -> None:
    def make_fetch() -> Callable[[str], str]:
        def fetch(url: str) -> str:
            return url

        return fetch

    first, second = make_fetch(), make_fetch()  # two functions, both named "fetch"
    wf = Workflow("clash")
    wf.tool("one", first, args={"url": "x"})
    with pytest.raises(ValueError, match="tool 'fetch'"):
        wf.tool("two", second, args={"url": "x"})
    body = Subgraph()
    body.tool("three", second, args={"url": "x"})  # each graph alone is fine; together they clash
    wf.map("each", over="input.urls", body=body)
    with pytest.raises(ValueError, match="tool 'fetch'"):
        wf.build()


def test_lambda_needs_a_name() -> None:
    wf = Workflow("anon")
    with pytest.raises(ValueError, match="as_tool"):
        wf.tool("anon", lambda: 1)
    wf.tool("named", Tool(name="one", fn=lambda: 1))
    assert wf.tools.names() == ["one"]


def test_tool_names_are_checked_when_other_tools_are_given() -> None:
    wf = Workflow("checked")
    wf.tool("local", calculator, args={"expression": "1+1"}) >> wf.tool("remote", "web.search")
    wf.build()  # unchecked: a name given as a string may be registered anywhere
    wf.build(tools=["web.search"])
    with pytest.raises(WorkflowValidationError) as info:
        wf.build(tools=ToolRegistry())
    assert [issue.code for issue in info.value.issues] == ["unknown_tool"]


def test_subworkflows_are_remembered_by_name() -> None:
    wf = workflow_case()
    assert wf.subworkflows == {"summarize_text": CHILD}
    wf.build(workflows=["translate"])
    with pytest.raises(WorkflowValidationError, match="translate"):
        wf.build(workflows=[])
    with pytest.raises(ValueError, match="two different Workflow objects"):
        wf.workflow("other", Workflow("summarize_text"))


# -- schemas, sampling, arguments ---------------------------------------------------------------------------


def test_pydantic_models_become_json_schemas() -> None:
    wf = Workflow("schemas", input=Ticket)
    wf.llm("classify", "Classify {{ input.text }}", output_schema=Category) >> wf.interrupt("ok", schema=Approval)
    spec = wf.build()
    assert spec.input == Ticket.model_json_schema()
    classify, ok = spec.nodes
    assert isinstance(classify, LLMNode) and classify.output_schema == Category.model_json_schema()
    assert ok.model_dump(by_alias=True)["schema"] == Approval.model_json_schema()


def test_sampling_shorthands_override_a_sampling_object() -> None:
    wf = Workflow("sampling")
    node = wf.llm("a", "x", sampling={"temperature": 1.0, "top_k": 5}, temperature=0.0, stop="END")
    spec = wf.build()
    assert node.id == "a"
    llm = spec.nodes[0]
    assert isinstance(llm, LLMNode)
    assert llm.sampling == Sampling(temperature=0.0, top_k=5, stop=["END"])
    node >> wf.llm("b", "x")
    plain = wf.build().nodes[1]
    assert isinstance(plain, LLMNode) and plain.sampling is None  # no shorthand given: YAML's omitted field


def test_unknown_keyword_raises_type_error() -> None:
    wf = Workflow("typo")
    with pytest.raises(TypeError, match="temprature"):
        wf.llm("a", "x", temprature=0.1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="concurency"):
        wf.map("m", over="input.x", body=Subgraph(), concurency=2)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Workflow("w", inputs={})  # type: ignore[call-arg]


def test_bad_node_is_reported_where_it_is_added() -> None:
    wf = Workflow("bad")
    with pytest.raises(WorkflowValidationError, match="node 'both'") as info:
        wf.llm("both", "x", messages=[{"role": "user", "content": "y"}])
    assert info.value.issues[0].code == "prompt_or_messages"
    with pytest.raises(WorkflowValidationError, match="node 'conflict'"):
        wf.llm("conflict", "x", regex="a+", choices=["a"])
    with pytest.raises(TypeError, match="list of strings"):
        wf.llm("one_choice", "x", choices="yes")
    assert "both" not in wf and "conflict" not in wf


def test_build_reports_graph_problems() -> None:
    wf = Workflow("broken")
    wf.llm("a", "x") >> "missing"
    wf.llm("orphan", "x")
    with pytest.raises(WorkflowValidationError) as info:
        wf.build()
    assert {issue.code for issue in info.value.issues} == {"unknown_node", "unreachable"}
    assert wf.build(validate=False).nodes[1].id == "orphan"  # structure only


def test_empty_bodies_and_workflows_are_reported_by_build() -> None:
    wf = Workflow("empty")
    with pytest.raises(WorkflowValidationError, match="workflow 'empty'"):
        wf.build()
    wf.map("each", over="input.x", body=Subgraph())
    with pytest.raises(WorkflowValidationError, match="node 'each'"):
        wf.build()


def test_a_workflow_is_not_a_body() -> None:
    wf = Workflow("outer")
    with pytest.raises(TypeError, match="workflow"):
        wf.map("m", over="input.x", body=Workflow("inner"))  # type: ignore[arg-type]


def test_retry_accepts_policy_or_mapping() -> None:
    wf = Workflow("retry")
    wf.tool("a", "t", retry={"max_attempts": 3}) >> wf.tool("b", "t", retry=RetryPolicy(max_attempts=3))
    a, b = wf.build().nodes
    assert isinstance(a, ToolNode) and a.retry == b.retry == RetryPolicy(max_attempts=3)


def test_package_exports() -> None:
    assert dsl.__all__ == sorted(dsl.__all__)
    assert all(getattr(dsl, name) is not None for name in dsl.__all__)
    assert {"Workflow", "Subgraph", "WorkflowSpec", "LLMNode", "load_yaml", "validate_spec"} <= set(dsl.__all__)
