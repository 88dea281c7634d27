"""schemathesis against ``/openapi.json`` of a real server: every operation gets generated requests
(valid and invalid; examples, coverage, fuzzing and stateful phases; a bounded number of examples
each) with every built-in check on: no 5xx, and no response the document does not describe (status,
content type, headers, body schema, ``Allow`` on 405 ...).

The schemathesis CLI (``st run``) runs in a subprocess against the server this test starts: its
pytest plugin's lazy fixture loader does not work with this pytest, and the CLI's phases (coverage,
stateful) find more than ``@schema.parametrize`` alone. The seed is fixed so CI is reproducible;
set ``AGENTFLOW_SCHEMATHESIS_SEED`` (and ``AGENTFLOW_SCHEMATHESIS_EXAMPLES``) to explore further.

The config it writes (``schemathesis.toml``) feeds real workflow names and run ids to the path
parameters half of the time, so operations reach past their 404s, and states what the OpenAPI
document cannot: a workflow's YAML, a resume value (checked against the interrupt's own schema)
and an opaque ``cursor`` may be well-formed strings/values and still be refused with a 422.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentflow.server import ServerConfig
from tests.serving import running_server

pytestmark = pytest.mark.slow

MAX_EXAMPLES = int(os.environ.get("AGENTFLOW_SCHEMATHESIS_EXAMPLES", "25"))
SEED = int(os.environ.get("AGENTFLOW_SCHEMATHESIS_SEED", "20240601"))

ECHO = """
name: echo
nodes:
  - {id: say, kind: tool, tool: shout, args: {text: hi}}
"""

SCRATCH = ECHO.replace("name: echo", "name: scratch")

HOOKED = ECHO.replace("name: echo", "name: hooked") + """
triggers:
  - {name: ping, secret_env: AF_SCHEMA_TEST_HOOK_SECRET}
"""

GATE = """
name: gate
nodes:
  - id: ask
    kind: interrupt
    prompt: "Go on?"
    schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
  - {id: say, kind: tool, tool: shout, args: {text: done}}
edges: [{from: ask, to: say}]
"""


async def shout(text: str) -> str:
    return text.upper()


def config_toml(workflows: list[str], runs: dict[str, list[str]]) -> str:
    """``runs``: run ids by operation id (``*``: the rest); a live run's event stream never ends, so
    only finished runs go to ``run_events``, and ``resume_run`` and ``cancel_run`` get a waiting run each."""

    def strings(values: list[str]) -> str:
        return "[" + ", ".join(json.dumps(v) for v in values) + "]"

    # A run waiting at an interrupt has an event stream that never ends: the stateful phase follows
    # such streams until the request timeout, so the timeout is short (every other answer here is quick).
    # schemathesis's default for positive_data_acceptance, plus 422 where the document cannot say more
    accepted = '["2xx", "3xx", 401, 403, 404, 409, 422, 429, "5xx"]'
    text = f"""
request-timeout = 3.0

[dictionaries.workflows]
values = {strings(workflows)}

[dictionaries.doomed]
values = ["scratch"]

[dictionaries.hooks]
values = ["ping"]
"""
    for op, ids in runs.items():
        text += f"""
[dictionaries.runs_{op.strip("*") or "any"}]
values = {strings(ids)}
"""
    text += f"""
[parameters]
"path.name" = {{ dictionary = "workflows", probability = 0.5 }}
"path.run_id" = {{ dictionary = "runs_any", probability = 0.5 }}
"path.hook" = {{ dictionary = "hooks", probability = 0.5 }}

[[operations]]
include-operation-id = "delete_workflow"
parameters = {{ "path.name" = {{ dictionary = "doomed", probability = 0.5 }} }}

[[operations]]
include-operation-id = ["validate_workflow", "register_workflow", "put_workflow", "resume_run", "list_runs"]
checks.positive_data_acceptance.expected-statuses = {accepted}
"""
    for op in runs:
        if op != "*":
            text += f"""
[[operations]]
include-operation-id = "{op}"
parameters = {{ "path.run_id" = {{ dictionary = "runs_{op}", probability = 0.5 }} }}
"""
    return text


def schemathesis_run(url: str, workdir: Path, config: str, *args: str,
                     examples: int = MAX_EXAMPLES) -> tuple[dict[str, Any], str, set[str]]:
    """``st run`` against ``url`` with every check; the JSON report, the output's tail, and the
    operations (``METHOD /path``) of the server's document that schemathesis selects."""
    # One worker: with several threads, hypothesis' ast.parse of lambdas hits a CPython 3.11 bug
    # ("SystemError: AST constructor recursion depth mismatch") that schemathesis reports as a runtime error.
    config_file, report = workdir / "schemathesis.toml", workdir / "report.json"
    config_file.write_text(config)
    command = [sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(config_file), "run",
               f"{url}/openapi.json", "--checks", "all", "--max-examples", str(examples), "--workers", "1",
               "--seed", str(SEED), "--report", "json", "--report-json-path", str(report), "--output-truncate", "true",
               *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir,
                            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})
    output = (result.stdout + result.stderr)[-12000:]
    assert report.is_file(), output
    summary = json.loads(report.read_text())
    assert summary["failures"] == [] and summary["errors"] == [], f"schemathesis found problems:\n{output}"
    assert result.returncode == 0, output
    assert summary["operations"]["tested"] == summary["operations"]["selected"], summary["operations"]
    with httpx.Client(base_url=url, timeout=30) as client:
        document = client.get("/openapi.json").json()
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item}
    return summary, output, operations - {"GET /openapi.json"}  # schemathesis leaves the spec itself out


def test_api_conforms_to_its_openapi_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AF_SCHEMA_TEST_HOOK_SECRET", "whsec_" + base64.b64encode(b"0123456789abcdef0123").decode())
    with running_server(ServerConfig(model=None, store=":memory:"), tools=[shout]) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            yaml = {"content-type": "application/yaml"}
            for name, text in [("echo", ECHO), ("scratch", SCRATCH), ("gate", GATE), ("hooked", HOOKED)]:
                assert client.put(f"/v1/workflows/{name}", content=text, headers=yaml).status_code == 201, text
            done = client.post("/v1/workflows/echo/runs?wait=true", json={"input": {}}).json()
            gates = [client.post("/v1/workflows/gate/runs?wait=true", json={"input": {}}).json() for _ in range(2)]
        assert [done["status"], *(g["status"] for g in gates)] == ["completed", "interrupted", "interrupted"]
        config = config_toml(["echo"], {"*": [done["run_id"]], "run_events": [done["run_id"]],
                                        "resume_run": [gates[0]["run_id"]], "cancel_run": [gates[1]["run_id"]]})
        summary, _, operations = schemathesis_run(url, tmp_path, config)
    assert summary["operations"]["total"] == len(operations), summary["operations"]
    assert set(summary["valid_rates"]) == operations
    assert all(summary["phases"][phase]["status"] == "success" for phase in ("coverage", "fuzzing", "stateful")), \
        summary["phases"]
    assert summary["test_cases"]["generated"] >= 10 * len(operations)


MODEL_FREE_TAGS = ("operations", "workflows", "runs", "hooks")


def test_model_backed_operations_conform_with_the_demo_model(tmp_path: Path) -> None:
    """The operations that need the local model (OpenAI-compatible API, /generate), with one loaded."""
    # Short generations keep a few hundred requests on the CPU demo model within the test's time; a
    # request for more than the limit is a 400 the document cannot describe (nor a token id the
    # vocabulary lacks, a prompt past the context, or a schema the engine cannot compile).
    config = ServerConfig(model="demo", store=":memory:", default_max_tokens=2, max_tokens_limit=4)
    with running_server(config) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            document = client.get("/openapi.json").json()
            tags = {op["tags"][0] for item in document["paths"].values() for op in item.values()}
            if not tags - set(MODEL_FREE_TAGS):
                pytest.skip("the server has no model-backed operations yet")
            deadline = time.monotonic() + 120
            while client.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, "the demo model did not load"
                time.sleep(0.1)
        exclude = [arg for tag in MODEL_FREE_TAGS for arg in ("--exclude-tag", tag)]
        toml = ('request-timeout = 60.0\n[dictionaries.models]\nvalues = ["demo"]\n'
                '[parameters]\n"body.model" = { dictionary = "models", probability = 0.5 }\n'
                '[[operations]]\ninclude-operation-id = ["chat_completions", "completions", "generate"]\n'
                'checks.positive_data_acceptance.expected-statuses = '
                '["2xx", "3xx", 400, 401, 403, 404, 409, 422, 429, "5xx"]\n')
        summary, output, _ = schemathesis_run(url, tmp_path, toml, *exclude, examples=min(MAX_EXAMPLES, 10))
    assert summary["operations"]["tested"] >= 1, output
