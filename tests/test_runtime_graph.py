"""The pure step algorithm: readiness, joins, and dead-path elimination after switches and errors."""

from __future__ import annotations

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime.graph import Frontier, Plan


def plan(nodes: list[dict], edges: list[tuple[str, str]], start: list[str] | None = None) -> Plan:
    spec = WorkflowSpec.model_validate({"name": "t", "nodes": nodes, "start": start,
                                        "edges": [{"from": a, "to": b} for a, b in edges]})
    return Plan.build(spec.nodes, spec.edges, spec.start)


def tool(node_id: str, **extra: object) -> dict:
    return {"id": node_id, "kind": "tool", "tool": "t", **extra}


def test_join_waits_for_every_live_predecessor() -> None:
    p = plan([tool("a"), tool("b"), tool("c"), tool("d")], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    f = Frontier(p)
    assert f.initial() == ["a"]
    assert sorted(f.resolve("a", p.live_targets("a", outcome="ok"))) == ["b", "c"]
    assert f.resolve("b", p.live_targets("b", outcome="ok")) == []  # d still waits for c
    assert f.resolve("c", p.live_targets("c", outcome="ok")) == ["d"]


def test_switch_skips_the_branch_not_taken_and_the_join_still_runs() -> None:
    nodes = [{"id": "s", "kind": "switch", "expression": "input.x", "cases": {"yes": "y", "no": "n"}},
             tool("y"), tool("n"), tool("n2"), tool("join")]
    p = plan(nodes, [("n", "n2"), ("y", "join"), ("n2", "join")])
    f = Frontier(p)
    f.initial()
    assert f.resolve("s", p.live_targets("s", outcome="ok", case_target="y")) == ["y"]
    assert f.skipped == {"n", "n2"}
    assert f.resolve("y", p.live_targets("y", outcome="ok")) == ["join"]


def test_on_error_edge_is_live_only_on_failure() -> None:
    p = plan([tool("a", on_error="fix"), tool("b"), tool("fix")], [("a", "b")])
    ok = Frontier(p)
    ok.initial()
    assert ok.resolve("a", p.live_targets("a", outcome="ok")) == ["b"]
    assert ok.skipped == {"fix"}
    failed = Frontier(p)
    failed.initial()
    assert failed.resolve("a", p.live_targets("a", outcome="error")) == ["fix"]
    assert failed.skipped == {"b"}


def test_several_start_nodes_start_together() -> None:
    p = plan([tool("a"), tool("b"), tool("c")], [("a", "c"), ("b", "c")], start=["a", "b"])
    f = Frontier(p)
    assert f.initial() == ["a", "b"]
    assert f.resolve("a", {"c"}) == []
    assert f.resolve("b", {"c"}) == ["c"]


def test_a_start_node_listed_twice_starts_once() -> None:
    p = plan([tool("a"), tool("b")], [("a", "b")], start=["a", "a"])
    f = Frontier(p)
    assert f.initial() == ["a"]
    assert f.resolve("a", {"b"}) == ["b"]


def test_retry_delay_grows_and_is_capped() -> None:
    from agentflow.dsl.ir import RetryPolicy

    policy = RetryPolicy(max_attempts=5, initial_delay=0.1, backoff=2, max_delay=0.3, jitter=0)
    assert [policy.delay(a) for a in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    jittered = RetryPolicy(initial_delay=1, jitter=0.5)
    assert jittered.delay(1, 0.0) == 0.5 and jittered.delay(1, 0.999999) > 1.49


def test_llm_output_check_uses_decimal_multiple_of() -> None:
    import pytest

    from agentflow.dsl.ir import LLMNode
    from agentflow.runtime.errors import OutputError
    from agentflow.runtime.nodes import check_output

    node = LLMNode(id="x", kind="llm", prompt="p", output_schema={"type": "number", "multipleOf": 0.01})
    assert check_output(node, "19.99", "x") == 19.99  # binary floats would call this "not a multiple"
    with pytest.raises(OutputError, match="not a multiple"):
        check_output(node, "19.991", "x")
    with pytest.raises(OutputError, match="not valid JSON"):
        check_output(node, "{", "x")
