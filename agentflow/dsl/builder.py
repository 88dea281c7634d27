"""The Python front end: write a workflow's Graph IR with method calls instead of YAML.

::

    class Category(BaseModel):
        label: Literal["billing", "bug", "other"]

    def lookup_account(email: str) -> dict:
        "Find the customer's account."
        ...

    wf = Workflow("triage")
    classify = wf.llm("classify", "Classify: {{ input.text }}", output_schema=Category, temperature=0)
    route = wf.switch("route", "classify.label", cases={"billing": "lookup"}, default="reply")
    lookup = wf.tool("lookup", lookup_account, args={"email": "{{ input.email }}"})
    reply = wf.llm("reply", "Answer {{ input.text }}")
    classify >> route
    lookup >> reply
    spec = wf.build()   # equal to the same workflow written in YAML

Each node method mirrors one IR node kind and returns a :class:`NodeRef`: ``a >> b`` adds an edge,
``a >> [b, c]`` fans out and ``[b, c] >> d`` joins. Plain Python functions become tool nodes
(``wf.tool("lookup", fn)`` or the ``@wf.function("lookup")`` decorator) and are gathered in
``wf.tools`` for the runtime. Composite nodes (``parallel``, ``map``, ``loop``) take :class:`Subgraph`
bodies, built with the same methods.

Leaf nodes are checked against the IR the moment they are added, so a mistake points at the line
that made it; composite nodes, bodies and the workflow as a whole are checked by
:meth:`Workflow.build`, which then runs the semantic validator (unknown ids, cycles, unreachable
nodes...). Every problem is raised as a :class:`WorkflowValidationError`; a duplicate node id is a
``ValueError`` at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, TypeAlias, TypeVar, overload

import yaml
from pydantic import BaseModel, ValidationError

from agentflow.dsl import ir
from agentflow.dsl.errors import ValidationIssue, WorkflowValidationError
from agentflow.dsl.validate import validate_spec
from agentflow.tool import Tool, ToolRegistry, as_tool

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


class NodeRef:
    """A handle on a node of one graph: its ``id``, and ``>>`` to draw edges from it.

    ``a >> b`` adds the edge a → b and returns ``b``, so ``a >> b >> c`` is a chain. ``a >> [b, c]``
    fans out and returns the list, so ``a >> [b, c] >> d`` joins the branches again at ``d``.
    """

    __slots__ = ("graph", "id")

    def __init__(self, graph: Graph, node_id: str) -> None:
        self.graph = graph
        self.id = node_id

    def __repr__(self) -> str:
        return f"NodeRef({self.id!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeRef) and other.graph is self.graph and other.id == self.id

    def __hash__(self) -> int:
        return hash((id(self.graph), self.id))

    @overload
    def __rshift__(self, other: NodeRef | str) -> NodeRef: ...
    @overload
    def __rshift__(self, other: Sequence[NodeRef]) -> list[NodeRef]: ...

    def __rshift__(self, other: NodeRef | str | Sequence[NodeRef]) -> NodeRef | list[NodeRef]:
        if isinstance(other, (NodeRef, str)):
            return self.graph.edge(self, other)
        return [self.graph.edge(self, target) for target in other]

    def __rrshift__(self, other: Sequence[NodeRef] | str) -> NodeRef:
        """``[b, c] >> d`` (a join) or ``"b" >> d``."""
        for source in [other] if isinstance(other, str) else other:
            self.graph.edge(source, self)
        return self


NodeLike: TypeAlias = NodeRef | str
"""A node given by its handle or by its id (an id may name a node added later)."""
SchemaLike: TypeAlias = Mapping[str, Any] | type[BaseModel]
"""A JSON Schema, or a pydantic model class standing for its ``model_json_schema()``."""
ToolLike: TypeAlias = str | Tool | Callable[..., Any]
"""A tool by name (registered elsewhere), or a Tool / plain function this workflow brings along."""
RetryLike: TypeAlias = ir.RetryPolicy | Mapping[str, Any]
SamplingLike: TypeAlias = ir.Sampling | Mapping[str, Any]
Writes: TypeAlias = str | Mapping[str, str]
Messages: TypeAlias = Sequence[ir.Message | Mapping[str, str]]


class Graph:
    """Nodes and edges under construction: what a :class:`Workflow` and a :class:`Subgraph` share.

    One method per node kind. The keywords every kind accepts (``description``, ``writes``,
    ``timeout``, ``retry``, ``on_error``) mean what they mean in the IR (:class:`ir.NodeBase`).
    """

    def __init__(self) -> None:
        self._nodes: dict[str, Callable[[], ir.NodeBase]] = {}  # id -> makes the IR node
        self._edges: list[tuple[str, str]] = []
        self._start: list[str] | None = None
        self._own_tools: dict[str, Tool] = {}
        self._own_subworkflows: dict[str, Workflow] = {}
        self._bodies: list[Subgraph] = []

    # -- node kinds ---------------------------------------------------------------------------------

    def llm(self, id: str, prompt: str | None = None, *, messages: Messages | None = None,
            system: str | None = None, model: str | None = None, output_schema: SchemaLike | None = None,
            regex: str | None = None, choices: Sequence[str] | None = None, sampling: SamplingLike | None = None,
            temperature: float | None = None, max_tokens: int | None = None, top_p: float | None = None,
            top_k: int | None = None, seed: int | None = None, stop: str | Sequence[str] | None = None,
            description: str = "", writes: Writes | None = None, timeout: float | None = None,
            retry: RetryLike | None = None, on_error: NodeLike | None = None) -> NodeRef:
        """Generate text — or JSON matching ``output_schema``, text matching ``regex``, one of ``choices``.

        ``temperature``, ``max_tokens``, ``top_p``, ``top_k``, ``seed`` and ``stop`` are shorthands
        for ``sampling``; given both, the shorthands override those fields of ``sampling``.
        """
        if isinstance(choices, str):
            raise TypeError(f"node {id!r}: choices must be a list of strings, not one string")
        return self._add(ir.LLMNode, id, {
            "kind": "llm", "prompt": prompt, "messages": _opt_list(messages), "system": system, "model": model,
            "output_schema": _schema(output_schema), "regex": regex, "choices": _opt_list(choices),
            "sampling": _sampling(sampling, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
                                  top_k=top_k, seed=seed, stop=stop),
            **self._common(description, writes, timeout, retry, on_error)})

    def tool(self, id: str, tool: ToolLike, args: Mapping[str, Any] | None = None, *, description: str = "",
             writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
             on_error: NodeLike | None = None) -> NodeRef:
        """Call a tool with ``args`` (parameter name -> template).

        A plain function (or :class:`Tool`) is registered in :attr:`tools` under its name — the
        function's ``__name__`` — and the node refers to it by that name.
        """
        self._require_new(id)
        return self._add(ir.ToolNode, id, {
            "kind": "tool", "tool": self._use_tool(tool), "args": _opt_dict(args),
            **self._common(description, writes, timeout, retry, on_error)})

    def function(self, id: str, args: Mapping[str, Any] | None = None, *, description: str = "",
                 writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
                 on_error: NodeLike | None = None) -> Callable[[F], F]:
        """Decorator form of :meth:`tool`: the decorated function becomes tool node ``id``.

        The function is returned unchanged, so it stays callable (and testable) as plain Python::

            @wf.function("normalize", args={"text": "{{ input.text }}"})
            def normalize(text: str) -> str:
                return " ".join(text.split())
        """
        def register(fn: F) -> F:
            self.tool(id, fn, args, description=description, writes=writes, timeout=timeout, retry=retry,
                      on_error=on_error)
            return fn

        return register

    def agent(self, id: str, prompt: str | None = None, *, messages: Messages | None = None,
              system: str | None = None, model: str | None = None, tools: Sequence[ToolLike] = (),
              max_steps: int = 8, tool_choice: str = "auto", parallel_tool_calls: bool = True,
              min_tool_calls: int | None = None, max_tool_calls: int | None = None,
              dispatch: str = "streamed", max_result_chars: int = 16000,
              sampling: SamplingLike | None = None, temperature: float | None = None,
              max_tokens: int | None = None, top_p: float | None = None, top_k: int | None = None,
              seed: int | None = None, stop: str | Sequence[str] | None = None, description: str = "",
              writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
              on_error: NodeLike | None = None) -> NodeRef:
        """An LLM tool-calling loop over ``tools`` (names, Tools or plain functions), at most ``max_steps`` turns.

        See :class:`agentflow.dsl.ir.AgentNode` for ``tool_choice``, ``dispatch`` and the rest."""
        self._require_new(id)
        if isinstance(tools, str):
            raise TypeError(f"node {id!r}: tools must be a list, not one string")
        return self._add(ir.AgentNode, id, {
            "kind": "agent", "prompt": prompt, "messages": _opt_list(messages), "system": system, "model": model,
            "tools": [self._use_tool(t) for t in tools], "max_steps": max_steps,
            **({"tool_choice": tool_choice} if tool_choice != "auto" else {}),
            **({"parallel_tool_calls": parallel_tool_calls} if not parallel_tool_calls else {}),
            **({"dispatch": dispatch} if dispatch != "streamed" else {}),
            "min_tool_calls": min_tool_calls, "max_tool_calls": max_tool_calls,
            **({"max_result_chars": max_result_chars} if max_result_chars != 16000 else {}),
            "sampling": _sampling(sampling, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
                                  top_k=top_k, seed=seed, stop=stop),
            **self._common(description, writes, timeout, retry, on_error)})

    def switch(self, id: str, expression: str | None = None, *, prompt: str | None = None,
               cases: Mapping[str, NodeLike], default: NodeLike | None = None, model: str | None = None,
               sampling: SamplingLike | None = None, temperature: float | None = None, max_tokens: int | None = None,
               top_p: float | None = None, top_k: int | None = None, seed: int | None = None,
               stop: str | Sequence[str] | None = None, description: str = "", writes: Writes | None = None,
               timeout: float | None = None, retry: RetryLike | None = None,
               on_error: NodeLike | None = None) -> NodeRef:
        """Branch on the value of ``expression``, or let an LLM pick a case name with ``prompt``.

        ``cases`` maps each case value to the node it runs; the targets are usually added later, so
        give them by id (or by :class:`NodeRef` when they exist already).
        """
        return self._add(ir.SwitchNode, id, {
            "kind": "switch", "expression": expression, "prompt": prompt, "model": model,
            "cases": {str(case): self._id(target) for case, target in cases.items()},
            "default": self._opt_id(default),
            "sampling": _sampling(sampling, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
                                  top_k=top_k, seed=seed, stop=stop),
            **self._common(description, writes, timeout, retry, on_error)})

    def parallel(self, id: str, branches: Mapping[str, Subgraph | ir.Body], *, description: str = "",
                 writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
                 on_error: NodeLike | None = None) -> NodeRef:
        """Run every branch body at once; the output is a dict of branch name -> result."""
        self._require_new(id)
        bodies = {name: self._adopt(body) for name, body in branches.items()}
        common = self._common(description, writes, timeout, retry, on_error)
        return self._add(ir.ParallelNode, id, lambda: {
            "kind": "parallel", **common,
            "branches": {name: _build_body(body, f"node {id!r}", f"/branches/{name}")
                         for name, body in bodies.items()}})

    def map(self, id: str, over: str, body: Subgraph | ir.Body, *, concurrency: int = 8, description: str = "",
            writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
            on_error: NodeLike | None = None) -> NodeRef:
        """Run ``body`` once per item of the expression ``over`` (``item``, ``index`` bound), ``concurrency``
        at a time; the output is the list of results in item order."""
        self._require_new(id)
        sub = self._adopt(body)
        common = self._common(description, writes, timeout, retry, on_error)
        return self._add(ir.MapNode, id, lambda: {
            "kind": "map", "over": over, "body": _build_body(sub, f"node {id!r}", "/body"), "concurrency": concurrency,
            **common})

    def loop(self, id: str, body: Subgraph | ir.Body, *, condition: str, max_iterations: int = 10,
             description: str = "", writes: Writes | None = None, timeout: float | None = None,
             retry: RetryLike | None = None, on_error: NodeLike | None = None) -> NodeRef:
        """Run ``body`` again while the expression ``condition`` holds, at most ``max_iterations`` times."""
        self._require_new(id)
        sub = self._adopt(body)
        common = self._common(description, writes, timeout, retry, on_error)
        return self._add(ir.LoopNode, id, lambda: {
            "kind": "loop", "body": _build_body(sub, f"node {id!r}", "/body"), "condition": condition,
            "max_iterations": max_iterations, **common})

    def workflow(self, id: str, workflow: str | Workflow, input: Mapping[str, Any] | None = None, *,
                 description: str = "", writes: Writes | None = None, timeout: float | None = None,
                 retry: RetryLike | None = None, on_error: NodeLike | None = None) -> NodeRef:
        """Run another workflow with ``input`` (name -> template); the output is its output.

        A :class:`Workflow` object is referred to by its name and remembered in :attr:`subworkflows`.
        """
        self._require_new(id)
        return self._add(ir.WorkflowNode, id, {
            "kind": "workflow", "workflow": self._use_workflow(workflow), "input": _opt_dict(input),
            **self._common(description, writes, timeout, retry, on_error)})

    def interrupt(self, id: str, prompt: str = "", *, schema: SchemaLike | None = None, description: str = "",
                  writes: Writes | None = None, timeout: float | None = None, retry: RetryLike | None = None,
                  on_error: NodeLike | None = None) -> NodeRef:
        """Pause until the run is resumed with a value (matching ``schema`` when given); the output is that value."""
        return self._add(ir.InterruptNode, id, {
            "kind": "interrupt", "prompt": prompt, "value_schema": _schema(schema),
            **self._common(description, writes, timeout, retry, on_error)})

    def end(self, id: str, *, description: str = "", writes: Writes | None = None, timeout: float | None = None,
            retry: RetryLike | None = None, on_error: NodeLike | None = None) -> NodeRef:
        """Finish the run here: running branches are cancelled and the output is evaluated."""
        return self._add(ir.EndNode, id, {"kind": "end", **self._common(description, writes, timeout, retry, on_error)})

    # -- wiring -------------------------------------------------------------------------------------

    def edge(self, source: NodeLike, target: NodeLike) -> NodeRef:
        """Run ``target`` after ``source``; returns ``target``'s handle. Ids may name nodes added later."""
        pair = (self._id(source), self._id(target))
        if pair in self._edges:
            raise ValueError(f"edge {pair[0]!r} -> {pair[1]!r} was already added")
        self._edges.append(pair)
        return target if isinstance(target, NodeRef) else NodeRef(self, pair[1])

    def chain(self, *nodes: NodeLike) -> NodeRef:
        """Edges between consecutive nodes: ``chain(a, b, c)`` is ``a >> b >> c``; returns the last."""
        if not nodes:
            raise ValueError("chain() needs at least one node")
        last = NodeRef(self, self._id(nodes[0]))
        for node in nodes[1:]:
            last = self.edge(last, node)
        return last

    def start(self, *nodes: NodeLike) -> None:
        """The entry nodes, run first (several start in parallel). Without this, the first node added."""
        if not nodes:
            raise ValueError("start() needs at least one node")
        self._start = [self._id(node) for node in nodes]

    def __getitem__(self, node_id: str) -> NodeRef:
        """The handle of node ``node_id`` (e.g. one added with the :meth:`function` decorator)."""
        if node_id not in self._nodes:
            raise KeyError(f"no node {node_id!r} in this graph")
        return NodeRef(self, node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._nodes

    # -- what the graph brings along ---------------------------------------------------------------

    @property
    def tools(self) -> ToolRegistry:
        """The Python tools this graph's nodes use, bodies included (tools named by string are not here)."""
        found: dict[str, Tool] = {}
        for graph in self._graphs():
            for name, tool in graph._own_tools.items():
                if name in found and found[name].fn is not tool.fn:
                    raise ValueError(f"two different functions are used as tool {name!r}; give one of them "
                                     f"another name with as_tool(fn, name=...)")
                found.setdefault(name, tool)
        return ToolRegistry(found.values())

    @property
    def subworkflows(self) -> dict[str, Workflow]:
        """The :class:`Workflow` objects this graph's ``workflow`` nodes run, by name, bodies included."""
        found: dict[str, Workflow] = {}
        for graph in self._graphs():
            for name, sub in graph._own_subworkflows.items():
                if found.setdefault(name, sub) is not sub:
                    raise ValueError(f"two different Workflow objects are named {name!r}")
        return found

    # -- internals ----------------------------------------------------------------------------------

    def _add(self, model: type[ir.NodeBase], node_id: str,
             fields: dict[str, Any] | Callable[[], dict[str, Any]]) -> NodeRef:
        """Add a node: checked now from a dict, or at build time from a callable (composite nodes)."""
        self._require_new(node_id)

        def make() -> ir.NodeBase:
            data = fields() if callable(fields) else fields
            return _checked(model, {"id": node_id, **_compact(data)}, f"node {node_id!r}")

        if callable(fields):
            self._nodes[node_id] = make
        else:
            node = make()
            self._nodes[node_id] = lambda: node
        return NodeRef(self, node_id)

    def _require_new(self, node_id: str) -> None:
        if node_id in self._nodes:
            raise ValueError(f"duplicate node id {node_id!r}: this graph already has a node with that id")

    def _common(self, description: str, writes: Writes | None, timeout: float | None, retry: RetryLike | None,
                on_error: NodeLike | None) -> dict[str, Any]:
        return {"description": description, "writes": writes if isinstance(writes, str) else _opt_dict(writes),
                "timeout": timeout, "retry": _opt_dict(retry) if isinstance(retry, Mapping) else retry,
                "on_error": self._opt_id(on_error)}

    def _id(self, node: NodeLike) -> str:
        if isinstance(node, NodeRef):
            if node.graph is not self:
                raise ValueError(f"node {node.id!r} belongs to another graph: edges and cases connect nodes of "
                                 f"one graph (the workflow, or one body)")
            return node.id
        if isinstance(node, str):
            return node
        raise TypeError(f"expected a node id or NodeRef, got {type(node).__name__}")

    def _opt_id(self, node: NodeLike | None) -> str | None:
        return None if node is None else self._id(node)

    def _use_tool(self, tool: ToolLike) -> str:
        if isinstance(tool, str):
            return tool
        if not isinstance(tool, Tool) and getattr(tool, "__name__", "<lambda>") == "<lambda>":
            raise ValueError(f"{tool!r} has no usable name; wrap it with as_tool(fn, name=...)")
        made = as_tool(tool)
        known = self._own_tools.setdefault(made.name, made)
        if known.fn is not made.fn:
            raise ValueError(f"two different functions are used as tool {made.name!r}; give one of them another "
                             f"name with as_tool(fn, name=...)")
        return made.name

    def _use_workflow(self, workflow: str | Workflow) -> str:
        if isinstance(workflow, str):
            return workflow
        if not isinstance(workflow, Workflow):
            raise TypeError(f"expected a workflow name or Workflow, got {type(workflow).__name__}")
        if self._own_subworkflows.setdefault(workflow.name, workflow) is not workflow:
            raise ValueError(f"two different Workflow objects are named {workflow.name!r}")
        return workflow.name

    def _adopt(self, body: Subgraph | ir.Body) -> Subgraph | ir.Body:
        if isinstance(body, Subgraph):
            self._bodies.append(body)
        elif not isinstance(body, ir.Body):
            hint = "; run a Workflow with .workflow(id, wf)" if isinstance(body, Workflow) else ""
            raise TypeError(f"a body must be a Subgraph or an ir.Body, not {type(body).__name__}{hint}")
        return body

    def _graphs(self) -> Iterator[Graph]:
        """This graph and every body under it, each once."""
        seen: set[int] = set()
        stack: list[Graph] = [self]
        while stack:
            graph = stack.pop()
            if id(graph) not in seen:
                seen.add(id(graph))
                yield graph
                stack.extend(reversed(graph._bodies))

    def _graph_data(self) -> dict[str, Any]:
        return {"nodes": [make() for make in self._nodes.values()],
                "edges": [ir.Edge.model_validate({"from": source, "to": target}) for source, target in self._edges],
                "start": self._start}


class Subgraph(Graph):
    """The body of a ``parallel`` branch, a ``map`` or a ``loop``: nodes and edges, plus an optional output."""

    def __init__(self) -> None:
        super().__init__()
        self._output: str | None = None

    def output(self, expr: str) -> None:
        """The body's result, an expression; default: its single sink's output (see :class:`ir.Body`)."""
        self._output = expr

    def build(self) -> ir.Body:
        """The IR body."""
        return _build_body(self, "body", "")


class Workflow(Graph):
    """A whole workflow under construction; :meth:`build` gives the validated :class:`ir.WorkflowSpec`.

    ``input`` is the JSON Schema of the run's input (a dict or a pydantic model class).
    """

    def __init__(self, name: str, *, description: str = "", version: int = 1, input: SchemaLike | None = None) -> None:
        super().__init__()
        self.name = name
        self.description = description
        self.version = version
        self._input = _schema(input)
        self._state: dict[str, ir.StateKey] = {}
        self._defaults: ir.Defaults | None = None
        self._output: str | dict[str, str] | None = None
        self._triggers: list[ir.Trigger] = []

    def state(self, key: str, type: ir.JsonType = "any", reducer: ir.Reducer = "replace", default: Any = None,
              description: str = "") -> None:
        """Declare state key ``key``: its JSON type, how writes combine, and its initial value."""
        if key in self._state:
            raise ValueError(f"duplicate state key {key!r}")
        self._state[key] = _checked(ir.StateKey, _compact({
            "type": type, "reducer": reducer, "default": copy.deepcopy(default), "description": description,
        }), f"state key {key!r}")

    def defaults(self, model: str | None = None, *, sampling: SamplingLike | None = None,
                 temperature: float | None = None, max_tokens: int | None = None, top_p: float | None = None,
                 top_k: int | None = None, seed: int | None = None, stop: str | Sequence[str] | None = None,
                 retry: RetryLike | None = None, timeout: float | None = None) -> None:
        """Workflow-wide defaults that nodes may override (replaces earlier calls)."""
        self._defaults = _checked(ir.Defaults, _compact({
            "model": model, "timeout": timeout, "retry": _opt_dict(retry) if isinstance(retry, Mapping) else retry,
            "sampling": _sampling(sampling, temperature=temperature, max_tokens=max_tokens, top_p=top_p,
                                  top_k=top_k, seed=seed, stop=stop),
        }), "defaults")

    def output(self, expr: str | Mapping[str, str]) -> None:
        """The run's output: an expression, or a mapping name -> expression. Default: the whole state."""
        self._output = expr if isinstance(expr, str) else dict(expr)

    def trigger(self, name: str, secret_env: str, *, input: Mapping[str, Any] | str | None = None,
                scheme: ir.TriggerScheme = "standard", tenant: str | None = None, description: str = "") -> None:
        """A webhook that starts this workflow: ``POST /hooks/{name}``, signed with the secret in
        environment variable ``secret_env`` (``scheme``: ``standard`` or ``github``). ``input`` maps
        input keys to templates over ``payload`` and ``headers`` (or is one template for the whole
        input; default: the payload). Runs belong to ``tenant`` (default ``default``)."""
        if any(t.name == name for t in self._triggers):
            raise ValueError(f"duplicate trigger name {name!r}")
        self._triggers.append(_checked(ir.Trigger, _compact({
            "name": name, "secret_env": secret_env, "scheme": scheme, "tenant": tenant, "description": description,
            "input": copy.deepcopy(input if isinstance(input, str) or input is None else dict(input)),
        }), f"trigger {name!r}", f"/triggers/{len(self._triggers)}"))

    def build(self, *, validate: bool = True, tools: ToolRegistry | Collection[str] | None = None,
              workflows: Collection[str] | None = None) -> ir.WorkflowSpec:
        """The workflow's IR, checked structurally and — when ``validate`` — semantically.

        Tool and sub-workflow names are checked only when the other names the workflow may use are
        given (``tools``: e.g. built-ins; ``workflows``: registered ones), since a name given as a string
        may live anywhere; this workflow's own functions and Workflow objects are added to them.
        Raises :class:`WorkflowValidationError` listing every problem.
        """
        own_tools = self.tools.names()  # raises on two functions sharing a tool name
        own_workflows = list(self.subworkflows)
        spec = _checked(ir.WorkflowSpec, _compact({
            "name": self.name, "version": self.version, "description": self.description, "input": self._input,
            "state": self._state, "defaults": self._defaults, "output": self._output, **self._graph_data(),
            "triggers": self._triggers or None,
        }), f"workflow {self.name!r}")
        if validate:
            issues = validate_spec(spec, tools=_known(own_tools, tools), workflows=_known(own_workflows, workflows))
            if issues:
                raise WorkflowValidationError(issues, source=f"workflow {self.name!r}")
        return spec

    def to_yaml(self, *, validate: bool = True) -> str:
        """The workflow as YAML; :func:`load_yaml` reads it back into an equal spec."""
        data = _ids_first(self.build(validate=validate).to_dict())
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# -- helpers ----------------------------------------------------------------------------------------------


def _checked(model: type[M], data: dict[str, Any], where: str, pointer: str = "") -> M:
    """``model.model_validate(data)``, its errors turned into one :class:`WorkflowValidationError`.

    Each issue's message starts with ``where``; its pointer is ``pointer`` plus the error's location.
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [ValidationIssue(code=err["type"], message=f"{where}: {err['msg']}",
                                  pointer=pointer + "".join(f"/{part}" for part in err["loc"]))
                  for err in exc.errors(include_url=False)]
        raise WorkflowValidationError(issues) from exc


def _build_body(body: Subgraph | ir.Body, where: str, pointer: str) -> ir.Body:
    if isinstance(body, ir.Body):
        return body
    return _checked(ir.Body, _compact({**body._graph_data(), "output": body._output}), where, pointer)


def _known(own: list[str], others: ToolRegistry | Collection[str] | None) -> set[str] | None:
    """The names a spec may use: ``own`` plus ``others``, or None (do not check) when ``others`` is None."""
    if others is None:
        return None
    return {*own, *(others.names() if isinstance(others, ToolRegistry) else others)}


def _schema(value: SchemaLike | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, BaseModel):
        return value.model_json_schema()
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"expected a JSON Schema dict or a pydantic model class, got {value!r}")


def _sampling(base: SamplingLike | None, **shorthands: Any) -> ir.Sampling | None:
    """``base`` with the shorthand keywords that were given laid over it; None when nothing was given."""
    given = {name: value for name, value in shorthands.items() if value is not None}
    if isinstance(given.get("stop"), str):
        given["stop"] = [given["stop"]]
    if base is None and not given:
        return None
    data = base.model_dump(exclude_none=True) if isinstance(base, ir.Sampling) else dict(base or {})
    return _checked(ir.Sampling, {**data, **given}, "sampling")


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the None values, so the IR's defaults apply exactly as when YAML omits a field."""
    return {key: value for key, value in data.items() if value is not None}


def _opt_list(items: Sequence[Any] | None) -> list[Any] | None:
    return None if items is None else list(items)


def _opt_dict(mapping: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if mapping is None else dict(mapping)


def _ids_first(spec: dict[str, Any]) -> dict[str, Any]:
    """Dumped IR with ``id`` and ``kind`` first in every node (bodies too), so exported YAML reads naturally."""
    def nodes_first(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"id": node["id"], "kind": node["kind"], **node, **inner(node)} for node in nodes]

    def inner(node: dict[str, Any]) -> dict[str, Any]:
        if "body" in node:
            return {"body": {**node["body"], "nodes": nodes_first(node["body"]["nodes"])}}
        if "branches" in node:
            return {"branches": {name: {**body, "nodes": nodes_first(body["nodes"])}
                                 for name, body in node["branches"].items()}}
        return {}

    return {**spec, "nodes": nodes_first(spec["nodes"])}


__all__ = ["Graph", "NodeLike", "NodeRef", "SchemaLike", "Subgraph", "ToolLike", "Workflow"]
