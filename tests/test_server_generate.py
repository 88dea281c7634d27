"""``POST /generate`` on a real uvicorn serving the demo model: text and token-id prompts, sampling
parameters, JSON-schema and regex constraints, token ids and log-probabilities out, streaming, errors,
and a client leaving a stream mid-way (the engine request ends within a second)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from agentflow.server import ServerConfig
from agentflow.server.generate_api import GenerateResponse
from tests.serving import running_server

SCHEMA = {"type": "object", "additionalProperties": False, "required": ["name", "age"], "properties": {
    "name": {"type": "string", "enum": ["ada", "alan", "grace"]}, "age": {"type": "integer", "minimum": 0,
                                                                       "maximum": 120}}}
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with running_server(ServerConfig(model="demo", store=":memory:")) as url, \
            httpx.Client(base_url=url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def tokenizer(demo_path: Path) -> Any:
    from engine.tokenizer import Tokenizer

    return Tokenizer(demo_path)


def generate(http: httpx.Client, **body: Any) -> dict[str, Any]:
    r = http.post("/generate", json=body)
    assert r.status_code == 200, r.text
    GenerateResponse.model_validate(r.json())
    return r.json()  # type: ignore[no-any-return]


def stream_events(http: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    with http.stream("POST", "/generate", json={**body, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    blocks = text.removesuffix("\n\n").split("\n\n")
    assert all(b.startswith("data: ") for b in blocks) and blocks[-1] == "data: [DONE]"
    return [json.loads(b[len("data: "):]) for b in blocks[:-1]]


def metric(http: httpx.Client, name: str) -> float:
    found = re.search(rf"^{name} (\S+)$", http.get("/metrics").text, re.M)
    assert found, name
    return float(found[1])


def test_text_prompt_greedy_and_token_ids(http: httpx.Client, tokenizer: Any) -> None:
    params = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True}
    out = generate(http, text=PROMPT, sampling_params=params)
    assert out["finish_reason"] == "length" and len(out["output_ids"]) == out["usage"]["completion_tokens"] == 8
    assert out["text"] == tokenizer.decode(out["output_ids"])
    assert out["usage"]["prompt_tokens"] == len(tokenizer.encode(PROMPT)) and out["logprobs"] is None
    # The same prompt as token ids: the same greedy output.
    by_ids = generate(http, input_ids=tokenizer.encode(PROMPT), sampling_params=params)
    assert by_ids["output_ids"] == out["output_ids"] and by_ids["text"] == out["text"]


def test_stream_adds_up_to_the_plain_answer(http: httpx.Client) -> None:
    params = {"max_new_tokens": 12, "seed": 5}
    plain = generate(http, text=PROMPT, sampling_params=params, logprobs=True)
    events = stream_events(http, text=PROMPT, sampling_params=params, logprobs=True)
    assert all(e["finish_reason"] is None for e in events[:-1])
    assert events[-1]["finish_reason"] == plain["finish_reason"]
    assert "".join(e["text"] for e in events) == plain["text"]
    assert [t for e in events for t in e["output_ids"]] == plain["output_ids"]
    assert [x for e in events for x in e["logprobs"]] == pytest.approx(plain["logprobs"])
    assert len(plain["logprobs"]) == len(plain["output_ids"]) and all(x <= 0 for x in plain["logprobs"])
    assert events[-1]["usage"] == plain["usage"] | {"cached_tokens": events[-1]["usage"]["cached_tokens"]}


def test_sampling_parameters_change_the_output(http: httpx.Client) -> None:
    base = {"max_new_tokens": 10, "seed": 3, "ignore_eos": True}
    first = generate(http, text=PROMPT, sampling_params=base)
    assert generate(http, text=PROMPT, sampling_params=base)["output_ids"] == first["output_ids"]
    assert generate(http, text=PROMPT, sampling_params={**base, "seed": 4})["output_ids"] != first["output_ids"]
    assert generate(http, text=PROMPT, sampling_params={**base, "top_k": 1})["output_ids"] == \
        generate(http, text=PROMPT, sampling_params={**base, "temperature": 0})["output_ids"]  # top-1 is greedy
    # A stop token id taken from the output ends it right there (the stop token is the last id).
    stop = first["output_ids"][4]
    cut = generate(http, text=PROMPT, sampling_params={**base, "stop_token_ids": [stop]})
    assert cut["finish_reason"] == "stop"
    assert cut["output_ids"] == first["output_ids"][:first["output_ids"].index(stop) + 1]
    # A stop string: the text up to it.
    text = first["text"]
    word = text[len(text) // 2: len(text) // 2 + 3]
    stopped = generate(http, text=PROMPT, sampling_params={**base, "stop": word})
    assert stopped["finish_reason"] == "stop" and stopped["text"] == text[:text.index(word)]
    penalized = generate(http, text=PROMPT, sampling_params={**base, "temperature": 0, "repetition_penalty": 1.3,
                                                              "frequency_penalty": 1, "presence_penalty": 1,
                                                              "min_p": 0.01, "top_p": 0.9})
    assert len(penalized["output_ids"]) == 10


def test_constraints(http: httpx.Client) -> None:
    for seed in range(3):
        out = generate(http, text="A person as JSON:", json_schema=SCHEMA,
                       sampling_params={"max_new_tokens": 60, "seed": seed})
        assert out["finish_reason"] == "stop"
        jsonschema.validate(json.loads(out["text"]), SCHEMA)
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    for seed in range(3):
        out = generate(http, text="A code:", regex=pattern, sampling_params={"max_new_tokens": 20, "seed": seed})
        assert out["finish_reason"] == "stop" and re.fullmatch(pattern, out["text"]), out
    streamed = stream_events(http, text="A person:", json_schema=SCHEMA, sampling_params={"max_new_tokens": 60})
    jsonschema.validate(json.loads("".join(e["text"] for e in streamed)), SCHEMA)


@pytest.mark.parametrize(("body", "status", "param"), [
    ({}, 422, None),
    ({"text": "a", "input_ids": [1]}, 422, "input_ids"),
    ({"text": None, "input_ids": [1]}, 422, "text"),
    ({"text": "a", "sampling_params": {"temperature": -1}}, 422, "sampling_params.temperature"),
    ({"text": "a", "sampling_params": {"max_new_tokens": True}}, 422, "sampling_params.max_new_tokens"),
    ({"text": "a", "sampling_params": {"beam_width": 4}}, 422, "sampling_params.beam_width"),
    ({"text": "a", "extra": 1}, 422, "extra"),
    ({"text": "a", "json_schema": SCHEMA, "regex": "a+"}, 422, "regex"),
    ({"text": "a", "json_schema": "{}"}, 422, "json_schema"),
    ({"text": "a", "json_schema": {"type": 12}}, 400, "json_schema"),
    ({"text": "a", "regex": "(unclosed"}, 400, "regex"),
    ({"text": ""}, 422, "text"),
    ({"input_ids": []}, 422, "input_ids"),
    ({"input_ids": [151936]}, 400, "input_ids"),
    ({"input_ids": [-1]}, 422, "input_ids.0"),
    ({"input_ids": [False]}, 422, "input_ids.0"),
    ({"text": "a", "sampling_params": {"stop": [""]}}, 422, "sampling_params.stop"),
    ({"text": "a", "model": "other"}, 404, "model"),
])
def test_errors(http: httpx.Client, body: dict[str, Any], status: int, param: str) -> None:
    r = http.post("/generate", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}, error
    assert error["param"] == param if param is None else error["param"].startswith(param), error


def test_a_client_leaving_a_stream_ends_its_engine_request_within_a_second(http: httpx.Client) -> None:
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 5000, "ignore_eos": True}, "stream": True}
    with http.stream("POST", "/generate", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert metric(http, "agentflow_engine_requests_running") == 1
        assert metric(http, "agentflow_generation_requests_in_flight") == 1
    left = time.monotonic()
    while metric(http, "agentflow_engine_requests_running") or metric(http, "agentflow_generation_requests_in_flight"):
        assert time.monotonic() - left < 1.0, "the engine request outlived its client by a second"
        time.sleep(0.02)
    assert metric(http, "agentflow_engine_requests_waiting") == 0
    assert metric(http, "agentflow_engine_kv_cache_used_slots") == metric(http, "agentflow_engine_prefix_cache_tokens")
    assert generate(http, text=PROMPT, sampling_params={"max_new_tokens": 2})["usage"]["completion_tokens"] >= 1
