"""Node paths: where a node runs inside a run, as events, checkpoints and interrupts name it.

A path is the node's id, prefixed by the composite nodes around it::

    approve                 a top-level node
    gather.news.fetch       node ``fetch`` in branch ``news`` of parallel node ``gather``
    each[3].translate       in item 3 of map node ``each``
    improve#2.grade         in iteration 2 of loop node ``improve``
    localize/shout          in the sub-workflow that workflow node ``localize`` runs

(``RunExecution`` builds these prefixes; :func:`node_at` reads them back.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from agentflow.dsl.ir import LoopNode, MapNode, ParallelNode, WorkflowNode, WorkflowSpec

_STEP = re.compile(r"(?P<id>[A-Za-z_]\w*)"
                   r"(?:(?P<call>/)|\.(?P<branch>[A-Za-z_]\w*)\.|(?P<item>\[\d+\]\.)|(?P<iteration>#\d+\.))?", re.ASCII)
"""One step of a path: a node id, then how its composite is entered (none for the last step)."""


def node_at(spec: WorkflowSpec, path: str, workflow_for: Callable[[str], WorkflowSpec | None]) -> Any | None:
    """The node of ``spec`` (or of a sub-workflow, looked up with ``workflow_for``) that ``path`` names;
    None when it names none."""
    nodes: Sequence[Any] = spec.nodes
    rest = path
    while True:
        step = _STEP.match(rest)
        node = next((n for n in nodes if n.id == step["id"]), None) if step is not None else None
        if step is None or node is None:
            return None
        rest = rest[step.end():]
        entered = step.end() > len(step["id"])
        if not entered:
            return None if rest else node
        if step["call"] and isinstance(node, WorkflowNode):
            sub = workflow_for(node.workflow)
            nodes = sub.nodes if sub is not None else ()
        elif step["branch"] and isinstance(node, ParallelNode) and step["branch"] in node.branches:
            nodes = node.branches[step["branch"]].nodes
        elif (step["item"] and isinstance(node, MapNode)) or (step["iteration"] and isinstance(node, LoopNode)):
            nodes = node.body.nodes
        else:
            return None


__all__ = ["node_at"]
