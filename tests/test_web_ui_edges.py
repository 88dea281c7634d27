"""The web UI at its edges, in a real browser against a real server: a replay of tens of thousands of
events arriving at once, a map over 300 items (one card each), a tool result of megabytes, and input
schemas the form must not get wrong (a required field with no property, a property named ``__proto__``).
The browser and page fixtures are those of ``tests/test_web_ui.py``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentflow.server import ServerConfig
from tests.serving import running_server
from tests.test_web_ui import browser, expect, page, register  # noqa: F401  # fixtures shared with the UI tests

FAN = """
name: fan
input: {type: object, properties: {items: {type: array, items: {type: integer}}}, required: [items]}
nodes:
  - id: each
    kind: map
    over: "input['items']"
    body:
      nodes:
        - {id: double, kind: tool, tool: double, args: {x: "{{ item }}"}}
output: each
"""

BIG = """
name: big
input: {type: object, properties: {lines: {type: integer}}, required: [lines]}
nodes:
  - {id: gen, kind: tool, tool: lines, args: {n: "{{ input.lines }}"}}
output: gen
"""

ODD = """
name: odd
input:
  type: object
  required: [ghost, nested]
  properties:
    nested: {type: object, properties: {a: {type: string}}, required: [a]}
    __proto__: {type: string}
    either: {anyOf: [{type: string}, {type: integer}]}
nodes:
  - {id: echo, kind: tool, tool: echo, args: {data: "{{ input }}"}}
output: echo
"""


async def double(x: int) -> int:
    return 2 * x


async def lines(n: int) -> str:
    return "\n".join(f"line {i} " + "x" * 60 for i in range(n))


async def echo(data: dict[str, Any]) -> dict[str, Any]:
    return data


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    config = ServerConfig(model=None, store=":memory:", heartbeat_s=0.5)
    with running_server(config, tools=[double, lines, echo]) as url:
        register(url, FAN, BIG, ODD)
        yield url


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def followed_to_the_end(page: Any) -> None:  # noqa: F811
    page.wait_for_selector('.connection[data-state="ended"]', state="attached")


PARSE = """async () => {
  const {SSEParser} = await import("./sse.js");
  const frames = [];
  const text = "x".repeat(60);
  for (let i = 1; i <= 40000; i++) {
    frames.push(`id: ${i}\\nevent: llm.delta\\ndata: {"seq":${i},"text":"${text}"}\\n\\n`);
  }
  const seen = [];
  const parser = new SSEParser((m) => seen.push(Number(m.id)));
  const started = performance.now();
  parser.feed(frames.join(""));
  const ms = performance.now() - started;
  const mixed = "id: 1\\r\\ndata: a\\r\\n\\r\\nid: 2\\rdata: b\\r\\rid: 3\\ndata: c\\n\\n";
  const wrong = [];
  for (let i = 0; i <= mixed.length; i++) {
    for (let j = i; j <= mixed.length; j++) {
      const got = [];
      const p = new SSEParser((m) => got.push(m.id + m.data));
      for (const part of [mixed.slice(0, i), mixed.slice(i, j), mixed.slice(j)]) p.feed(part);
      if (got.join() !== "1a,2b,3c") wrong.push([i, j, got.join()]);
    }
  }
  return {ms, count: seen.length, ordered: seen.every((seq, k) => seq === k + 1), wrong};
}"""


def test_a_replay_that_arrives_at_once_is_parsed_in_one_pass(page: Any, server: str) -> None:  # noqa: F811
    page.goto(f"{server}/ui/#/workflows")
    expect(page.locator("table.workflows")).to_be_visible()
    result = page.evaluate(PARSE)
    assert result["count"] == 40000 and result["ordered"] and result["wrong"] == []
    # 4.7 MB in one chunk: ~50 ms in one pass; searching the rest of the buffer at every line took seconds
    assert result["ms"] < 1000, result["ms"]


def test_a_map_over_300_items_shows_one_card_per_item(page: Any, server: str,  # noqa: F811
                                                      api: httpx.Client) -> None:
    run = api.post("/v1/workflows/fan/runs?wait=true", json={"input": {"items": list(range(300))}}).json()
    page.goto(f"{server}/ui/#/runs/{run['run_id']}")
    followed_to_the_end(page)
    paths = page.locator(".node").evaluate_all("cards => cards.map(card => card.dataset.node)")
    assert len(paths) == len(set(paths)) == 301 and paths[0] == "each"
    assert set(paths[1:]) == {f"each[{i}].double" for i in range(300)}
    expect(page.locator('.node[data-state="completed"]')).to_have_count(301)
    with api.stream("GET", f"/v1/runs/{run['run_id']}/events") as stream:
        total = sum(line.startswith("id:") for line in stream.iter_lines())
    assert page.locator(".event-count").text_content() == f"{total} events"


def test_a_huge_tool_result_is_cut_and_shown_whole_on_request(page: Any, server: str,  # noqa: F811
                                                              api: httpx.Client) -> None:
    run = api.post("/v1/workflows/big/runs?wait=true", json={"input": {"lines": 5000}}).json()
    full = json.dumps(run["output"])
    assert len(full) > 300_000
    page.goto(f"{server}/ui/#/runs/{run['run_id']}")
    followed_to_the_end(page)
    result = page.locator(".tool-call pre.result")
    expect(result).to_have_attribute("data-truncated", "true")
    assert result.text_content() == full[:100_000]
    page.locator(".tool-call .show-all").click()
    expect(page.locator(".tool-call .show-all")).to_have_count(0)
    assert json.loads(result.text_content()) == run["output"]
    expect(page.locator(".run-output")).to_have_attribute("data-truncated", "true")


def test_the_form_asks_for_required_names_without_a_property_and_keeps_odd_ones(page: Any, server: str,  # noqa: F811
                                                                              api: httpx.Client) -> None:
    page.goto(f"{server}/ui/#/workflows/odd")
    form = page.locator("form.run-form")
    expect(form.locator('[data-field="ghost"] .required')).to_be_visible()  # required, though not a property
    form.locator('[name="ghost"]').fill("[1, 2]")
    form.locator('[name="nested"]').fill('{"a": "b"}')
    form.locator('[name="__proto__"]').fill("not a prototype")
    form.locator('[name="either"]').fill("7")
    form.get_by_role("button", name="Edit as JSON").click()  # the value goes over to the JSON editor and back
    typed = {"ghost": [1, 2], "nested": {"a": "b"}, "__proto__": "not a prototype", "either": 7}
    assert json.loads(form.locator("textarea.raw-json").input_value()) == typed
    form.get_by_role("button", name="Edit as form").click()
    expect(form.locator('[name="__proto__"]')).to_have_value("not a prototype")
    form.get_by_role("button", name="Start run").click()
    expect(page.locator(".run-view")).to_be_visible()
    run_id = page.locator(".run-view").get_attribute("data-run")
    followed_to_the_end(page)
    assert api.get(f"/v1/runs/{run_id}").json()["input"] == typed
