"""A workflow's graph levels (its top level and every body inside composite nodes, each with its JSON pointer,
label and the names its templates see) and the calls its ``workflow`` nodes make, for the validator."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from agentflow.dsl.ir import AnyNode, Body, LoopNode, MapNode, ParallelNode, WorkflowNode, WorkflowSpec
from agentflow.dsl.structure import json_pointer

KnownWorkflows = Collection[str | WorkflowSpec]
"""The registered workflows: names, specs, or a mapping name -> spec (specs let calls be followed)."""
MAP_SCOPE = ("item", "index")
LOOP_SCOPE = ("iteration", "last")


@dataclass
class Level:
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


def bodies(node: AnyNode) -> Iterator[tuple[Body, str, str, tuple[str, ...]]]:
    """Each body of a composite node: (body, pointer, label, scope variables it binds)."""
    if isinstance(node, ParallelNode):
        for name, body in node.branches.items():
            yield body, json_pointer(["branches", name]), f"branch {name!r} of parallel node {node.id!r}", ()
    elif isinstance(node, MapNode):
        yield node.body, "/body", f"the body of map node {node.id!r}", MAP_SCOPE
    elif isinstance(node, LoopNode):
        yield node.body, "/body", f"the body of loop node {node.id!r}", LOOP_SCOPE


def levels_of(spec: WorkflowSpec) -> list[Level]:
    top = Level(list(spec.nodes), list(spec.edges), spec.start, "", "the top level")
    found, todo = [], [top]
    while todo:
        level = todo.pop(0)
        found.append(level)
        handlers = {n.on_error for n in level.nodes if n.on_error}
        for i, node in enumerate(level.nodes):
            node_ptr = f"{level.pointer}/nodes/{i}"
            for body, sub, label, binds in bodies(node):
                outer = (level.outer | set(level.ids)) - {node.id}
                scope = level.scope | set(binds) | ({"error"} if node.id in handlers else set())
                todo.append(Level(list(body.nodes), list(body.edges), body.start, node_ptr + sub, label,
                                  frozenset(outer), scope, body.output))
    return found


def workflow_calls(levels: list[Level]) -> Iterator[tuple[str, WorkflowNode]]:
    """Each workflow node, bodies included, with its pointer."""
    for level in levels:
        for i, node in enumerate(level.nodes):
            if isinstance(node, WorkflowNode):
                yield f"{level.pointer}/nodes/{i}", node


def call_graph(spec: WorkflowSpec, levels: list[Level],
               workflows: KnownWorkflows | None) -> tuple[frozenset[str] | None, dict[str, list[str]]]:
    """The known workflow names (None: unknown), and workflow name -> the names it calls, for ``spec`` and
    every known spec (``spec`` wins over a known one of the same name: it is the version being checked)."""
    if workflows is None:
        return None, {spec.name: [node.workflow for _, node in workflow_calls(levels)]}
    items = workflows.values() if isinstance(workflows, Mapping) else workflows
    names = set(workflows) if isinstance(workflows, Mapping) else set()
    graph: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, WorkflowSpec):
            names.add(item.name)
            graph[item.name] = [node.workflow for _, node in workflow_calls(levels_of(item))]
        elif isinstance(item, str):
            names.add(item)
    graph[spec.name] = [node.workflow for _, node in workflow_calls(levels)]
    return frozenset(names), graph


def call_cycle(name: str, graph: dict[str, list[str]], path: list[str], done: set[str]) -> list[str] | None:
    """The chain of calls from ``path`` through ``name`` that reaches a workflow already on it, if any.
    ``done`` collects the workflows whose calls are known to end."""
    if name in path:
        return [*path, name]
    if name in done or name not in graph:
        return None
    path.append(name)
    for callee in graph[name]:
        found = call_cycle(callee, graph, path, done)
        if found is not None:
            return found
    path.pop()
    done.add(name)
    return None


__all__ = ["LOOP_SCOPE", "MAP_SCOPE", "KnownWorkflows", "Level", "bodies", "call_cycle", "call_graph", "levels_of",
           "workflow_calls"]
