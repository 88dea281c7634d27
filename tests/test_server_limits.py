"""Limits and edges of the server: body size (413), per-key rate limit (429 + Retry-After), CORS,
unknown routes and methods in the JSON error shape, and `agentflow serve` as a real process."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from agentflow.server import ServerConfig
from tests.serving import free_port, running_server

ROOT = Path(__file__).resolve().parent.parent


def test_body_limit_rejects_large_bodies_before_the_handler() -> None:
    config = ServerConfig(model=None, store=":memory:", max_body_bytes=2048)
    with running_server(config) as url, httpx.Client(base_url=url) as client:
        big = "x" * 5000
        r = client.post("/v1/workflows/validate", content=f"name: {big}", headers={"content-type": "application/yaml"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunks():  # no Content-Length: the limit applies to the streamed bytes
            for _ in range(10):
                yield b"y" * 512

        r = client.post("/v1/workflows/validate", content=chunks(), headers={"content-type": "application/yaml"})
        assert r.status_code == 413
        small = client.post("/v1/workflows/validate", content="name: [", headers={"content-type": "application/yaml"})
        assert small.status_code == 422  # under the limit: handled normally
        assert client.get("/health").status_code == 200


def test_a_client_that_leaves_mid_body_is_a_499_not_a_500(caplog: pytest.LogCaptureFixture) -> None:
    # each one used to log two tracebacks and count as a 500: a cheap way to flood the log and the 5xx metric
    with running_server(ServerConfig(model=None, store=":memory:")) as url, httpx.Client(base_url=url) as client:
        host, port = url.removeprefix("http://").split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(b"POST /v1/workflows/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/yaml\r\n"
                             b"Content-Length: 4000\r\n\r\nname: a")
        route = 'route="/v1/workflows/validate"'
        deadline = time.monotonic() + 30
        while True:
            lines = [line for line in client.get("/metrics").text.splitlines()
                     if line.startswith("agentflow_http_requests_total") and route in line]
            if any('status="499"' in line and line.endswith(" 3.0") for line in lines):
                break
            assert time.monotonic() < deadline, lines
            time.sleep(0.05)
        assert not any('status="500"' in line for line in lines), lines
        assert client.get("/health").status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_rate_limit_per_key() -> None:
    keys = [{"tenant": "a", "key": "aaaaaaaaaaaaaaaa-1"}, {"tenant": "b", "key": "bbbbbbbbbbbbbbbb-2"}]
    config = ServerConfig(model=None, store=":memory:", api_keys=keys, rate_limit_per_s=0.5, rate_limit_burst=3)
    with running_server(config) as url, httpx.Client(base_url=url) as client:
        a = {"Authorization": "Bearer aaaaaaaaaaaaaaaa-1"}
        b = {"Authorization": "Bearer bbbbbbbbbbbbbbbb-2"}
        codes = [client.get("/v1/runs", headers=a).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        limited = client.get("/v1/runs", headers=a)
        assert limited.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(limited.headers["retry-after"]) <= 2
        assert client.get("/v1/runs", headers=b).status_code == 200  # another key has its own bucket
        assert client.get("/health").status_code == 200  # unauthenticated routes are not limited


def test_cors_and_error_shape_for_unknown_routes() -> None:
    config = ServerConfig(model=None, store=":memory:", cors_origins=["http://app.example"])
    with running_server(config) as url, httpx.Client(base_url=url) as client:
        pre = client.options("/v1/runs", headers={"Origin": "http://app.example",
                                                  "Access-Control-Request-Method": "POST",
                                                  "Access-Control-Request-Headers": "authorization,content-type"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://app.example"
        other = client.options("/v1/runs", headers={"Origin": "http://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        assert other.status_code == 400 and other.json()["error"]["code"] == "cors_refused"
        assert "origin" in other.json()["error"]["message"]
        r = client.get("/v1/nothing-here")
        assert r.status_code == 404 and set(r.json()["error"]) >= {"message", "type", "param", "code"}
        r = client.delete("/health")
        assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
        assert client.get("/openapi.json").json()["openapi"].startswith("3.")
        assert "agentflow API" in client.get("/docs").text


def test_agentflow_serve_runs_a_workflow(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "agentflow.cli", "serve", "--model", "none", "--workflows",
                             str(ROOT / "tests" / "data" / "server"), "--store", str(tmp_path / "runs.db"),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "agentflow serve did not become ready"
            time.sleep(0.2)
        with httpx.Client(base_url=url) as client:
            names = [w["name"] for w in client.get("/v1/workflows").json()["data"]]
            assert names == ["double"]
            run = client.post("/v1/workflows/double/runs?wait=true", json={"input": {"x": 21}}).json()
            assert run["status"] == "completed" and run["output"] == 42
            ask = "name: ask\nnodes: [{id: q, kind: interrupt, prompt: 'go on?'}]\noutput: q\n"
            assert client.put("/v1/workflows/ask", content=ask,
                              headers={"content-type": "application/yaml"}).status_code == 201
            paused = client.post("/v1/workflows/ask/runs?wait=true", json={"input": {}}).json()
            assert paused["status"] == "interrupted"
            # an open event stream (a paused run's stays open) ends when the server stops; the shutdown used
            # to wait for it for 10 s, then cancel it with a traceback
            with client.stream("GET", f"/v1/runs/{paused['run_id']}/events") as events:
                lines = events.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: run.started"
                proc.send_signal(signal.SIGINT)
                list(lines)  # the server ends the stream
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        output = proc.stdout.read().decode() if proc.stdout else ""
        if proc.stdout:
            proc.stdout.close()
    assert (tmp_path / "runs.db").exists()
    assert "graceful shutdown exceeded" not in output and "Exception in ASGI application" not in output, output


def test_agentflow_serve_refuses_what_it_cannot_start_with_one_line(tmp_path: Path) -> None:
    """Each used to print "serving on ..." and then a traceback (exit 3), or to serve regardless."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNSET_KEY_VAR": ""}
    env.pop("UNSET_KEY_VAR")
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database" * 100)
    keys = tmp_path / "keys.yaml"
    keys.write_text("api_keys: [{tenant: acme, env: UNSET_KEY_VAR}]\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = {
            "file is not a database": ["--store", str(corrupt)],
            "no such file or folder": ["--workflows", str(tmp_path / "missing")],
            "no such directory": ["--model", str(tmp_path / "no-model")],
            "UNSET_KEY_VAR is not set": ["--config", str(keys)],
            "cannot listen on 127.0.0.1": ["--port", str(port)],
        }
        for words, flags in cases.items():
            args = ["--model", "none", "--store", str(tmp_path / "ok.db"), "--port", "0", *flags]
            done = subprocess.run([sys.executable, "-m", "agentflow.cli", "serve", *args], env=env, timeout=60,
                                  capture_output=True, text=True, check=False)
            assert done.returncode == 2, (words, done.stderr)
            assert words in done.stderr and "Traceback" not in done.stderr and "serving on" not in done.stderr


def test_server_token_policy_default_and_limit() -> None:
    config = ServerConfig(model="demo", store=":memory:", default_max_tokens=3, max_tokens_limit=5)
    with running_server(config) as url, httpx.Client(base_url=url, timeout=60) as client:
        chat = {"model": "demo", "messages": [{"role": "user", "content": "Count to ten."}], "temperature": 0}
        r = client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
        r = client.post("/v1/chat/completions", json={**chat, "max_tokens": 6})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = client.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 6}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "sampling_params.max_new_tokens"
        r = client.post("/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 5, "ignore_eos": True}})
        assert r.status_code == 200 and len(r.json()["output_ids"]) == 5
    # a limit under the default: requests that set no max_tokens get the limit, not a 400 for 256 they never asked
    config = ServerConfig(model="demo", store=":memory:", max_tokens_limit=2)
    with running_server(config) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/chat/completions", json={**chat, "stream": False})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
