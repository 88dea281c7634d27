"""Webhook triggers over a real uvicorn server: deliveries signed with the independent
``standardwebhooks`` library (and GitHub-style ones signed here with hmac) start runs under the
trigger's tenant; bad signatures, stale timestamps and wrong secrets get 401 and start nothing; a
replayed delivery id answers with the same run."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from agentflow.dsl import load_yaml
from agentflow.server import ServerConfig
from agentflow.server.hooks_api import find_hooks, hook_conflicts
from agentflow.server.registry import Registry
from tests.serving import running_server

SECRET = "whsec_" + base64.b64encode(b"hooks-test-secret-0123456789abcd").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-rotated-out!").decode()
GITHUB_SECRET = "a GitHub webhook secret, plain text"

GREET = """
name: greet
input:
  type: object
  required: [who, count]
  properties:
    who: {type: string}
    count: {type: integer}
    event: {type: string}
nodes:
  - {id: hello, kind: tool, tool: greet, args: {who: "{{ input.who }}", count: "{{ input.count }}"}}
output: hello
triggers:
  - name: greet-std
    secret_env: AF_TEST_HOOK_SECRET
    input:
      who: "{{ payload.user.name }}"
      count: "{{ payload.count }}"
      event: "{{ headers['x-event'] | default('none') }}"
  - name: greet-gh
    secret_env: AF_TEST_GITHUB_SECRET
    scheme: github
    input: {who: "{{ payload.sender.login }}", count: 1, event: "{{ headers['x-github-event'] }}"}
  - name: greet-acme
    secret_env: AF_TEST_HOOK_SECRET
    tenant: acme
  - name: greet-unset
    secret_env: AF_TEST_UNSET_SECRET
"""

KEYS = [{"tenant": "default", "key": "default-tenant-key-0001"}, {"tenant": "acme", "key": "acme-tenant-key-00001"}]
DEFAULT = {"Authorization": "Bearer default-tenant-key-0001"}
ACME = {"Authorization": "Bearer acme-tenant-key-00001"}


async def greet(who: str, count: int) -> str:
    return f"hello {who} x{count}"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AF_TEST_HOOK_SECRET", SECRET)
    monkeypatch.setenv("AF_TEST_GITHUB_SECRET", GITHUB_SECRET)
    monkeypatch.delenv("AF_TEST_UNSET_SECRET", raising=False)
    (tmp_path / "greet.yaml").write_text(GREET)
    config = ServerConfig(model=None, store=":memory:", workflows=[tmp_path / "greet.yaml"], api_keys=KEYS)
    with running_server(config, tools=[greet]) as url:
        yield url


@pytest.fixture
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:  # no API key: hooks need none
        yield c


def signed(body: bytes, *, secret: str | bytes = SECRET, msg_id: str = "msg_1", at: float | None = None,
           **extra: str) -> dict[str, str]:
    stamp = datetime.fromtimestamp(int(time.time() if at is None else at), tz=timezone.utc)
    signature = Webhook(secret).sign(msg_id, stamp, body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(stamp.timestamp())), "webhook-signature": signature,
            "content-type": "application/json", **extra}


def payload(name: str = "ada", count: int = 3) -> bytes:
    return json.dumps({"user": {"name": name}, "count": count, "extra": [1, 2]}).encode()


def finished(client: httpx.Client, run_id: str, headers: dict[str, str] = DEFAULT) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        run = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] in ("completed", "failed") or time.monotonic() > deadline:
            return run  # type: ignore[no-any-return]
        time.sleep(0.05)


def runs(client: httpx.Client, headers: dict[str, str] = DEFAULT) -> list[dict[str, Any]]:
    response = client.get("/v1/runs", headers=headers)
    assert response.status_code == 200
    return response.json()["data"]  # type: ignore[no-any-return]


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


# -- Standard Webhooks -----------------------------------------------------------------------------------------


def test_signed_delivery_starts_a_run_from_the_payload(client: httpx.Client) -> None:
    body = payload("ada", 3)
    response = client.post("/hooks/greet-std", content=body, headers=signed(body, **{"x-event": "signup"}))
    assert response.status_code == 202, response.text
    data = response.json()
    assert data["duplicate"] is False and data["hook"] == "greet-std" and data["workflow"] == "greet"
    assert response.headers["location"] == f"/v1/runs/{data['run_id']}"
    run = finished(client, data["run_id"])
    assert run["status"] == "completed"
    assert run["input"] == {"who": "ada", "count": 3, "event": "signup"}
    assert run["output"] == "hello ada x3"
    assert [r["run_id"] for r in runs(client)] == [data["run_id"]]


def test_replayed_webhook_id_returns_the_same_run(client: httpx.Client) -> None:
    body = payload()
    headers = signed(body, msg_id="msg_replay")
    first = client.post("/hooks/greet-std", content=body, headers=headers)
    again = client.post("/hooks/greet-std", content=body, headers=headers)
    resent = client.post("/hooks/greet-std", content=body, headers=signed(body, msg_id="msg_replay"))  # new stamp
    assert first.status_code == again.status_code == resent.status_code == 202
    run_id = first.json()["run_id"]
    assert again.json()["run_id"] == resent.json()["run_id"] == run_id
    assert (first.json()["duplicate"], again.json()["duplicate"], resent.json()["duplicate"]) == (False, True, True)
    assert again.headers["location"] == f"/v1/runs/{run_id}"
    other = client.post("/hooks/greet-std", content=body, headers=signed(body, msg_id="msg_other"))
    assert other.status_code == 202 and other.json()["run_id"] != run_id
    assert sorted(r["run_id"] for r in runs(client)) == sorted([run_id, other.json()["run_id"]])


def test_replay_answers_with_the_run_even_after_the_workflow_changed(client: httpx.Client) -> None:
    yaml_of = {**DEFAULT, "content-type": "application/yaml"}
    own = GREET[:GREET.index("  - name: greet-gh")].replace("name: greet\n", "name: greet_own\n", 1)
    own = own.replace("name: greet-std", "name: own-std")  # greet's triggers serve two tenants: neither may change it
    assert client.post("/v1/workflows", content=own, headers=yaml_of).status_code == 201
    body = payload()
    headers = signed(body, msg_id="msg_before_update")
    first = client.post("/hooks/own-std", content=body, headers=headers)
    assert first.status_code == 202
    relabelled = client.post("/hooks/own-std", content=body, headers={**headers, "x-event": "retry"})
    assert relabelled.json()["run_id"] == first.json()["run_id"]  # unsigned headers changed: same delivery
    updated = own.replace('count: "{{ payload.count }}"', 'count: "{{ payload.count }} times"')
    response = client.post("/v1/workflows", content=updated, headers=yaml_of)
    assert response.status_code == 200, response.text
    again = client.post("/hooks/own-std", content=body, headers=headers)
    assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]
    fresh = client.post("/hooks/own-std", content=body, headers=signed(body, msg_id="msg_after_update"))
    assert_refused(fresh, 422, "invalid_input")  # the new mapping gives a string count
    assert len(runs(client)) == 1


def test_concurrent_duplicates_start_one_run(client: httpx.Client) -> None:
    body = payload()
    headers = signed(body, msg_id="msg_burst")
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda _: client.post("/hooks/greet-std", content=body, headers=headers), range(6)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["run_id"] for r in responses}) == 1
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert len(runs(client)) == 1


def bad_delivery(case: str) -> tuple[bytes, dict[str, str], str]:
    """(body, headers, expected error code) of a delivery that must be refused."""
    body = payload()
    if case == "tampered-body":
        return payload(count=4), signed(body), "invalid_signature"
    if case == "stale-timestamp":
        return body, signed(body, at=time.time() - 306), "timestamp_out_of_range"
    if case == "future-timestamp":
        return body, signed(body, at=time.time() + 306), "timestamp_out_of_range"
    if case == "wrong-secret":
        return body, signed(body, secret=OLD_SECRET), "invalid_signature"
    if case == "raw-secret-as-whsec":  # the secret's text instead of its decoded bytes
        return body, signed(body, secret=SECRET.encode()), "invalid_signature"
    if case == "missing-signature":
        headers = signed(body)
        del headers["webhook-signature"]
        return body, headers, "missing_signature"
    if case == "changed-id":
        return body, {**signed(body), "webhook-id": "msg_2"}, "invalid_signature"
    assert case == "garbage-signature"
    return body, {**signed(body), "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl v1,@@@ nonsense"}, "invalid_signature"


@pytest.mark.parametrize("case", ["tampered-body", "stale-timestamp", "future-timestamp", "wrong-secret",
                                  "raw-secret-as-whsec", "missing-signature", "changed-id", "garbage-signature"])
def test_bad_signatures_get_401_and_start_nothing(client: httpx.Client, case: str) -> None:
    body, headers, code = bad_delivery(case)
    assert_refused(client.post("/hooks/greet-std", content=body, headers=headers), 401, code)
    assert runs(client) == [] and runs(client, ACME) == []


def test_key_rotation_several_signatures(client: httpx.Client) -> None:
    body = payload()
    old = signed(body, secret=OLD_SECRET, msg_id="msg_rot")
    new = signed(body, msg_id="msg_rot", at=int(old["webhook-timestamp"]))
    headers = {**new, "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}"}
    response = client.post("/hooks/greet-std", content=body, headers=headers)
    assert response.status_code == 202, response.text
    too_many = {**new, "webhook-id": "msg_many", "webhook-signature": " ".join([old["webhook-signature"]] * 20)}
    assert_refused(client.post("/hooks/greet-std", content=body, headers=too_many), 401, "too_many_signatures")
    assert len(runs(client)) == 1


def test_signature_is_checked_before_the_body_is_parsed(client: httpx.Client) -> None:
    headers = signed(b"{not json")
    headers["webhook-signature"] = signed(b"{}")["webhook-signature"]
    assert_refused(client.post("/hooks/greet-std", content=b"{not json", headers=headers), 401, "invalid_signature")
    assert_refused(client.post("/hooks/greet-std", content=b"{not json", headers=signed(b"{not json")), 400,
                   "invalid_json")
    assert runs(client) == []


@pytest.mark.parametrize(("body", "code"), [
    (json.dumps({"user": {"name": "ada"}}).encode(), "hook_input_error"),  # payload.count is missing
    (json.dumps({"user": {"name": "ada"}, "count": "three"}).encode(), "invalid_input"),  # not an integer
    (json.dumps({"user": {"name": 7}, "count": 1}).encode(), "invalid_input"),  # who must be a string
    (b"[1, 2]", "hook_input_error"),
])
def test_inputs_that_do_not_fit_get_422_and_start_nothing(client: httpx.Client, body: bytes, code: str) -> None:
    assert_refused(client.post("/hooks/greet-std", content=body, headers=signed(body)), 422, code)
    assert runs(client) == []


def test_unknown_hook_404_and_unset_secret_503(client: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    body = payload()
    assert_refused(client.post("/hooks/nope", content=body, headers=signed(body)), 404, "hook_not_found")
    response = client.post("/hooks/greet-unset", content=body, headers=signed(body))
    assert_refused(response, 503, "hook_not_configured")
    assert "AF_TEST_UNSET_SECRET" not in response.text  # the log names it, the answer does not
    assert any("AF_TEST_UNSET_SECRET" in r.getMessage() for r in caplog.records)
    assert runs(client) == [] and runs(client, ACME) == []


def test_a_hook_name_declared_twice_is_refused(client: httpx.Client) -> None:
    copy = GREET.replace("name: greet\n", "name: greet_copy\n", 1)
    response = client.post("/v1/workflows", content=copy, headers={**DEFAULT, "content-type": "application/yaml"})
    assert_refused(response, 409, "hook_conflict")  # refused at registration: a delivery starts one workflow
    assert client.get("/v1/workflows/greet_copy", headers=DEFAULT).status_code == 404
    body = payload()
    assert client.post("/hooks/greet-std", content=body, headers=signed(body)).status_code == 202


def test_a_trigger_may_only_start_runs_for_the_registering_tenant(client: httpx.Client) -> None:
    mine = GREET.replace("name: greet\n", "name: greet_mine\n", 1).replace("name: greet-", "name: mine-")
    response = client.post("/v1/workflows", content=mine, headers={**DEFAULT, "content-type": "application/yaml"})
    assert_refused(response, 422, "trigger_tenant_mismatch")  # its mine-acme trigger names tenant acme
    assert response.json()["error"]["param"] == "triggers.2.tenant"
    response = client.post("/v1/workflows", content=mine, headers={**ACME, "content-type": "application/yaml"})
    assert_refused(response, 422, "trigger_tenant_mismatch")  # and the others the default tenant


def test_only_the_tenant_a_workflows_triggers_serve_may_replace_or_delete_it(client: httpx.Client) -> None:
    # globex used to PUT a new version of acme's workflow with `tenant: globex` on the same hook: acme's sender
    # then started globex's runs, with acme's payloads
    yaml_of = {"content-type": "application/yaml"}
    acme_only = ("name: acme_hooked\nnodes:\n  - {id: hello, kind: tool, tool: greet, args: {who: a, count: 1}}\n"
                 "output: hello\ntriggers:\n  - {name: acme-only, secret_env: AF_TEST_HOOK_SECRET, tenant: acme}\n")
    assert client.put("/v1/workflows/acme_hooked", content=acme_only, headers={**ACME, **yaml_of}).status_code == 201
    taken = acme_only.replace("tenant: acme", "tenant: default")
    response = client.put("/v1/workflows/acme_hooked", content=taken, headers={**DEFAULT, **yaml_of})
    assert_refused(response, 403, "workflow_owned")
    assert_refused(client.delete("/v1/workflows/acme_hooked", headers=DEFAULT), 403, "workflow_owned")
    assert client.get("/v1/workflows/acme_hooked", headers=DEFAULT).json()["version"] == 1
    assert client.put("/v1/workflows/acme_hooked", content=acme_only, headers={**ACME, **yaml_of}).status_code == 200
    assert client.delete("/v1/workflows/acme_hooked", headers=ACME).status_code == 204
    # greet's triggers serve both tenants: neither alone may replace it
    assert_refused(client.put("/v1/workflows/greet", content=GREET, headers={**ACME, **yaml_of}), 403, "workflow_owned")


class FakeRuntime:
    def register(self, spec: object) -> None:
        pass


def test_hook_conflicts_names_the_clashing_hooks() -> None:
    registry = Registry(FakeRuntime())  # type: ignore[arg-type]
    registry.add(load_yaml(GREET), source=None, origin="api")
    assert [h.workflow for h in find_hooks(registry, "greet-gh")] == ["greet"]
    assert find_hooks(registry, "nope") == []
    assert hook_conflicts(registry, load_yaml(GREET)) == []  # a new version of the same workflow
    copy = load_yaml(GREET.replace("name: greet\n", "name: other\n", 1).replace("name: greet-gh", "name: gh2"))
    assert hook_conflicts(registry, copy) == ["greet-std", "greet-acme", "greet-unset"]


# -- tenants ----------------------------------------------------------------------------------------------------


def test_trigger_tenant_owns_the_run(client: httpx.Client) -> None:
    body = json.dumps({"who": "acme-bot", "count": 2}).encode()  # no input mapping: the payload is the input
    response = client.post("/hooks/greet-acme", content=body, headers=signed(body, msg_id="msg_t"))
    assert response.status_code == 202, response.text
    run_id = response.json()["run_id"]
    assert finished(client, run_id, ACME)["output"] == "hello acme-bot x2"
    assert client.get(f"/v1/runs/{run_id}", headers=DEFAULT).status_code == 404
    assert [r["run_id"] for r in runs(client, ACME)] == [run_id] and runs(client) == []
    same_id = client.post("/hooks/greet-std", content=payload(), headers=signed(payload(), msg_id="msg_t"))
    assert same_id.status_code == 202 and same_id.json()["run_id"] != run_id  # ids are per tenant and hook


# -- GitHub ---------------------------------------------------------------------------------------------------


def github(body: bytes, delivery: str | None = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
           secret: str = GITHUB_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "star",
               "content-type": "application/json"}
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return headers


def test_github_delivery_starts_a_run_and_dedupes_by_delivery(client: httpx.Client) -> None:
    body = json.dumps({"action": "created", "sender": {"login": "octocat"}}).encode()
    first = client.post("/hooks/greet-gh", content=body, headers=github(body))
    assert first.status_code == 202, first.text
    run = finished(client, first.json()["run_id"])
    assert run["input"] == {"who": "octocat", "count": 1, "event": "star"}
    assert run["output"] == "hello octocat x1"
    again = client.post("/hooks/greet-gh", content=body, headers=github(body))
    assert again.json()["run_id"] == first.json()["run_id"] and again.json()["duplicate"] is True
    assert_refused(client.post("/hooks/greet-gh", content=body + b" ", headers=github(body, delivery="d2")), 401,
                   "invalid_signature")
    assert_refused(client.post("/hooks/greet-gh", content=body, headers=github(body, "d3", secret="wrong secret!!!!"
                                                                                ":-)")), 401, "invalid_signature")
    assert_refused(client.post("/hooks/greet-gh", content=body, headers=signed(body)), 401, "missing_signature")
    assert len(runs(client)) == 1


def test_openapi_documents_the_hook_route_without_api_key(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/hooks/{hook}"]["post"]
    assert "security" not in op
    assert {"202", "400", "401", "404", "422", "503"} <= set(op["responses"])
    assert op["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/HookRun"}
    assert {"duplicate", "hook", "run_id"} <= set(doc["components"]["schemas"]["HookRun"]["properties"])
