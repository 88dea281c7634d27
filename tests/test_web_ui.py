"""The web UI (``web/``) in a real browser: Debian's Chromium driven by Playwright against a real server.

Each test drives the page as a user would (follow links, fill the generated form, press buttons) and
checks what it shows against what the API says: the workflow list, a run started from the form and
followed live to its output, an interrupt resumed from the page, Cancel, API errors shown (and bad
JSON caught before sending), the API-key prompt, server strings shown as text and never as markup,
and the event stream surviving a dropped connection and a reload with nothing shown twice or missed.
One test streams real LLM text from the built-in demo model. The static route itself (content types,
caching, path traversal, a missing folder) is checked over plain HTTP and needs no browser.

Without Chromium (``/usr/bin/chromium``, or ``$AGENTFLOW_CHROMIUM``) or the ``playwright`` package the
browser tests skip; with ``AGENTFLOW_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from pydantic import Field
from starlette.testclient import TestClient

from agentflow.server import ServerConfig, create_app
from agentflow.tool import tool
from tests.server_workflows import SLEEPY, STEPS, nap, tick
from tests.serving import running_server

CHROMIUM = os.environ.get("AGENTFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 20_000
XSS = '<img src=x onerror="window.__pwned = 1">'

GREET = f"""
name: greet
description: 'Greets someone, echoing the typed input {XSS}'
input:
  type: object
  required: [name, times]
  properties:
    name: {{type: string, description: Who to greet}}
    times: {{type: integer, minimum: 1, default: 2}}
    loud: {{type: boolean, default: false}}
    ratio: {{type: number}}
    tone: {{enum: [warm, dry, formal], default: warm}}
    tags: {{type: array, items: {{type: string}}}}
nodes:
  - {{id: compose, kind: tool, tool: compose, args: {{data: "{{{{ input }}}}"}}}}
output: compose
"""

APPROVAL = """
name: approval
input: {type: object, properties: {amount: {type: integer}}, required: [amount]}
nodes:
  - id: ask
    kind: interrupt
    prompt: "Approve {{ input.amount }} euros?"
    schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
  - {id: record, kind: tool, tool: tick, args: {x: "{{ input.amount }}"}}
edges: [{from: ask, to: record}]
output: {decision: ask, recorded: record}
"""

FLAKY = """
name: flaky
nodes:
  - id: fetch
    kind: tool
    tool: refuse
    args: {why: "upstream said <b>no</b>"}
    retry: {max_attempts: 2, initial_delay: 0.05}
"""

HELPER = """
name: helper
description: An agent on the demo model that looks something up, then answers.
input: {type: object, properties: {question: {type: string, default: "What is 2 + 2?"}}, required: [question]}
nodes:
  - id: think
    kind: agent
    prompt: "{{ input.question }} Look it up first."
    tools: [lookup]
    tool_choice: lookup
    max_tool_calls: 1
    max_steps: 2
    sampling: {temperature: 0, max_tokens: 48}
"""


async def compose(data: dict[str, Any]) -> dict[str, Any]:
    return {"greeting": f"hello {data.get('name')} " + XSS, "input": data}


async def refuse(why: str) -> str:
    raise RuntimeError(why)


@tool(side_effects=False)
async def lookup(topic: Annotated[str, Field(max_length=16)]) -> str:
    """Look up one fact about a topic."""
    return f"fact about {topic}: 42"


YAML = {"content-type": "application/yaml"}


def register(url: str, *texts: str, headers: dict[str, str] | None = None) -> None:
    with httpx.Client(base_url=url, headers=headers) as client:
        for text in texts:
            assert client.post("/v1/workflows", content=text, headers=YAML).status_code == 201, text


# ---- the browser -----------------------------------------------------------------------------------------


def _no_browser(reason: str) -> None:
    if os.environ.get("AGENTFLOW_REQUIRE_BROWSER") == "1":
        pytest.fail(f"AGENTFLOW_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[dev]')")
    if not Path(CHROMIUM).is_file():
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set AGENTFLOW_CHROMIUM)")
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (its own storage) that fails the test on any script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("ui") / "runs.db"
    config = ServerConfig(model=None, store=str(store), heartbeat_s=0.5)
    with running_server(config, tools=[compose, tick, nap, refuse]) as url:
        register(url, GREET, STEPS, APPROVAL, SLEEPY, FLAKY)
        yield url


@pytest.fixture
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def expect(target: Any) -> Any:
    from playwright.sync_api import expect

    return expect(target)


def run_id_of(page: Any) -> str:
    expect(page.locator(".run-view")).to_be_visible()
    return str(page.locator(".run-view").get_attribute("data-run"))


def shown_json(page: Any, selector: str) -> Any:
    return json.loads(page.locator(selector).text_content())


def event_count(api: httpx.Client, run_id: str) -> int:
    """How many events the run has (its stream replays them all and ends: the run must be finished)."""
    with api.stream("GET", f"/v1/runs/{run_id}/events") as stream:
        return sum(line.startswith("id:") for line in stream.iter_lines())


# ---- workflows, the form, a run followed live -----------------------------------------------------------


def test_workflow_list_shows_registered_workflows_with_links(page: Any, server: str, api: httpx.Client) -> None:
    page.goto(f"{server}/")  # redirects to /ui/, which opens on the workflows
    expect(page.locator("table.workflows")).to_be_visible()
    assert page.url.startswith(f"{server}/ui/")
    listed = api.get("/v1/workflows").json()["data"]
    rows = page.locator("table.workflows tbody tr")
    expect(rows).to_have_count(len(listed))
    for workflow in listed:
        row = page.locator(f'tr[data-workflow="{workflow["name"]}"]')
        expect(row).to_contain_text(f"v{workflow['version']}")
        expect(row).to_contain_text(workflow["description"])
    page.locator('tr[data-workflow="steps"] a').click()
    expect(page).to_have_url(f"{server}/ui/#/workflows/steps")
    expect(page.locator("h1")).to_contain_text("steps")


def test_form_from_the_input_schema_starts_a_run_that_completes(page: Any, server: str, api: httpx.Client) -> None:
    page.goto(f"{server}/ui/#/workflows/greet")
    form = page.locator("form.run-form")
    # one field per property, of the right kind, with required markers and defaults
    kinds = {name: form.locator(f'[name="{name}"]').get_attribute("data-kind")
             for name in ("name", "times", "loud", "ratio", "tone", "tags")}
    assert kinds == {"name": "string", "times": "integer", "loud": "boolean", "ratio": "number", "tone": "enum",
                     "tags": "json"}
    expect(form.locator('[data-field="name"] .required')).to_be_visible()
    expect(form.locator('[data-field="times"] .required')).to_be_visible()
    expect(form.locator('[data-field="ratio"] .required')).to_have_count(0)
    expect(form.locator('[name="times"]')).to_have_value("2")
    expect(form.locator('[name="tone"] option:checked')).to_have_text("warm")
    expect(form.locator('[data-field="name"]')).to_contain_text("Who to greet")

    form.locator('[name="name"]').fill("Ada")
    form.locator('[name="times"]').fill("3")
    form.locator('[name="loud"]').check()
    form.locator('[name="ratio"]').fill("0.5")
    form.locator('[name="tone"]').select_option(label="dry")
    form.locator('[name="tags"]').fill('["x", "y"]')
    form.get_by_role("button", name="Start run").click()

    expect(page).to_have_url(f"{server}/ui/#/runs/" + run_id_of(page))
    run_id = run_id_of(page)
    expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    expect(page.locator('.node[data-node="compose"]')).to_have_attribute("data-state", "completed")
    run = api.get(f"/v1/runs/{run_id}").json()
    typed = {"name": "Ada", "times": 3, "loud": True, "ratio": 0.5, "tone": "dry", "tags": ["x", "y"]}
    assert run["status"] == "completed" and run["input"] == typed
    assert shown_json(page, ".run-output") == run["output"]
    assert run["output"]["input"] == typed
    tool_call = page.locator('.node[data-node="compose"] .tool-call')
    expect(tool_call.locator(".tool-name")).to_have_text("compose")
    assert json.loads(tool_call.locator(".args").text_content()) == {"data": typed}
    assert page.locator(".event-count").text_content() == f"{event_count(api, run_id)} events"

    # the URL is a deep link: a reload shows the same run, rebuilt from its events
    page.reload()
    expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    assert run_id_of(page) == run_id and shown_json(page, ".run-output") == run["output"]


def test_runs_list_newest_first_with_status_filter_and_load_more(page: Any, server: str,
                                                                 api: httpx.Client) -> None:
    for i in range(27):  # more than one page (25)
        assert api.post("/v1/workflows/steps/runs?wait=true", json={"input": {"n": i}}).status_code == 200
    newest = api.get("/v1/runs", params={"limit": 50}).json()["data"]
    page.goto(f"{server}/ui/#/runs")
    rows = page.locator("table.runs tbody tr")
    expect(rows).to_have_count(25)
    assert [rows.nth(i).get_attribute("data-run") for i in range(25)] == [r["run_id"] for r in newest[:25]]
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(len(newest))  # 27 to 50: all on the two pages
    assert rows.evaluate_all("rows => rows.map(row => row.dataset.run)") == [r["run_id"] for r in newest]

    page.locator('select[name="status"]').select_option("completed")
    expect(page).to_have_url(f"{server}/ui/#/runs?status=completed")
    expect(rows.first).to_be_visible()
    statuses = page.locator("table.runs tbody tr .badge").all_text_contents()
    assert statuses and set(statuses) == {"completed"}

    rows.first.locator("a").first.click()
    expect(page.locator(".run-view")).to_be_visible()


# ---- interrupts, cancel ---------------------------------------------------------------------------------


def test_interrupt_shows_the_prompt_and_resuming_from_the_page_completes(page: Any, server: str,
                                                                         api: httpx.Client) -> None:
    page.goto(f"{server}/ui/#/workflows/approval")
    page.locator('[name="amount"]').fill("250")
    page.get_by_role("button", name="Start run").click()
    panel = page.locator('.interrupt[data-interrupt="ask"]')
    expect(panel.locator(".prompt")).to_have_text("Approve 250 euros?")
    expect(page.locator(".run-view")).to_have_attribute("data-status", "interrupted")
    expect(page.locator('.node[data-node="ask"]')).to_have_attribute("data-state", "waiting")
    run_id = run_id_of(page)
    assert api.get(f"/v1/runs/{run_id}").json()["interrupt"]["prompt"] == "Approve 250 euros?"

    # the value editor comes from the interrupt's schema: a checkbox, and raw JSON on request
    panel.locator('[name="approved"]').check()
    panel.get_by_role("button", name="Edit as JSON").click()
    expect(panel.locator("textarea.raw-json")).to_have_value('{"approved":true}')
    panel.get_by_role("button", name="Resume").click()

    expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    expect(panel).to_have_count(0)
    run = api.get(f"/v1/runs/{run_id}").json()
    assert run["output"] == {"decision": {"approved": True}, "recorded": 251}
    assert shown_json(page, ".run-output") == run["output"]
    expect(page.locator('.node[data-node="ask"]')).to_have_attribute("data-state", "completed")
    expect(page.locator('.node[data-node="record"]')).to_have_attribute("data-state", "completed")


def test_cancel_from_the_page(page: Any, server: str, api: httpx.Client) -> None:
    page.goto(f"{server}/ui/#/workflows/sleepy")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator('.node[data-node="nap"]')).to_have_attribute("data-state", "running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".run-view")).to_have_attribute("data-status", "cancelled")
    expect(page.locator(".outcome-cancelled")).to_contain_text("cancelled from the web UI")
    expect(page.locator('.node[data-node="nap"]')).to_have_attribute("data-state", "stopped")
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()
    assert api.get(f"/v1/runs/{run_id_of(page)}").json()["status"] == "cancelled"


def test_a_failing_node_shows_its_retry_and_the_run_error(page: Any, server: str, api: httpx.Client) -> None:
    page.goto(f"{server}/ui/#/workflows/flaky")
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".run-view")).to_have_attribute("data-status", "failed")
    card = page.locator('.node[data-node="fetch"]')
    expect(card).to_have_attribute("data-state", "failed")
    expect(card.locator(".attempt")).to_have_text("attempt 2")
    expect(card.locator(".note.warn")).to_contain_text("retrying")
    expect(card.locator(".tool-call")).to_have_count(2)  # one per attempt, each with its error
    expect(card.locator(".tool-call .error-text")).to_have_text(["RuntimeError: upstream said <b>no</b>"] * 2)
    run = api.get(f"/v1/runs/{run_id_of(page)}").json()
    assert run["status"] == "failed" and "upstream said <b>no</b>" in run["error"]
    expect(page.locator(".run-error")).to_contain_text("upstream said <b>no</b>")
    assert "RuntimeError: RuntimeError" not in page.locator(".run-error").inner_text()  # the type once
    assert page.locator("b").count() == 0


# ---- errors ---------------------------------------------------------------------------------------------


def test_api_errors_are_shown_and_bad_json_is_caught_before_sending(page: Any, server: str) -> None:
    posts: list[str] = []
    page.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    page.goto(f"{server}/ui/#/workflows/greet")
    form = page.locator("form.run-form")
    form.get_by_role("button", name="Edit as JSON").click()
    raw = form.locator("textarea.raw-json")
    raw.fill('{"name": "Ada", "times": ')
    form.get_by_role("button", name="Start run").click()
    alert = page.locator(".message.error")
    expect(alert).to_contain_text("Not sent: the input is not valid JSON")
    assert posts == []

    page.locator(".message .dismiss").click()
    raw.fill('{"name": "Ada", "times": "three"}')
    form.get_by_role("button", name="Start run").click()
    expect(alert).to_contain_text("The run was not started")
    expect(alert).to_contain_text("times")
    expect(alert.locator(".message-detail")).to_contain_text("HTTP 422")
    expect(alert.locator(".message-detail")).to_contain_text("invalid_input")
    assert len(posts) == 1
    expect(page).to_have_url(f"{server}/ui/#/workflows/greet")  # still on the form, input kept
    expect(raw).to_have_value('{"name": "Ada", "times": "three"}')

    page.goto(f"{server}/ui/#/runs/no-such-run")
    expect(page.locator(".message.error")).to_contain_text("no run 'no-such-run'")
    page.goto(f"{server}/ui/#/workflows/no-such-workflow")
    expect(page.locator(".message.error")).to_contain_text("workflow_not_found")


def test_server_strings_are_shown_as_text_never_as_markup(page: Any, server: str) -> None:
    page.goto(f"{server}/ui/#/workflows")
    expect(page.locator('tr[data-workflow="greet"] .description')).to_contain_text(XSS)
    page.locator('tr[data-workflow="greet"] a').click()
    page.locator('[name="name"]').fill(XSS)
    page.get_by_role("button", name="Start run").click()
    expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    expect(page.locator(".run-output")).to_contain_text(f"hello {XSS}".replace('"', '\\"'))
    expect(page.locator(".tool-call .result")).to_contain_text("onerror")
    assert page.evaluate("document.querySelectorAll('img, [onerror]').length") == 0
    assert page.evaluate("window.__pwned") is None


# ---- the event stream: a dropped connection, a reload ---------------------------------------------------


class DroppingProxy:
    """A TCP forwarder in front of the server whose open connections can all be cut at once: the
    network dropping under the page, which the page must notice and recover from by itself."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._close(source, sink)

    def _close(self, *socks: socket.socket) -> None:
        with self.lock:
            for sock in socks:
                self.sockets.discard(sock)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def drop(self) -> None:
        self._close(*list(self.sockets))

    def close(self) -> None:
        self.listener.close()
        self.drop()


@pytest.mark.slow
def test_a_dropped_stream_reconnects_with_last_event_id(page: Any, server: str, api: httpx.Client) -> None:
    proxy = DroppingProxy(server)
    resumed_after: list[int] = []

    def seen(request: Any) -> None:
        if request.url.endswith("/events") and "last-event-id" in request.headers:
            resumed_after.append(int(request.headers["last-event-id"]))

    page.on("request", seen)
    try:
        run_id = api.post("/v1/workflows/steps/runs", json={"input": {"n": 1, "delay": 0.5}}).json()["run_id"]
        page.goto(f"{proxy.url}/ui/#/runs/{run_id}")
        # b runs for half a second: checked every frame (expect() polls at growing intervals and can miss it)
        page.wait_for_function("() => document.querySelector('.node[data-node=b]')?.dataset.state === 'running'",
                               polling="raf")
        expect(page.locator(".connection")).to_have_attribute("data-state", "live")
        proxy.drop()
        expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    finally:
        proxy.close()
    assert resumed_after and resumed_after[0] >= 4, resumed_after  # run.started, a's 4 events, b started ...
    nodes = page.locator(".node")
    assert [nodes.nth(i).get_attribute("data-node") for i in range(nodes.count())] == ["a", "b", "c", "d"]
    for node in "abcd":
        expect(page.locator(f'.node[data-node="{node}"] .tool-call')).to_have_count(1)
        expect(page.locator(f'.node[data-node="{node}"]')).to_have_attribute("data-state", "completed")
    total = event_count(api, run_id)
    assert page.locator(".event-count").text_content() == f"{total} events"
    assert page.locator(".run-view").get_attribute("data-last-seq") == str(total)
    assert shown_json(page, ".run-output") == api.get(f"/v1/runs/{run_id}").json()["output"] == 5


@pytest.mark.slow
def test_a_reload_mid_run_shows_every_node_once(page: Any, server: str, api: httpx.Client) -> None:
    run_id = api.post("/v1/workflows/steps/runs", json={"input": {"n": 10, "delay": 0.6}}).json()["run_id"]
    page.goto(f"{server}/ui/#/runs/{run_id}")
    expect(page.locator('.node[data-node="b"]')).to_be_visible()
    page.reload()
    expect(page.locator(".run-view")).to_have_attribute("data-status", "running")
    expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
    expect(page.locator(".node")).to_have_count(4)
    expect(page.locator(".tool-call")).to_have_count(4)
    assert page.locator(".event-count").text_content() == f"{event_count(api, run_id)} events"
    assert shown_json(page, ".run-output") == 14


# ---- API keys -------------------------------------------------------------------------------------------


def test_the_page_asks_for_the_api_key_and_keeps_it(browser: Any, tmp_path: Path) -> None:
    key = "acme-secret-key-0001"
    config = ServerConfig(model=None, store=str(tmp_path / "runs.db"), api_keys=[{"tenant": "acme", "key": key}])
    with running_server(config, tools=[tick]) as url:
        register(url, STEPS, headers={"Authorization": f"Bearer {key}"})
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{url}/ui/")
            expect(page.locator(".message.warn")).to_contain_text("needs an API key")
            expect(page.locator("#key-form")).to_have_class(re.compile(r"\bneeded\b"))
            page.locator("#api-key").fill("wrong-key-000000000")
            page.locator("#key-form button").click()
            expect(page.locator(".message.warn")).to_contain_text("invalid API key")
            page.locator("#api-key").fill(key)
            page.locator("#key-form button").click()
            expect(page.locator('tr[data-workflow="steps"]')).to_be_visible()
            expect(page.locator(".message")).to_have_count(0)

            # the key goes with every call, the event stream's included
            page.locator('tr[data-workflow="steps"] a').click()
            page.locator('[name="n"]').fill("1")
            page.get_by_role("button", name="Start run").click()
            expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
            assert shown_json(page, ".run-output") == 5

            page.reload()  # kept in localStorage: no prompt again
            expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
            expect(page.locator(".message")).to_have_count(0)
            assert page.evaluate("localStorage.getItem('agentflow.apiKey')") == key
        finally:
            context.close()


def test_the_page_waits_out_the_rate_limit(browser: Any, tmp_path: Path) -> None:
    # a 429 on the run's GET used to leave the run page blank with the error, never retried
    key = "acme-secret-key-0001"
    config = ServerConfig(model=None, store=str(tmp_path / "runs.db"), api_keys=[{"tenant": "acme", "key": key}],
                          rate_limit_per_s=2, rate_limit_burst=3)
    with running_server(config, tools=[tick]) as url:
        register(url, STEPS, headers={"Authorization": f"Bearer {key}"})
        context = browser.new_context()
        context.add_init_script(f"localStorage.setItem('agentflow.apiKey', {json.dumps(key)})")
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        limited: list[str] = []
        page.on("response", lambda response: limited.append(response.url) if response.status == 429 else None)
        try:
            page.goto(f"{url}/ui/#/workflows/steps")
            page.locator('[name="n"]').fill("1")
            page.get_by_role("button", name="Start run").click()
            expect(page.locator(".run-view")).to_have_attribute("data-status", "completed")
            assert shown_json(page, ".run-output") == 5
            assert limited, "the server never answered 429: the check above proved nothing"
        finally:
            context.close()


# ---- streamed LLM text from the demo model --------------------------------------------------------------


@pytest.mark.slow
def test_llm_text_tool_calls_and_usage_stream_from_the_demo_model(page: Any) -> None:
    with running_server(ServerConfig(model="demo", store=":memory:"), tools=[lookup]) as url:
        register(url, HELPER)
        page.goto(f"{url}/ui/#/workflows/helper")
        expect(page.locator('[name="question"]')).to_have_value("What is 2 + 2?")
        page.get_by_role("button", name="Start run").click()
        card = page.locator('.node[data-node="think"]')
        expect(page.locator(".run-view")).to_have_attribute("data-status", "completed", timeout=60_000)
        run_id = run_id_of(page)
        with httpx.Client(base_url=url, timeout=60) as api:
            run = api.get(f"/v1/runs/{run_id}").json()
            with api.stream("GET", f"/v1/runs/{run_id}/events") as stream:
                events = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
        if shot := os.environ.get("AGENTFLOW_UI_SCREENSHOT"):
            page.screenshot(path=shot, full_page=True)
    deltas = [e["text"] for e in events if e["event"] == "llm.delta"]
    assert deltas, [e["event"] for e in events]
    # each stretch of text is one Text node, appended to delta by delta, holding exactly what was streamed
    texts = card.locator(".llm-text").evaluate_all("els => els.map(el => [el.childNodes.length, el.textContent])")
    assert texts and all(children == 1 for children, _ in texts)
    assert "".join(text for _, text in texts) == "".join(deltas)
    call = next(e for e in events if e["event"] == "llm.tool_call")
    block = card.locator(".tool-call")
    expect(block).to_have_count(1)  # llm.tool_call, tool.call and tool.result of one call: one block
    expect(block.locator(".tool-name")).to_have_text("lookup")
    assert json.loads(block.locator(".args").text_content()) == call["arguments"]
    result = next(e for e in events if e["event"] == "tool.result")
    assert json.loads(block.locator(".result").text_content()) == result["result"]
    usages = [e for e in events if e["event"] == "llm.usage"]
    expect(card.locator(".usage")).to_have_count(len(usages))
    expect(card.locator(".usage").last).to_contain_text(f"completion {usages[-1]['completion_tokens']}")
    assert run["status"] == "completed" and shown_json(page, ".run-output") == run["output"]


# ---- the static route (no browser) ----------------------------------------------------------------------


def raw_get(url: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of ``..`` or escapes)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_static_files_types_caching_and_redirect(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        root = client.get("/")
        assert root.status_code == 302 and root.headers["location"] == "/ui/"
        index = client.get("/ui/")
        assert index.status_code == 200 and index.headers["content-type"] == "text/html; charset=utf-8"
        assert index.headers["cache-control"] == "no-cache" and "script-src 'self'" in index.headers[
            "content-security-policy"]
        assert client.get("/ui/app.js").headers["content-type"] == "text/javascript; charset=utf-8"
        assert client.get("/ui/style.css").headers["content-type"] == "text/css; charset=utf-8"
        again = client.get("/ui/app.js", headers={"If-None-Match": client.get("/ui/app.js").headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        missing = client.get("/ui/nope.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert client.get("/openapi.json").json()["paths"].keys().isdisjoint({"/", "/ui/", "/ui/{path}"})


@pytest.mark.parametrize("path", ["/ui/../pyproject.toml", "/ui/%2e%2e/pyproject.toml", "/ui/%2E%2E%2Fpyproject.toml",
                                  "/ui/..%2fpyproject.toml", "/ui/..%5cpyproject.toml", "/ui/web/../../pyproject.toml",
                                  "/ui/%2fetc%2fpasswd", "/ui//etc/passwd", "/ui/./index.html", "/ui/.gitignore",
                                  "/ui/%00index.html"])
def test_static_route_refuses_paths_out_of_the_folder(server: str, path: str) -> None:
    status, _, body = raw_get(server, path)
    assert status == 404, (path, body[:200])
    assert json.loads(body)["error"]["type"] == "not_found_error"


def test_symlinks_out_of_the_folder_are_refused(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>ok</title>")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("secret")
    (tmp_path / "leak.txt").symlink_to(outside)
    app = create_app(ServerConfig(model=None, store=":memory:", ui_dir=tmp_path))
    with TestClient(app) as client:
        assert client.get("/ui/").text.endswith("<title>ok</title>")
        assert client.get("/ui/leak.txt").status_code == 404


def test_a_missing_ui_folder_is_a_404_that_says_so_and_one_warning(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agentflow.server.ui"):
        app = create_app(ServerConfig(model=None, store=":memory:", ui_dir=tmp_path / "gone"))
    assert [r.getMessage() for r in caplog.records if r.name == "agentflow.server.ui"] == [
        f"the web UI is not served: {tmp_path / 'gone'} has no index.html (set ui_dir, or ui: false)"]
    with TestClient(app) as client:
        for path in ("/ui/", "/ui/app.js"):
            r = client.get(path)
            assert r.status_code == 404 and r.json()["error"]["code"] == "ui_not_found", r.text
        assert client.get("/health").status_code == 200


def test_the_ui_can_be_turned_off() -> None:
    with TestClient(create_app(ServerConfig(model=None, store=":memory:", ui=False))) as client:
        assert client.get("/ui/").status_code == 404
        assert client.get("/", follow_redirects=False).status_code == 404
        assert client.get("/health").status_code == 200


def test_an_installed_copy_is_found_when_the_source_tree_has_none(tmp_path: Path) -> None:
    from agentflow.server.ui import default_dir

    source, user, system = tmp_path / "src" / "web", tmp_path / "user", tmp_path / "system"
    system.mkdir()
    (system / "index.html").write_text("<!doctype html>", encoding="utf-8")
    assert default_dir(source, [user, system]) == system
    source.mkdir(parents=True)
    (source / "index.html").write_text("<!doctype html>", encoding="utf-8")
    assert default_dir(source, [user, system]) == source  # a checkout's own files win
    assert default_dir(tmp_path / "none", [user]) == tmp_path / "none"  # reported as missing by the server


@pytest.mark.slow
def test_a_wheel_carries_every_file_of_the_ui(tmp_path: Path) -> None:
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("agentflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if "/data/share/agentflow/web/" in n}
    assert shipped == {p.name for p in (root / "web").iterdir() if p.is_file()}
