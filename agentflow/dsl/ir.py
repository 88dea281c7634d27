"""The Graph IR: the one validated form every workflow takes, whichever front end wrote it.

A workflow is a graph over a typed state. Execution begins at ``start`` (default: the first node
listed) and follows edges, ``switch`` cases and ``on_error`` edges; nodes reached by none are
errors (``unreachable``). Nodes are a discriminated union on ``kind``; composite
nodes (``parallel``, ``map``, ``loop``) hold :class:`Body` subgraphs. Edges say "run ``to`` after
``from``"; a node with several incoming edges waits for all of them (a join), and the branches a
``switch`` does not take are skipped, skips propagating downstream.

Strings in templated fields are Jinja2 templates (``"Summarise {{ state.doc }}"``); a string that
is exactly one ``{{ expression }}`` keeps the expression's native type (a list stays a list).
Fields documented as *expressions* (``switch.expression``, ``map.over``, ``loop.condition``, output
mappings) are bare Jinja2 expressions without braces: ``state.retries < 3``.

Names a template or expression may use: ``input`` (the run's input), ``state`` (the state keys),
every node id (that node's output), and inside bodies ``item`` / ``index`` (map), ``iteration`` /
``last`` (loop); ``output`` in a node's ``writes`` mapping; ``error`` in the node an ``on_error``
edge leads to.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
NodeId = Annotated[str, Field(pattern=IDENTIFIER, max_length=64, description="A node id: a Python-style identifier.")]
NodeKind = Literal["llm", "tool", "agent", "switch", "parallel", "map", "loop", "workflow", "interrupt", "end"]
NODE_KINDS: tuple[str, ...] = NodeKind.__args__  # type: ignore[attr-defined]


class IRModel(BaseModel):
    """Base of every IR model: unknown fields are errors, aliases and names both accepted."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=False, allow_inf_nan=False)


class RetryPolicy(IRModel):
    """How often and how patiently a failing node is retried (exponential backoff with jitter)."""

    max_attempts: int = Field(1, ge=1, le=100, description="Total attempts, the first included.")
    initial_delay: float = Field(0.5, ge=0, le=3600, description="Seconds before the second attempt.")
    backoff: float = Field(2.0, ge=1, le=100, description="Each further delay is multiplied by this.")
    max_delay: float = Field(30.0, ge=0, le=3600, description="Upper bound on one delay, in seconds.")
    jitter: float = Field(0.1, ge=0, le=1, description="Random +/- fraction applied to each delay.")

    def delay(self, attempt: int, random: float = 0.5) -> float:
        """Seconds to wait after failed ``attempt`` (1-based); ``random`` in [0, 1) draws the jitter."""
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * random - 1)))


class Sampling(IRModel):
    """Sampling parameters for LLM calls; unset fields fall back to the workflow's defaults."""

    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=100)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    seed: int | None = None
    stop: list[str] | None = None

    def merged_over(self, base: Sampling) -> Sampling:
        """These parameters, with every unset field taken from ``base``."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class Defaults(IRModel):
    """Workflow-wide defaults that nodes may override."""

    model: str | None = Field(None, description="LLM name for llm / agent / switch nodes that name none.")
    sampling: Sampling = Field(default_factory=Sampling)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float | None = Field(None, gt=0, description="Per-node timeout in seconds (none by default).")


JsonType = Literal["string", "number", "integer", "boolean", "object", "array", "null", "any"]
Reducer = Literal["replace", "append", "merge"]


class StateKey(IRModel):
    """One key of the workflow state: its JSON type, how writes combine, and its initial value."""

    type: JsonType = "any"
    reducer: Reducer = Field("replace", description="replace: last write wins; append: list grows (a list "
                             "written extends it); merge: dict keys are updated.")
    default: Any = None
    description: str = ""


class Message(IRModel):
    """One chat message of an llm / agent node; ``content`` is a template."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str


class Edge(IRModel):
    """Run ``to`` after ``from`` has completed."""

    source: NodeId = Field(alias="from")
    target: NodeId = Field(alias="to")


class NodeBase(IRModel):
    """Fields every node kind has."""

    id: NodeId
    description: str = ""
    writes: str | dict[str, str] | None = Field(
        None, description="A state key that receives the node's output, or a mapping state key -> expression "
        "over `output`.")
    timeout: float | None = Field(None, gt=0, description="Seconds; overrides defaults.timeout.")
    retry: RetryPolicy | None = Field(None, description="Overrides defaults.retry.")
    on_error: NodeId | None = Field(None, description="Node to run (with `error` bound) when this node fails "
                                    "for good; without it, the failure fails the run.")


class _Prompted(NodeBase):
    """Fields shared by the nodes that call an LLM."""

    model: str | None = None
    system: str | None = Field(None, description="System message template.")
    prompt: str | None = Field(None, description="User message template (or use `messages`).")
    messages: list[Message] | None = None
    sampling: Sampling | None = None


def _exactly_one_prompt(node: _Prompted) -> None:
    if (node.prompt is None) == (node.messages is None):
        raise PydanticCustomError("prompt_or_messages", "give exactly one of `prompt` and `messages`")


class LLMNode(_Prompted):
    """Generate text, JSON matching ``output_schema``, text matching ``regex``, or one of ``choices``."""

    kind: Literal["llm"]
    output_schema: dict[str, Any] | None = Field(None, description="JSON Schema; the output is the parsed JSON.")
    regex: str | None = None
    choices: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> LLMNode:
        _exactly_one_prompt(self)
        if sum(x is not None for x in (self.output_schema, self.regex, self.choices)) > 1:
            raise PydanticCustomError("conflicting_constraints",
                                      "give at most one of `output_schema`, `regex` and `choices`")
        return self


class ToolNode(NodeBase):
    """Call a named tool; ``args`` values are templates (nested lists and dicts too)."""

    kind: Literal["tool"]
    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class AgentNode(_Prompted):
    """An LLM tool-calling loop: call tools until the model answers, at most ``max_steps`` LLM turns."""

    kind: Literal["agent"]
    tools: list[str] = Field(default_factory=list, description="Tool names, built-in groups (`files`) or MCP "
                             "references (`mcp:weather/*`).")
    max_steps: int = Field(8, ge=1, le=100, description="LLM turns at most; the last one is asked for an answer "
                           "(tool_choice none).")
    tool_choice: str = Field("auto", min_length=1, description="`auto`, `required`, `none`, or a tool name: what "
                             "every turn but the last may do.")
    parallel_tool_calls: bool = Field(True, description="Let one turn make several calls (they run concurrently).")
    min_tool_calls: int | None = Field(None, ge=1, le=64, description="A turn that calls tools makes at least this "
                                       "many calls (local engine: enforced by the grammar).")
    max_tool_calls: int | None = Field(None, ge=1, le=64, description="A turn makes at most this many calls "
                                       "(local engine: enforced by the grammar).")
    dispatch: Literal["streamed", "after_generation", "sequential"] = Field(
        "streamed", description="streamed: a tool without side effects starts as soon as its call is decoded, while "
        "the model goes on; after_generation: calls start together when the turn ends; sequential: one at a time.")
    max_result_chars: int = Field(16000, ge=100, le=10_000_000, description="Longer tool results are cut, with a "
                                  "note to the model.")

    @model_validator(mode="after")
    def _check(self) -> AgentNode:
        _exactly_one_prompt(self)
        return self


class SwitchNode(NodeBase):
    """Branch: evaluate ``expression`` or ask an LLM to pick a case with ``prompt``.

    (Not ``on``: YAML 1.1 reads a bare ``on`` key as the boolean true.)

    The output is the case taken; its target runs, every other target is skipped.
    """

    kind: Literal["switch"]
    expression: str | None = Field(None, description="Expression whose value (as a string; non-strings as JSON) "
                                   "selects the case.")
    prompt: str | None = Field(None, description="Template; an LLM chooses one of the case names.")
    model: str | None = None
    sampling: Sampling | None = None
    cases: dict[str, NodeId] = Field(min_length=1, description="Case value -> node id to run.")
    default: NodeId | None = Field(None, description="Node to run when no case matches.")

    @model_validator(mode="after")
    def _check(self) -> SwitchNode:
        if (self.expression is None) == (self.prompt is None):
            raise PydanticCustomError("expression_or_prompt", "give exactly one of `expression` and `prompt`")
        return self


class Body(IRModel):
    """A subgraph inside a composite node, with its own ``start`` (default: its first node).

    Its result is ``output`` (an expression) if given, else the output of its single sink node,
    else a dict of every sink's output by node id."""

    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(default_factory=list)
    start: list[NodeId] | None = Field(None, description="Entry nodes; default: the first node.")
    output: str | None = None


class ParallelNode(NodeBase):
    """Static fan-out: run every branch at once; the output is a dict of branch name -> result."""

    kind: Literal["parallel"]
    branches: dict[Annotated[str, Field(pattern=IDENTIFIER)], Body] = Field(min_length=1)


class MapNode(NodeBase):
    """Run ``body`` once per item of ``over`` (``item`` and ``index`` bound), at most ``concurrency`` at
    a time; the output is the list of results in item order."""

    kind: Literal["map"]
    over: str = Field(description="Expression giving the list to map over.")
    body: Body
    concurrency: int = Field(8, ge=1, le=1024)


class LoopNode(NodeBase):
    """Run ``body`` repeatedly: after each iteration, continue while ``condition`` holds, at most
    ``max_iterations`` times. ``iteration`` (0-based) and ``last`` (previous result) are bound."""

    kind: Literal["loop"]
    body: Body
    condition: str = Field(description="Expression evaluated after each iteration; true means go again.")
    max_iterations: int = Field(10, ge=1, le=10_000)


class WorkflowNode(NodeBase):
    """Run another registered workflow with ``input`` (templates); the output is its output."""

    kind: Literal["workflow"]
    workflow: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class InterruptNode(NodeBase):
    """Pause the run until it is resumed with a value; the output is that value."""

    kind: Literal["interrupt"]
    prompt: str = Field("", description="Template shown to whoever resumes the run.")
    value_schema: dict[str, Any] | None = Field(None, alias="schema",
                                                description="JSON Schema the resume value must match.")


class EndNode(NodeBase):
    """Finish the run now: running branches are cancelled and the output mapping is evaluated."""

    kind: Literal["end"]


Node = Annotated[
    LLMNode | ToolNode | AgentNode | SwitchNode | ParallelNode | MapNode | LoopNode | WorkflowNode
    | InterruptNode | EndNode,
    Field(discriminator="kind"),
]


HOOK_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
TENANT = r"^[A-Za-z0-9_.:-]+$"
TriggerScheme = Literal["standard", "github"]


class Trigger(IRModel):
    """A webhook that starts a run: ``POST /hooks/{name}`` with a signed JSON body.

    The signature is checked with the secret in environment variable ``secret_env`` (``standard``:
    Standard Webhooks, ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``; ``github``:
    ``X-Hub-Signature-256``); the run's input is rendered from ``input``, whose templates see
    ``payload`` (the parsed JSON body) and ``headers`` (lower-case header names). The run belongs
    to ``tenant``."""

    name: str = Field(pattern=HOOK_NAME, max_length=64, description="The hook's name, unique on the server: "
                      "`POST /hooks/{name}`. Letters, digits, `_` and `-`.")
    secret_env: str = Field(pattern=ENV_NAME, max_length=128, description="Environment variable holding the "
                            "signing secret (`whsec_` + base64, or a plain string).")
    scheme: TriggerScheme = Field("standard", description="standard: Standard Webhooks "
                                                  "signatures; github: `X-Hub-Signature-256`.")
    input: dict[str, Any] | str | None = Field(
        None, description="The run's input: a mapping input key -> template (nested values too), or one template "
        "giving the whole input. Templates see `payload` and `headers`. Default: the payload itself.")
    tenant: str = Field("default", pattern=TENANT, max_length=128, description="The tenant the runs belong to.")
    description: str = ""


class WorkflowSpec(IRModel):
    """A whole workflow: the validated Graph IR both front ends produce."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    version: int = Field(1, ge=1, le=2**31 - 1)
    description: str = ""
    input: dict[str, Any] = Field(default_factory=lambda: {"type": "object"},
                                  description="JSON Schema of the run's input.")
    state: dict[Annotated[str, Field(pattern=IDENTIFIER)], StateKey] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    nodes: list[Node] = Field(min_length=1)
    edges: list[Edge] = Field(default_factory=list)
    start: list[NodeId] | None = Field(None, description="Entry nodes, run first (several start in parallel); "
                                       "default: the first node listed.")
    output: dict[str, str] | str | None = Field(
        None, description="The run's output: an expression, or a mapping name -> expression. Default: the "
        "whole state.")
    triggers: list[Trigger] = Field(default_factory=list, description="Webhooks that start runs of this "
                                    "workflow (`POST /hooks/{name}`).")

    def to_dict(self) -> dict[str, Any]:
        """The IR as plain data, with YAML field names (``from``/``to``, ``schema``), defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


for _model in (LLMNode, ToolNode, AgentNode, SwitchNode, Body, ParallelNode, MapNode, LoopNode, WorkflowNode,
               InterruptNode, EndNode, WorkflowSpec):
    _model.model_rebuild()

AnyNode = LLMNode | ToolNode | AgentNode | SwitchNode | ParallelNode | MapNode | LoopNode | WorkflowNode \
    | InterruptNode | EndNode

__all__ = [
    "NODE_KINDS", "AgentNode", "AnyNode", "Body", "Defaults", "Edge", "EndNode", "InterruptNode", "LLMNode",
    "LoopNode", "MapNode", "Message", "Node", "NodeBase", "NodeKind", "ParallelNode", "RetryPolicy", "Sampling",
    "StateKey", "SwitchNode", "ToolNode", "Trigger", "TriggerScheme", "WorkflowNode", "WorkflowSpec",
]
