"""``/metrics`` over a real server: runs, nodes and tool calls counted from the runtime's events (by
workflow, node id and tool, with bounded labels), HTTP requests by route template, and the local
engine's gauges read at scrape time."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentflow.runtime.bus import EventBus
from agentflow.runtime.events import EventBase, NodeCompleted, RunStarted
from agentflow.server import ServerConfig
from agentflow.server.metrics import OTHER, BoundedLabel, Metrics, node_id
from tests.serving import running_server

PIPELINE = """
name: pipeline
input:
  type: object
  properties: {items: {type: array, items: {type: integer}}, fail: {type: boolean}}
  required: [items, fail]
defaults: {retry: {max_attempts: 2, initial_delay: 0.01, jitter: 0}}
nodes:
  - id: each
    kind: map
    over: "input['items']"
    body:
      nodes:
        - {id: double, kind: tool, tool: double, args: {x: "{{ item }}"}}
  - {id: check, kind: tool, tool: check, args: {values: "{{ each }}", fail: "{{ input.fail }}"}}
edges: [{from: each, to: check}]
output: check
"""

SLEEP_S = 0.02


async def double(x: int) -> int:
    await anyio.sleep(SLEEP_S)
    return 2 * x


async def check(values: list[int], fail: bool) -> int:
    if fail:
        raise ValueError("refused")
    return sum(values)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when absent (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_server(ServerConfig(model=None, store=":memory:"), tools=[double, check]) as url:
        yield url


def test_runs_nodes_and_tools_are_counted_by_workflow_node_and_tool(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        put = client.put("/v1/workflows/pipeline", content=PIPELINE, headers={"content-type": "application/yaml"})
        assert put.status_code == 201, put.text
        before = scrape(client)
        runs = [({"items": [1, 2, 3], "fail": False}, "completed", 12), ({"items": [4], "fail": False}, "completed", 8),
                ({"items": [5], "fail": True}, "failed", None)]
        run_ids = []
        for run_input, status, output in runs:
            response = client.post("/v1/workflows/pipeline/runs", params={"wait": "true"}, json={"input": run_input})
            assert response.status_code == 200, response.text
            assert response.json()["status"] == status
            assert response.json()["output"] == output
            run_ids.append(response.json()["run_id"])
        assert client.get(f"/v1/runs/{run_ids[0]}").status_code == 200
        assert client.get("/no/such/route").status_code == 404
        after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    wf = {"workflow": "pipeline"}
    assert delta("agentflow_runs_started_total", **wf) == 3
    assert delta("agentflow_runs_finished_total", **wf, status="completed") == 2
    assert delta("agentflow_runs_finished_total", **wf, status="failed") == 1
    assert delta("agentflow_runs_finished_total", **wf, status="cancelled") == 0
    assert delta("agentflow_run_duration_seconds_count", **wf, status="completed") == 2
    assert delta("agentflow_run_duration_seconds_sum", **wf, status="completed") >= 2 * SLEEP_S  # map items run at once
    assert value(after, "agentflow_runs_active") == 0

    # map items collapse to the node id: 3 + 1 + 1 items of `double`, one label set
    assert delta("agentflow_node_duration_seconds_count", **wf, node="double", status="completed") == 5
    assert delta("agentflow_node_duration_seconds_sum", **wf, node="double", status="completed") >= 5 * SLEEP_S
    assert delta("agentflow_node_duration_seconds_count", **wf, node="each", status="completed") == 3
    assert delta("agentflow_node_duration_seconds_count", **wf, node="check", status="completed") == 2
    assert delta("agentflow_node_duration_seconds_count", **wf, node="check", status="failed") == 2  # try + retry
    assert delta("agentflow_node_retries_total", **wf, node="check") == 1
    nodes = {dict(labels)["node"] for name, labels in after if name == "agentflow_node_duration_seconds_count"}
    assert nodes == {"double", "each", "check"}

    assert delta("agentflow_tool_calls_total", tool="double", outcome="ok") == 5
    assert delta("agentflow_tool_calls_total", tool="check", outcome="ok") == 2
    assert delta("agentflow_tool_calls_total", tool="check", outcome="error") == 2
    assert delta("agentflow_tool_call_duration_seconds_count", tool="double", outcome="ok") == 5
    assert delta("agentflow_tool_call_duration_seconds_sum", tool="double", outcome="ok") >= 5 * SLEEP_S
    bucket = delta("agentflow_tool_call_duration_seconds_bucket", tool="double", outcome="ok", le="0.01")
    assert bucket == 0  # each call sleeps 20 ms

    # HTTP: labelled by route template, never by a raw path or id
    route = "/v1/workflows/{name}/runs"
    assert delta("agentflow_http_requests_total", route=route, method="POST", status="200") == 3
    assert delta("agentflow_http_requests_total", route="/v1/runs/{run_id}", method="GET", status="200") == 1
    assert delta("agentflow_http_requests_total", route="other", method="GET", status="404") == 1
    assert delta("agentflow_http_request_duration_seconds_count", route=route, method="POST") == 3
    routes = {dict(labels).get("route") for name, labels in after if name == "agentflow_http_requests_total"}
    assert not any(run_id in str(r) for r in routes for run_id in run_ids)
    # no model: no engine metrics, but the admission gauge is there
    assert not any(name.startswith("agentflow_engine_") for name, _ in after)
    assert value(after, "agentflow_generation_requests_in_flight") == 0


def test_label_values_are_bounded() -> None:
    label = BoundedLabel(3, max_length=8)
    assert [label(v) for v in ["a", "b", "a", "c", "d", "e", "b"]] == ["a", "b", "a", "c", OTHER, OTHER, "b"]
    assert BoundedLabel(5, max_length=8)("x" * 50) == "x" * 8
    assert [node_id(p) for p in ["fetch", "summaries[3].fetch", "refine#2.draft", "refine#2", "both.left.call",
                                 "each[1]", "call/inner", "outer[0].call/inner#3.x"]] == [
        "fetch", "fetch", "draft", "refine", "call", "each", "inner", "x"]

    metrics = Metrics(max_label_values=2)
    for i in range(5):
        metrics.observe_event(RunStarted(run_id=f"r{i}", seq=1, time=time.time(), workflow=f"wf{i}", version=1))
        metrics.observe_event(NodeCompleted(run_id=f"r{i}", seq=2, time=time.time(), node=f"m[{i}].n{i}",
                                            attempt=1, duration=0.5))
    text = metrics.render()[0].decode()
    workflows = {s.labels["workflow"] for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "agentflow_runs_started_total"}
    assert workflows == {"wf0", "wf1", OTHER}
    started = {s.labels["workflow"]: s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "agentflow_runs_started_total"}
    assert started == {"wf0": 1, "wf1": 1, OTHER: 3}


def test_a_failing_listener_is_logged_and_never_breaks_publishing(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[EventBase] = []

    def broken(event: EventBase) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(seen.append)
    send, receive = bus.subscribe("r1")
    event = RunStarted(run_id="r1", seq=1, time=time.time(), workflow="w", version=1)
    with caplog.at_level(logging.ERROR, logger="agentflow.runtime.bus"):
        bus.publish(event)
    assert seen == [event]
    assert receive.receive_nowait() == event
    assert "listener bug" in caplog.text
    bus.remove_listener(seen.append)
    bus.remove_listener(broken)
    bus.publish(event)
    assert seen == [event]
    bus.unsubscribe("r1", send)
    receive.close()


@pytest.mark.slow
def test_engine_gauges_are_read_at_scrape_time() -> None:
    with running_server(ServerConfig(model="demo", store=":memory:")) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        deadline = time.monotonic() + 120
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the demo model did not load"
            time.sleep(0.1)
        samples = scrape(client)
    assert value(samples, "agentflow_engine_requests_running") == 0
    assert value(samples, "agentflow_engine_requests_waiting") == 0
    assert value(samples, "agentflow_engine_kv_cache_total_slots") > 0
    assert 0 <= value(samples, "agentflow_engine_kv_cache_usage_ratio") <= 1
    assert 0 <= value(samples, "agentflow_engine_prefix_cache_hit_ratio") <= 1
    for name in ("prompt_tokens", "prefix_cache_hit_tokens", "generated_tokens", "steps"):
        assert (f"agentflow_engine_{name}_total", frozenset()) in samples
