"""The runs and workflows API over a real uvicorn server: create (202 + Location, Idempotency-Key,
?wait), get, list (filters, cursor), cancel, resume, and the SSE event stream followed with
httpx-sse, cut mid-run and resumed with Last-Event-ID."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, connect_sse

from agentflow.server import ServerConfig
from tests.server_workflows import APPROVAL, SLEEPY, STEPS, nap, tick
from tests.serving import running_server

YAML = {"content-type": "application/yaml"}
KEYS = [{"tenant": "acme", "key": "acme-secret-key-0001"}, {"tenant": "globex", "key": "globex-secret-key-002"}]
ACME = {"Authorization": "Bearer acme-secret-key-0001"}
GLOBEX = {"Authorization": "Bearer globex-secret-key-002"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = tmp_path_factory.mktemp("server") / "runs.db"
    config = ServerConfig(model=None, store=str(store), api_keys=KEYS, heartbeat_s=0.2)
    with running_server(config, tools=[tick, nap]) as url:
        with httpx.Client(base_url=url, headers=ACME) as client:
            for text in (STEPS, APPROVAL, SLEEPY):
                assert client.post("/v1/workflows", content=text, headers=YAML).status_code == 201
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=ACME, timeout=30) as c:
        yield c


def wait_status(client: httpx.Client, run_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] in statuses:
            return run  # type: ignore[no-any-return]
        if time.monotonic() > deadline:  # say where the run stopped: its events so far (?after=0 replays them)
            lines: list[str] = []
            until = time.monotonic() + 2  # heartbeats keep the stream alive: stop reading after 2 s
            with client.stream("GET", f"/v1/runs/{run_id}/events", timeout=2) as stream:
                for line in stream.iter_lines():
                    lines.append(line)
                    if time.monotonic() > until:
                        break
            raise AssertionError(f"run {run_id} is {run['status']}, not {statuses}, after {timeout} s; its events:\n"
                                 + "\n".join(line for line in lines if line.startswith(("event:", "data:"))))
        time.sleep(0.05)


def test_create_returns_202_with_location_and_the_run_finishes(client: httpx.Client) -> None:
    # ticks of 0.2 s: four instant ones could all end before the answer reads the run back
    r = client.post("/v1/workflows/steps/runs", json={"input": {"n": 1, "delay": 0.2}})
    assert r.status_code == 202
    run = r.json()
    assert r.headers["location"] == f"/v1/runs/{run['run_id']}"
    assert run["status"] == "running" and run["workflow"] == "steps"
    done = wait_status(client, run["run_id"], "completed")
    assert done["status"] == "completed" and done["output"] == 5  # four ticks from 1


def test_wait_true_returns_the_finished_run(client: httpx.Client) -> None:
    r = client.post("/v1/workflows/steps/runs?wait=true", json={"input": {"n": 10}})
    assert r.status_code == 200
    assert r.json()["status"] == "completed" and r.json()["output"] == 14


def test_input_defaults_are_filled_and_a_retry_of_the_same_request_is_the_same_run(client: httpx.Client) -> None:
    text = STEPS.replace("name: steps", "name: defaulted").replace("{n: {type: integer}", "{n: {type: integer, "
                                                                                       "default: 40}")
    assert client.post("/v1/workflows", content=text, headers=YAML).status_code == 201
    key = {"Idempotency-Key": f"defaulted-{time.time_ns()}"}
    first = client.post("/v1/workflows/defaulted/runs?wait=true", json={"input": {}}, headers=key)
    assert first.status_code == 200 and first.json()["input"] == {"n": 40} and first.json()["output"] == 44
    again = client.post("/v1/workflows/defaulted/runs", json={"input": {}}, headers=key)
    assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]
    explicit = client.post("/v1/workflows/defaulted/runs", json={"input": {"n": 40}}, headers=key)
    assert explicit.json()["run_id"] == first.json()["run_id"]  # what the default would have given


def test_a_resume_value_against_its_schema_names_the_field(client: httpx.Client) -> None:
    run = client.post("/v1/workflows/approval/runs?wait=true", json={"input": {"amount": 3}}).json()
    assert run["status"] == "interrupted"
    r = client.post(f"/v1/runs/{run['run_id']}/resume", json={"value": {"approved": "yes"}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "value.approved"
    r = client.post(f"/v1/runs/{run['run_id']}/resume", json={"value": {}})  # a missing property is named too
    assert r.status_code == 422 and r.json()["error"]["param"] == "value.approved"
    client.post(f"/v1/runs/{run['run_id']}/cancel")


def test_bad_input_unknown_workflow_and_bad_json(client: httpx.Client) -> None:
    r = client.post("/v1/workflows/steps/runs", json={"input": {"n": "three"}})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input"
    assert r.json()["error"]["param"] == "input.n"
    r = client.post("/v1/workflows/steps/runs", json={"input": {}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "input.n"  # the required property, not "input"
    r = client.post("/v1/workflows/nope/runs", json={"input": {}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "workflow_not_found"
    r = client.post("/v1/workflows/steps/runs", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = client.post("/v1/workflows/steps/runs", json={"input": [1, 2]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "input"
    assert client.get("/v1/runs/does-not-exist").status_code == 404


def test_idempotency_key(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = client.post("/v1/workflows/steps/runs", json={"input": {"n": 2}}, headers=key)
    again = client.post("/v1/workflows/steps/runs", json={"input": {"n": 2}}, headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json()["run_id"] == again.json()["run_id"]
    other = client.post("/v1/workflows/steps/runs", json={"input": {"n": 3}}, headers=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # the key is the tenant's own: another tenant with the same key gets its own run
    theirs = client.post("/v1/workflows/steps/runs", json={"input": {"n": 2}}, headers={**key, **GLOBEX})
    assert theirs.status_code == 202 and theirs.json()["run_id"] != first.json()["run_id"]
    runs = [r for r in client.get("/v1/runs", params={"workflow": "steps", "limit": 500}).json()["data"]
            if r["run_id"] == first.json()["run_id"]]
    assert len(runs) == 1


def test_tenants_see_only_their_runs(server: str, client: httpx.Client) -> None:
    run_id = client.post("/v1/workflows/steps/runs?wait=true", json={"input": {"n": 0}}).json()["run_id"]
    with httpx.Client(base_url=server, headers=GLOBEX) as other:
        assert other.get(f"/v1/runs/{run_id}").status_code == 404
        assert other.post(f"/v1/runs/{run_id}/cancel").status_code == 404
        assert other.get(f"/v1/runs/{run_id}/events").status_code == 404
        assert run_id not in [r["run_id"] for r in other.get("/v1/runs", params={"limit": 500}).json()["data"]]
    assert run_id in [r["run_id"] for r in client.get("/v1/runs", params={"limit": 500}).json()["data"]]


def test_auth_is_required(server: str) -> None:
    with httpx.Client(base_url=server) as anonymous:
        r = anonymous.get("/v1/runs")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        assert r.headers["www-authenticate"] == "Bearer"
        r = anonymous.get("/v1/runs", headers={"Authorization": "Bearer acme-secret-key-0002"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.get("/health").status_code == 200  # operations stay open


def test_list_filters_and_cursor_pagination(client: httpx.Client) -> None:
    ids = [client.post("/v1/workflows/steps/runs?wait=true", json={"input": {"n": i}}).json()["run_id"]
           for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"workflow": "steps", "status": "completed", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/runs", params=params).json()
        assert len(page["data"]) <= 2
        assert all(r["workflow"] == "steps" and r["status"] == "completed" for r in page["data"])
        seen += [r["run_id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen[:5] == ids[::-1]  # newest first
    assert client.get("/v1/runs", params={"cursor": "garbage"}).status_code == 422
    assert client.get("/v1/runs", params={"limit": 0}).status_code == 422
    assert client.get("/v1/runs", params={"status": "sleeping"}).status_code == 422


def test_cancel_and_resume(client: httpx.Client) -> None:
    run_id = client.post("/v1/workflows/sleepy/runs", json={}).json()["run_id"]
    wait_status(client, run_id, "running")
    r = client.post(f"/v1/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert client.post(f"/v1/runs/{run_id}/cancel").status_code == 409

    run_id = client.post("/v1/workflows/approval/runs", json={"input": {"amount": 7}}).json()["run_id"]
    paused = wait_status(client, run_id, "interrupted")
    assert paused["status"] == "interrupted" and paused["interrupt"]["prompt"] == "Approve 7?"
    bad = client.post(f"/v1/runs/{run_id}/resume", json={"value": {"approved": "yes"}})
    assert bad.status_code == 422
    r = client.post(f"/v1/runs/{run_id}/resume", json={"value": {"approved": True}})
    assert r.status_code == 202
    done = wait_status(client, run_id, "completed")
    assert done["output"] == {"approved": True}
    again = client.post(f"/v1/runs/{run_id}/resume", json={"value": {"approved": True}})
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_run_state"


def events_of(source: EventSource) -> Iterator[ServerSentEvent]:
    """The stream's events. httpx-sse also reports each heartbeat (a comment line, then a blank line) as an
    empty event carrying the last id; those are not events and are skipped."""
    return (sse for sse in source.iter_sse() if sse.data)


def _stored_events(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
        return [json.loads(sse.data) | {"_id": sse.id, "_event": sse.event} for sse in events_of(source)]


def test_sse_follows_a_run_and_resumes_after_a_disconnect(client: httpx.Client) -> None:
    run_id = client.post("/v1/workflows/steps/runs", json={"input": {"n": 1, "delay": 0.15}}).json()["run_id"]
    received: list[dict[str, Any]] = []
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
        for sse in events_of(source):
            received.append(json.loads(sse.data) | {"_id": sse.id, "_event": sse.event})
            if len(received) == 5:
                break  # cut mid-run
    assert received[-1]["event"] != "run.completed"
    last = received[-1]["_id"]
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": last}) as source:
        for sse in events_of(source):
            received.append(json.loads(sse.data) | {"_id": sse.id, "_event": sse.event})
    # the stream ended by itself after the terminal event
    assert received[-1]["event"] == "run.completed" and received[-1]["output"] == 5
    stored = _stored_events(client, run_id)
    assert [e["seq"] for e in received] == [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    assert received == stored
    assert all(e["_id"] == str(e["seq"]) and e["_event"] == e["event"] for e in received)
    # ?after= is the same as Last-Event-ID
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events", params={"after": 3}) as source:
        assert [int(s.id) for s in events_of(source)] == [e["seq"] for e in stored[3:]]
    bad = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "seven"})
    assert bad.status_code == 400


def test_a_run_goes_on_when_its_subscriber_leaves(client: httpx.Client) -> None:
    run_id = client.post("/v1/workflows/steps/runs", json={"input": {"n": 0, "delay": 0.1}}).json()["run_id"]
    with connect_sse(client, "GET", f"/v1/runs/{run_id}/events") as source:
        next(events_of(source))
    assert wait_status(client, run_id, "completed")["output"] == 4


def test_sse_sends_heartbeats_while_a_run_waits(server: str) -> None:
    with httpx.Client(base_url=server, headers=ACME, timeout=10) as client:
        run_id = client.post("/v1/workflows/approval/runs", json={"input": {"amount": 1}}).json()["run_id"]
        wait_status(client, run_id, "interrupted")
        lines: list[str] = []
        with client.stream("GET", f"/v1/runs/{run_id}/events") as response:
            started = time.monotonic()
            for line in response.iter_lines():
                lines.append(line)
                if sum(1 for x in lines if x.startswith(":")) >= 2 or time.monotonic() - started > 5:
                    break
        assert sum(1 for x in lines if x.startswith(":")) >= 2  # comment lines: the heartbeat
        client.post(f"/v1/runs/{run_id}/cancel")


def test_workflow_registry_versions(client: httpx.Client) -> None:
    text = STEPS.replace("name: steps", "name: versioned")
    r = client.put("/v1/workflows/versioned", content=text, headers=YAML)
    assert r.status_code == 201 and r.json()["version"] == 1
    r = client.put("/v1/workflows/versioned", content=text.replace("output: state.total", "output: state"),
                   headers=YAML)
    assert r.status_code == 200 and r.json()["versions"] == [1, 2]
    detail = client.get("/v1/workflows/versioned").json()
    assert detail["version"] == 2 and detail["source"].startswith("\nname: versioned")
    assert client.get("/v1/workflows/versioned", params={"version": 1}).json()["ir"]["output"] == "state.total"
    assert client.get("/v1/workflows/versioned", params={"version": 9}).status_code == 404
    run = client.post("/v1/workflows/versioned/runs?wait=true", json={"input": {"n": 0}}).json()
    assert run["version"] == 2 and run["output"] == {"total": 4}
    assert client.put("/v1/workflows/other", content=text, headers=YAML).status_code == 422  # name mismatch
    bad = client.post("/v1/workflows/validate", content="name: x\nnodes:\n  - {id: a, kind: tool, tool: nope}\n",
                      headers=YAML)
    assert bad.status_code == 422
    detail_issue = bad.json()["error"]["details"][0]
    assert detail_issue["code"] == "unknown_tool" and detail_issue["line"] == 3
    syntax = client.post("/v1/workflows/validate", content="name: [", headers=YAML)
    assert syntax.status_code == 422 and syntax.json()["error"]["details"][0]["code"] == "yaml_syntax"
    assert client.post("/v1/workflows/validate", content=b"\xff\xfe", headers=YAML).status_code == 400
    assert client.delete("/v1/workflows/versioned").status_code == 204
    assert client.get("/v1/workflows/versioned").status_code == 404
    assert client.delete("/v1/workflows/versioned").status_code == 404


def test_hostile_requests_get_clear_errors(client: httpx.Client) -> None:
    run_id = client.post("/v1/workflows/steps/runs?wait=true", json={"input": {"n": 0}}).json()["run_id"]
    for header in ("9" * 40, "-1", "1e3", str(2**63), "\u00b2", "1\u00b3"):  # ² and ³ are str.isdigit()
        r = client.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": header.encode("latin-1")})
        assert r.status_code == 400 and r.json()["error"]["param"] == "Last-Event-ID", header
    assert client.get(f"/v1/runs/{run_id}/events", params={"after": 2**63}).status_code == 422
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/v1/workflows/steps/runs", content=deep, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert client.get("/v1/runs/" + "x" * 5000).status_code == 404
    assert client.post("/v1/workflows/steps/runs", json={"input": {"n": 1}},
                       headers={"Idempotency-Key": "k" * 300}).status_code == 400
    assert client.get("/health").status_code == 200


def test_bodies_json_cannot_carry_are_refused_and_leave_nothing_behind(client: httpx.Client) -> None:
    """NaN / Infinity / 1e999 and lone surrogates parse in Python's json but break storing and serving later: a
    run created with one made every later listing fail. They are 400s now, and the listings stay readable."""
    json_type = {"content-type": "application/json"}
    before = client.get("/v1/runs", params={"limit": 200}).json()["data"]
    for raw in ('{"input": {"n": 1, "x": NaN}}', '{"input": {"n": 1, "x": Infinity}}', '{"input": {"n": 1e999}}',
                '{"input": {"n": 1, "note": "\\ud800"}}'):
        r = client.post("/v1/workflows/steps/runs", content=raw, headers=json_type)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json", (raw, r.text)
    bad = client.post("/v1/workflows/steps/runs", content='{"input": {"n": 1, "note": "\\udfff"}}', headers=json_type)
    assert bad.json()["error"]["param"] == "input.note"  # where
    pair = client.post("/v1/workflows/steps/runs?wait=true", content='{"input": {"n": 1, "e": "\\ud83d\\ude00"}}',
                       headers=json_type)
    assert pair.status_code == 200 and pair.json()["status"] == "completed"  # a whole pair is text (😀): accepted

    run_id = client.post("/v1/workflows/approval/runs", json={"input": {"amount": 3}}).json()["run_id"]
    wait_status(client, run_id, "interrupted")
    for raw in ('{"value": {"approved": NaN}}', '{"value": {"approved": "\\ud800"}}'):
        r = client.post(f"/v1/runs/{run_id}/resume", content=raw, headers=json_type)
        assert r.status_code == 400, r.text
    assert client.get(f"/v1/runs/{run_id}").json()["status"] == "interrupted"  # the run still waits, unharmed
    assert client.post(f"/v1/runs/{run_id}/resume", json={"value": {"approved": True}}).status_code == 202
    assert wait_status(client, run_id, "completed")["output"] == {"approved": True}

    after = client.get("/v1/runs", params={"limit": 200})
    assert after.status_code == 200 and len(after.json()["data"]) >= len(before)


def test_workflows_json_cannot_carry_are_refused_before_they_are_served(client: httpx.Client) -> None:
    """Registration used to serve a workflow before storing it: one the store refused (a version past int64) was
    served anyway and gone after a restart, and one with .inf broke its own GET forever."""
    cases = {
        "inf_timeout": ("nodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}, timeout: .inf}\n", "not_json",
                        "/nodes/0/timeout"),
        "inf_schema": ("input: {type: object, properties: {n: {type: number, maximum: .inf}}}\n"
                       "nodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}}\n", "not_json",
                       "/input/properties/n/maximum"),
        "huge_version": ("version: 9223372036854775808\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}}\n",
                         "invalid_value", "/version"),
    }
    for name, (body, code, pointer) in cases.items():
        r = client.post("/v1/workflows", content=f"name: {name}\n{body}", headers=YAML)
        assert r.status_code == 422, (name, r.text)
        issues = r.json()["error"]["details"]
        assert [(i["code"], i["pointer"]) for i in issues] == [(code, pointer)], (name, issues)
        assert client.get(f"/v1/workflows/{name}").status_code == 404
    ir = {"name": "surrogate", "description": "\ud800", "nodes": [{"id": "a", "kind": "tool", "tool": "tick"}]}
    raw = json.dumps(ir)  # ensure_ascii: the lone surrogate travels as the escape \ud800
    r = client.post("/v1/workflows", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert client.get("/v1/workflows/surrogate").status_code == 404
    assert client.get("/v1/workflows").status_code == 200


def test_registration_checks_tool_arguments_and_workflow_calls(client: httpx.Client) -> None:
    typo = "name: typo\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1, delai: 0}}\n"
    r = client.post("/v1/workflows", content=typo, headers=YAML)
    assert r.status_code == 422
    assert [(i["code"], i["pointer"]) for i in r.json()["error"]["details"]] == [("unknown_argument",
                                                                                 "/nodes/0/args/delai")]
    first = "name: ping\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}}\n"
    assert client.put("/v1/workflows/ping", content=first, headers=YAML).status_code == 201
    pong = "name: pong\nnodes:\n  - {id: call, kind: workflow, workflow: ping}\n"
    assert client.put("/v1/workflows/pong", content=pong, headers=YAML).status_code == 201
    back = "name: ping\nnodes:\n  - {id: call, kind: workflow, workflow: pong}\n"  # ping -> pong -> ping
    r = client.put("/v1/workflows/ping", content=back, headers=YAML)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["code"] == "workflow_cycle"
    assert "ping -> pong -> ping" in r.json()["error"]["details"][0]["message"]
    assert client.get("/v1/workflows/ping").json()["version"] == 1  # the served version is unchanged
    for name in ("ping", "pong"):
        assert client.delete(f"/v1/workflows/{name}").status_code == 204


async def _resume(client: httpx.AsyncClient, run_id: str, i: int, answers: dict[int, httpx.Response]) -> None:
    answers[i] = await client.post(f"/v1/runs/{run_id}/resume", json={"value": {"approved": i % 2 == 0, "by": i}})


def test_concurrent_resumes_one_wins_the_others_are_refused(server: str) -> None:
    """Every resume that gets 202 is the one whose value the run continues with."""
    async def main() -> None:
        async with httpx.AsyncClient(base_url=server, headers=ACME, timeout=30) as client:
            for _ in range(3):
                run = await client.post("/v1/workflows/approval/runs", json={"input": {"amount": 5}})
                run_id = run.json()["run_id"]
                while (await client.get(f"/v1/runs/{run_id}")).json()["status"] != "interrupted":
                    await anyio.sleep(0.02)
                answers: dict[int, httpx.Response] = {}
                async with anyio.create_task_group() as tg:
                    for i in range(8):
                        tg.start_soon(_resume, client, run_id, i, answers)
                won = [i for i, r in answers.items() if r.status_code == 202]
                assert len(won) == 1, {i: r.status_code for i, r in answers.items()}
                assert all(r.status_code == 409 for i, r in answers.items() if i not in won)
                while (done := (await client.get(f"/v1/runs/{run_id}")).json())["status"] != "completed":
                    await anyio.sleep(0.02)
                assert done["output"]["by"] == won[0]

    anyio.run(main)


def test_served_workflow_files_are_checked_like_agentflow_run_checks_them(tmp_path: Path) -> None:
    """Files sharing a name, calls that come back around and tool arguments the tool does not take are skipped
    at start (the second of two same-named files used to become version 2 of the first)."""
    files = {
        "good.yaml": "name: good\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}}\n",
        "twin_a.yaml": "name: twin\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1}}\n",
        "twin_b.yaml": "name: twin\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 2}}\n",
        "ping.yaml": "name: ping\nnodes:\n  - {id: call, kind: workflow, workflow: pong}\n",
        "pong.yaml": "name: pong\nnodes:\n  - {id: call, kind: workflow, workflow: ping}\n",
        "typo.yaml": "name: typo\nnodes:\n  - {id: a, kind: tool, tool: tick, args: {x: 1, delai: 0}}\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    config = ServerConfig(model=None, store=":memory:", workflows=[tmp_path])
    with running_server(config, tools=[tick]) as url, httpx.Client(base_url=url) as client:
        served = sorted(w["name"] for w in client.get("/v1/workflows").json()["data"])
        assert served == ["good"]
        assert client.post("/v1/workflows/good/runs?wait=true", json={}).json()["output"] == {"a": 2}


def test_registered_workflows_outlive_a_restart(tmp_path: Path) -> None:
    config = ServerConfig(model=None, store=str(tmp_path / "runs.db"))
    kept = STEPS.replace("name: steps", "name: kept")
    with running_server(config, tools=[tick]) as url, httpx.Client(base_url=url) as client:
        assert client.put("/v1/workflows/kept", content=kept, headers=YAML).status_code == 201
        second = kept.replace("output: state.total", "output: state")
        assert client.put("/v1/workflows/kept", content=second, headers=YAML).status_code == 200
        assert client.put("/v1/workflows/gone", content=kept.replace("name: kept", "name: gone"),
                          headers=YAML).status_code == 201
        assert client.delete("/v1/workflows/gone").status_code == 204
        first_created = client.get("/v1/workflows/kept", params={"version": 1}).json()["created_at"]
    with running_server(config, tools=[tick]) as url, httpx.Client(base_url=url) as client:
        listed = {w["name"]: w for w in client.get("/v1/workflows").json()["data"]}
        assert set(listed) == {"kept"} and listed["kept"]["versions"] == [1, 2]
        v1 = client.get("/v1/workflows/kept", params={"version": 1}).json()
        assert v1["source"] == kept and v1["created_at"] == first_created and v1["ir"]["output"] == "state.total"
        run = client.post("/v1/workflows/kept/runs?wait=true", json={"input": {"n": 1}}).json()
        assert run["version"] == 2 and run["output"] == {"total": 5}


def test_values_json_cannot_carry_are_written_as_null_never_a_500(tmp_path: Path) -> None:
    """A tool's NaN becomes null in the run; a run whose stored output holds a NaN (written by an older
    version, which kept tools' NaNs) is still listed and read over the API."""
    import math

    def stats(xs: list[float]) -> dict[str, Any]:
        return {"mean": sum(xs) / len(xs) if xs else math.nan, "max": max(xs, default=-math.inf)}

    store = tmp_path / "runs.db"
    asked = "name: asked\nnodes:\n  - {id: ask, kind: interrupt, prompt: \"a value\"}\noutput: ask\n"

    async def stored_by_the_library() -> str:
        from agentflow.dsl import load_yaml
        from agentflow.runtime import Runtime

        async with Runtime(store=store) as rt:
            run = await rt.run(load_yaml(asked))
            await rt.resume(run.run_id, {"ratio": 0.5})
            assert (await rt.wait(run.run_id)).status == "completed"
            return run.run_id

    legacy = anyio.run(stored_by_the_library)
    with sqlite3.connect(store) as db:  # what an older version stored: Python's json writes NaN
        db.execute("UPDATE runs SET output = ? WHERE run_id = ?", ('{"ratio": NaN}', legacy))
    text = "name: stats\nnodes:\n  - {id: s, kind: tool, tool: stats, args: {xs: []}}\noutput: s\n"
    with running_server(ServerConfig(model=None, store=str(store)), tools=[stats]) as url, \
            httpx.Client(base_url=url) as client:
        assert client.post("/v1/workflows", content=text, headers=YAML).status_code == 201
        run = client.post("/v1/workflows/stats/runs?wait=true", json={"input": {}})
        assert run.status_code == 200 and run.json()["output"] == {"mean": None, "max": None}
        assert client.get(f"/v1/runs/{legacy}").json()["output"] == {"ratio": None}
        listed = client.get("/v1/runs")
        assert listed.status_code == 200 and {r["run_id"] for r in listed.json()["data"]} == {
            legacy, run.json()["run_id"]}


def test_a_client_that_leaves_a_wait_stops_only_the_waiting(client: httpx.Client, server: str) -> None:
    with pytest.raises(httpx.ReadTimeout), httpx.Client(base_url=server, headers=ACME, timeout=0.5) as impatient:
        impatient.post("/v1/workflows/sleepy/runs?wait=true", json={"input": {}})
    route = 'method="POST",route="/v1/workflows/{name}/runs",status="499"'
    deadline = time.monotonic() + 10
    while route not in client.get("/metrics").text:  # the handler noticed, answered 499 and ended
        assert time.monotonic() < deadline, "the waiting handler is still waiting for a client that left"
        time.sleep(0.05)
    running = client.get("/v1/runs", params={"workflow": "sleepy", "status": "running"}).json()["data"]
    assert running  # the run itself goes on
    for run in running:
        client.post(f"/v1/runs/{run['run_id']}/cancel")
