"""The pure step algorithm: which nodes of one graph level are ready, and which are skipped.

No I/O and no anyio here (LangGraph keeps ``_algo`` apart from ``_loop`` the same way). A level is a
DAG (the validator rejects cycles; loops use the ``loop`` node). Each node waits until every
incoming edge is resolved; it then runs if at least one resolved *live*, and is skipped otherwise —
its own outgoing edges then resolve dead (dead-path elimination). A ``switch`` makes only its
chosen case live; a failed node with ``on_error`` makes only its error edge live.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from agentflow.dsl.ir import AnyNode, Edge, SwitchNode

EdgeLabel = Literal["next", "case", "error"]


@dataclass(frozen=True)
class Plan:
    """One graph level, indexed for execution."""

    nodes: dict[str, AnyNode]
    start: tuple[str, ...]
    out: dict[str, tuple[tuple[str, EdgeLabel], ...]]
    incoming: dict[str, int]

    @classmethod
    def build(cls, nodes: Sequence[AnyNode], edges: Iterable[Edge], start: Sequence[str] | None) -> Plan:
        by_id = {node.id: node for node in nodes}
        out: dict[str, list[tuple[str, EdgeLabel]]] = {node.id: [] for node in nodes}
        for edge in edges:
            out[edge.source].append((edge.target, "next"))
        for node in nodes:
            if isinstance(node, SwitchNode):
                cases = dict.fromkeys([*node.cases.values(), *([node.default] if node.default else [])])
                out[node.id].extend((target, "case") for target in cases)
            if node.on_error:
                out[node.id].append((node.on_error, "error"))
        incoming = dict.fromkeys(by_id, 0)
        for targets in out.values():
            for target, _ in targets:
                incoming[target] += 1
        entry = tuple(dict.fromkeys(start)) if start else (nodes[0].id,)  # each start node runs once
        return cls(by_id, entry, {k: tuple(v) for k, v in out.items()}, incoming)

    def live_targets(self, node_id: str, *, outcome: Literal["ok", "error"],
                     case_target: str | None = None) -> set[str]:
        """The targets a node's completion makes live: its plain edges (and the chosen case) on success,
        only the ``on_error`` target on a handled failure."""
        live: set[str] = set()
        for target, label in self.out[node_id]:
            if outcome == "error":
                if label == "error":
                    live.add(target)
            elif label == "next" or (label == "case" and target == case_target):
                live.add(target)
        return live


@dataclass
class Frontier:
    """Tracks one execution of a level: resolve a finished node, learn what became ready or skipped."""

    plan: Plan
    pending: dict[str, int] = field(init=False)
    live_in: dict[str, int] = field(init=False)
    skipped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.pending = dict(self.plan.incoming)
        self.live_in = dict.fromkeys(self.plan.nodes, 0)

    def initial(self) -> list[str]:
        """The start nodes, each once (they run first, whatever else points at them)."""
        for node_id in self.plan.start:
            self.pending[node_id] = 0
        return list(self.plan.start)

    def resolve(self, node_id: str, live: set[str]) -> list[str]:
        """Record that ``node_id`` finished with ``live`` targets; return the nodes now ready to run.
        Nodes that became unreachable are added to ``skipped`` (transitively)."""
        ready: list[str] = []
        stack = [(node_id, live)]
        while stack:
            current, current_live = stack.pop()
            for target, _ in self.plan.out[current]:
                if self.pending[target] <= 0:
                    continue  # a start node, or already decided
                self.pending[target] -= 1
                if target in current_live:
                    self.live_in[target] += 1
                if self.pending[target] == 0:
                    if self.live_in[target] > 0:
                        ready.append(target)
                    else:
                        self.skipped.add(target)
                        stack.append((target, set()))
        return ready


__all__ = ["EdgeLabel", "Frontier", "Plan"]
