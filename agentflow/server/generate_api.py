"""``POST /generate``: the engine's own interface — a text or token-id prompt (no chat template), the
full set of sampling parameters, a JSON-schema or regex constraint, token ids and log-probabilities
out, streamed as Server-Sent Events on request.

    POST /generate {"text": "Once upon a time", "sampling_params": {"max_new_tokens": 32, "temperature": 0}}
    -> {"id": "gen-...", "text": "...", "output_ids": [...], "finish_reason": "length",
        "usage": {"prompt_tokens": 4, "completion_tokens": 32, "cached_tokens": 0}, "logprobs": null, ...}

Streaming (``"stream": true``): one ``data: {"id", "text", "output_ids", "logprobs", "finish_reason": null}``
event per piece of text (the text and the tokens it came from), a last event with ``finish_reason``,
``usage`` and the tokens no text came with (e.g. EOS), then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentflow.llm.base import Constraint, LLMRequest, LLMResult, TextDelta
from agentflow.server.endpoint import SSE, Endpoint, body
from agentflow.server.errors import ApiError
from agentflow.server.generation import (
    DONE,
    EventStream,
    Generation,
    cleaned,
    client_gone,
    new_id,
    served_llm,
    sse,
    until_disconnect,
)
from agentflow.server.state import state_of

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


MAX_TEMPERATURE = 100.0
"""Past this the distribution is flat anyway (and past float32's range the sampler breaks)."""
NonEmpty = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0)]


class GenerateSamplingParams(_Strict):
    """The engine's ``SamplingParams``; unset fields keep the engine's defaults."""

    max_new_tokens: int | None = Field(default=None, ge=1, description="Default 256.")
    temperature: float | None = Field(default=None, ge=0, le=MAX_TEMPERATURE, description="0 is greedy; default 1.")
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=-1, description="0 or -1: off.")
    min_p: float | None = Field(default=None, ge=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stop: NonEmpty | list[NonEmpty] | None = Field(default=None, description="Strings that end generation (left out "
                                                   "of the text).")
    stop_token_ids: list[TokenId] | None = Field(default=None, description="Token ids that end generation besides "
                                                 "EOS.")
    ignore_eos: bool | None = None


_PRESENT_MEANS_SET = ("text", "input_ids", "json_schema", "regex")


def _schema_rules(schema: JsonDict) -> None:
    """The document's view of the prompt and constraint fields: present means not null; exactly one
    of text and input_ids; at most one of json_schema and regex."""
    properties = schema.get("properties")
    assert isinstance(properties, dict)
    for name in _PRESENT_MEANS_SET:  # documented without their null (the field validator refuses it)
        field = properties[name]
        assert isinstance(field, dict)
        field.pop("default", None)
        variants = field.pop("anyOf")
        assert isinstance(variants, list)
        field.update(next(v for v in variants if isinstance(v, dict) and v.get("type") != "null"))
    schema["oneOf"] = [{"required": ["text"]}, {"required": ["input_ids"]}]
    schema["not"] = {"required": ["json_schema", "regex"]}


class GenerateRequest(_Strict):
    model_config = ConfigDict(json_schema_extra=_schema_rules)

    text: NonEmpty | None = Field(default=None, description="The prompt as text (no chat template is applied). "
                                  "Give text or input_ids.")
    input_ids: Annotated[list[TokenId], Field(min_length=1)] | None = Field(
        default=None, description="The prompt as token ids.")
    sampling_params: GenerateSamplingParams = Field(default_factory=GenerateSamplingParams)
    json_schema: dict[str, Any] | None = Field(default=None, description="A JSON Schema the output follows. At "
                                               "most one of json_schema and regex.")
    regex: NonEmpty | None = Field(default=None, description="A regular expression (Rust regex syntax) the whole "
                                   "output matches.")
    logprobs: bool = Field(default=False, description="Return each generated token's log-probability.")
    stream: bool = False
    model: str | None = Field(default=None, description="Checked against the served model when given.")

    @field_validator(*_PRESENT_MEANS_SET, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must not be null (leave it out instead)")
        return value

    @field_validator("input_ids")
    @classmethod
    def _not_both_prompts(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("text") is not None:
            raise ValueError("give text or input_ids, not both")
        return value

    @field_validator("regex")
    @classmethod
    def _not_both_constraints(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("json_schema") is not None:
            raise ValueError("give json_schema or regex, not both")
        return value

    @model_validator(mode="after")
    def _a_prompt(self) -> GenerateRequest:
        if self.text is None and self.input_ids is None:
            raise ValueError("give text or input_ids")
        return self

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return cleaned(data)



class GenerateUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int


class GenerateResponse(BaseModel):
    id: str
    model: str
    text: str
    output_ids: list[int]
    logprobs: list[float] | None
    finish_reason: str
    usage: GenerateUsage


_SAMPLING = ("max_new_tokens", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "frequency_penalty",
             "presence_penalty", "seed", "stop", "stop_token_ids")


def generate_request(p: GenerateRequest) -> LLMRequest:
    """The LLMRequest for a /generate body."""
    constraint = Constraint(json_schema=p.json_schema, regex=p.regex) if p.json_schema is not None or p.regex else None
    s = p.sampling_params
    return LLMRequest(prompt=p.text, prompt_token_ids=p.input_ids, max_tokens=s.max_new_tokens,
                      temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
                      repetition_penalty=s.repetition_penalty, frequency_penalty=s.frequency_penalty,
                      presence_penalty=s.presence_penalty, seed=s.seed,
                      stop=[s.stop] if isinstance(s.stop, str) else s.stop, stop_token_ids=s.stop_token_ids,
                      ignore_eos=s.ignore_eos, constraint=constraint, logprobs=p.logprobs, model=p.model)


async def generate(request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    payload = await body(request, GenerateRequest, lone_surrogates=True)
    llm = served_llm(state, payload.model)
    llm_request = generate_request(payload)
    params = {name: f"sampling_params.{name}" for name in _SAMPLING}
    params.update({"prompt": "text" if payload.text is not None else "input_ids",
                   "constraint.json_schema": "json_schema", "constraint.regex": "regex", "constraint": "json_schema"})
    generation = Generation(state, "generate", llm, llm_request, param_names=params, started=started)

    async def start() -> Generation:
        await generation.open()
        return generation

    if await until_disconnect(request, start) is None:
        return client_gone()
    out = {"id": new_id("gen"), "model": state.model_name}
    if payload.stream:
        return EventStream(_events(generation, out, payload.logprobs), on_close=generation.aclose)
    try:
        result = await until_disconnect(request, lambda: _collect(generation, out, payload.logprobs))
    finally:
        await generation.aclose()
    return client_gone() if result is None else JSONResponse(result)


def _end(out: dict[str, Any], result: LLMResult, sent: int, logprobs: bool) -> dict[str, Any]:
    """The final fields: the tokens not sent yet (from ``sent`` on), finish reason and usage."""
    ids = list(result.token_ids or ())
    return {**out, "output_ids": ids[sent:],
            "logprobs": list(result.logprobs or ())[sent:] if logprobs else None,
            "finish_reason": result.finish_reason or "stop",
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "cached_tokens": result.cached_tokens}}


async def _collect(generation: Generation, out: dict[str, Any], logprobs: bool) -> dict[str, Any]:
    texts: list[str] = []
    result: LLMResult | None = None
    async for item in generation:
        if isinstance(item, TextDelta):
            texts.append(item.text)
        elif isinstance(item, LLMResult):
            result = item
    assert result is not None
    return {**_end(out, result, 0, logprobs), "text": "".join(texts)}


async def _events(generation: Generation, out: dict[str, Any], logprobs: bool) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for item in generation:
            if isinstance(item, TextDelta):
                ids = item.token_ids or []
                sent += len(ids)
                yield sse({**out, "text": item.text, "output_ids": ids,
                           "logprobs": item.logprobs if logprobs else None, "finish_reason": None})
            elif isinstance(item, LLMResult):
                yield sse({**_end(out, item, sent, logprobs), "text": ""})
    except ApiError as e:
        yield sse(json.loads(bytes(e.response().body)))
    yield DONE


ENDPOINTS = [
    Endpoint("POST", "/generate", generate, "Generate from a raw prompt (the engine's native interface)", "generate",
             body=GenerateRequest, responses={200: (GenerateResponse, SSE)}, errors=(404, 503),
             description="text or input_ids, sampling_params, json_schema or regex. With stream: true the answer is "
             "text/event-stream: `data: {piece}` events, the last with finish_reason and usage, then "
             "`data: [DONE]`; a client that disconnects aborts the generation."),
]

__all__ = ["ENDPOINTS", "GenerateRequest", "GenerateResponse", "GenerateSamplingParams", "generate_request"]
