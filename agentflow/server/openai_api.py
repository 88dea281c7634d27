"""The OpenAI-compatible API on the local model: ``GET /v1/models``, ``POST /v1/chat/completions`` and
``POST /v1/completions``, in OpenAI's shapes (requests, responses, streaming chunks and errors), so
the official clients work against it unchanged. ``docs/server-openai.md`` lists what is supported.

Requests are checked in three steps: the body against the pydantic models below (422 naming the
field), the ``model`` against the served one (404 ``model_not_found``), then what the models cannot
express (400: ``n`` > 1, ``logit_bias``, text-only content, ...). The engine checks the rest (sampling
ranges, tool schemas, JSON schemas, the context length): its refusals are 400s naming the parameter
too, answered before any stream starts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentflow.llm.base import Constraint, LLMRequest, LLMResult, TextDelta, ToolCallDelta
from agentflow.server.endpoint import SSE, Endpoint, body
from agentflow.server.errors import ApiError
from agentflow.server.generation import (
    DONE,
    EventStream,
    Generation,
    cleaned,
    client_gone,
    finish_reason,
    new_id,
    now,
    served_llm,
    sse,
    until_disconnect,
    usage,
)
from agentflow.server.state import ServerState, state_of

log = logging.getLogger(__name__)

MAX_STOP = 16
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


# ---- request models ------------------------------------------------------------------------------------------
# Strict (no coercion: ``true`` is not 1), and as much of what is accepted as JSON Schema can say is in
# the OpenAPI document; what it cannot (a tool named by tool_choice but not among the tools, a schema
# that does not compile, token ids past the vocabulary, a prompt longer than the context) is a 400.

class _Lenient(BaseModel):
    """Unknown fields are ignored, as OpenAI clients send newer ones (``store``, ``metadata`` ...)."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


NonEmpty = Annotated[str, Field(min_length=1)]
TokenId = Annotated[int, Field(ge=0)]


class FunctionCallIn(_Lenient):
    name: str = Field(min_length=1)
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCallIn(_Lenient):
    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCallIn


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


Content = str | list[TextPart]
"""A string, or text parts (joined by newlines); this model reads text only."""
AssistantContent = str | list[Annotated[TextPart | RefusalPart, Field(discriminator="type")]]


class SystemMessage(_Lenient):
    role: Literal["system", "developer"]
    content: Content
    name: str | None = None


class UserMessage(_Lenient):
    role: Literal["user"]
    content: Content
    name: str | None = None


class AssistantMessage(_Lenient):
    role: Literal["assistant"]
    content: AssistantContent | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    name: str | None = None


class ToolMessage(_Lenient):
    role: Literal["tool"]
    content: Content
    tool_call_id: str = Field(min_length=1)


ChatMessage = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class ToolParameters(_Lenient):
    """A JSON Schema of an object: ``type`` is ``object``; its other keywords pass through."""

    model_config = ConfigDict(extra="allow")

    type: Literal["object"]


class FunctionDef(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: ToolParameters | None = Field(default=None, description="JSON Schema of the arguments (an object; "
                                              "none: no arguments).")
    strict: bool | None = None


class ToolDef(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(_Lenient):
    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema",
                                           description="The JSON Schema the output follows (default: any object).")
    strict: bool | None = None


class TextFormat(_Lenient):
    type: Literal["text"]


class JsonObjectFormat(_Lenient):
    type: Literal["json_object"]


class JsonSchemaResponseFormat(_Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(_Lenient):
    include_usage: bool | None = False


class _Sampling(_Lenient):
    """What chat and completion requests share."""

    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: NonEmpty | Annotated[list[NonEmpty], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=0, description="Not supported (only "
                                                "empty).")
    user: str | None = None


_SOME_TOOLS: JsonDict = {"type": "array", "minItems": 1}
_JSON_FORMAT: JsonDict = {"type": "object", "required": ["type"],
                          "properties": {"type": {"enum": ["json_object", "json_schema"]}}}
_CHAT_RULES: JsonDict = {
    # tool_choice "required" or a named tool needs tools
    "if": {"required": ["tool_choice"],
           "properties": {"tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]}}},
    "then": {"required": ["tools"], "properties": {"tools": _SOME_TOOLS}},
    # tools and a JSON response_format do not go together (the tool-call format is the constraint)
    "not": {"required": ["tools", "response_format"],
            "properties": {"tools": _SOME_TOOLS, "response_format": _JSON_FORMAT}},
}


class ChatCompletionRequest(_Sampling):
    model_config = ConfigDict(json_schema_extra=_CHAT_RULES)

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, description="Wins over max_tokens.")
    logprobs: bool | None = Field(default=False, description="Not reported for requests with tools.")
    top_logprobs: int | None = Field(default=None, ge=0, le=0, description="Only 0 is supported.")
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description='"required" or a named tool needs tools.')
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    functions: None = Field(default=None, description="Not supported: use tools.")
    function_call: None = Field(default=None, description="Not supported: use tool_choice.")
    modalities: list[Literal["text"]] | None = Field(default=None, description="This model writes text only.")
    audio: None = Field(default=None, description="Not supported.")

    @field_validator("tool_choice")
    @classmethod
    def _choice_needs_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if (value == "required" or isinstance(value, NamedToolChoice)) and not info.data.get("tools"):
            raise ValueError('"required" or a named tool needs tools')
        return value

    @field_validator("response_format")
    @classmethod
    def _no_json_with_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("tools") and isinstance(value, (JsonObjectFormat, JsonSchemaResponseFormat)):
            raise ValueError("json_object / json_schema cannot be combined with tools (the tool-call format is the "
                             "constraint)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return cleaned(data)


_TEXT_PROMPT: JsonDict = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_ECHO: JsonDict = {"if": {"required": ["echo"], "properties": {"echo": {"const": True}}},
                   "then": {"properties": {"prompt": _TEXT_PROMPT, "logprobs": {"type": "null"}}}}


class CompletionRequest(_Sampling):
    model_config = ConfigDict(json_schema_extra=_ECHO)

    prompt: (NonEmpty | Annotated[list[NonEmpty], Field(min_length=1, max_length=1)]
             | Annotated[list[TokenId], Field(min_length=1)]
             | Annotated[list[Annotated[list[TokenId], Field(min_length=1)]], Field(min_length=1, max_length=1)]) = \
        Field(description="One prompt: text or token ids (or a list holding one of them).")
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=0, description="Only 0 is supported (the chosen tokens' "
                                 "log-probabilities; no alternatives).")
    echo: bool | None = Field(default=False, description="Needs a text prompt and no logprobs.")
    suffix: str | None = Field(default=None, max_length=0, description="Not supported.")
    best_of: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")

    @field_validator("echo")
    @classmethod
    def _echo_needs_text(cls, value: Any, info: ValidationInfo) -> Any:
        prompt = info.data.get("prompt")
        if value and prompt is not None and not isinstance(prompt, str) and not isinstance(prompt[0], str):
            raise ValueError("echo needs a text prompt")
        if value and info.data.get("logprobs") is not None:
            raise ValueError("echo with logprobs (the prompt's log-probabilities) is not supported")
        return value

    @model_validator(mode="before")
    @classmethod
    def _clean(cls, data: Any) -> Any:
        return cleaned(data)


# ---- response models (for the OpenAPI document; the handlers write the same shapes as dicts) ----------------

class PromptTokensDetails(BaseModel):
    cached_tokens: int


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class AssistantMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCallOut] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[dict[str, Any]]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None
    refusal: list[TokenLogprob] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessageOut
    logprobs: ChoiceLogprobs | None
    finish_reason: Literal["stop", "length", "tool_calls"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: Literal["stop", "length"]


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


# ---- shared checks ---------------------------------------------------------------------------------------------

CHAT_PARAMS = {"prompt": "messages", "messages": "messages", "max_new_tokens": "max_tokens",
               "constraint.tool_calls.tools": "tools", "constraint.tool_calls.tool_choice": "tool_choice",
               "constraint.tool_calls.parallel": "parallel_tool_calls", "constraint.tool_calls": "tools",
               "constraint.json_schema": "response_format.json_schema.schema", "constraint": "response_format"}
COMPLETION_PARAMS = {"prompt": "prompt", "max_new_tokens": "max_tokens", "constraint": "prompt"}


def _sampling(p: _Sampling) -> dict[str, Any]:
    """The LLMRequest fields of the parameters chat and completions share."""
    stop = [p.stop] if isinstance(p.stop, str) else p.stop
    temperature, top_p = p.temperature, p.top_p
    if top_p == 0:  # the smallest nucleus: the most likely token alone
        temperature, top_p = 0.0, None
    return {"model": p.model, "temperature": temperature, "top_p": top_p, "seed": p.seed, "stop": stop or None,
            "presence_penalty": p.presence_penalty, "frequency_penalty": p.frequency_penalty}


def _text(content: str | list[TextPart] | list[TextPart | RefusalPart] | None) -> str:
    """A message's content as one string (parts joined by newlines)."""
    if content is None or isinstance(content, str):
        return content or ""
    return "\n".join(part.text if isinstance(part, TextPart) else part.refusal for part in content)


def _template_message(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> dict[str, Any]:
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": _text(message.content)}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": _text(message.content)}
    if isinstance(message, ToolMessage):
        return {"role": "tool", "content": _text(message.content), "tool_call_id": message.tool_call_id}
    out: dict[str, Any] = {"role": "assistant", "content": _text(message.content)}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "type": "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in message.tool_calls]
    return out


def _constraint(response_format: TextFormat | JsonObjectFormat | JsonSchemaResponseFormat | None) -> Constraint | None:
    if response_format is None or isinstance(response_format, TextFormat):
        return None
    if isinstance(response_format, JsonObjectFormat):
        return Constraint(json_schema={"type": "object"})
    schema = response_format.json_schema.schema_
    return Constraint(json_schema=schema if schema is not None else {"type": "object"})


def chat_request(p: ChatCompletionRequest) -> LLMRequest:
    """The LLMRequest for a chat completion request."""
    tools = [{"type": "function", "function": t.function.model_dump(exclude_none=True, exclude={"strict"})}
             for t in p.tools or ()]
    choice: str | dict[str, Any] | None = (p.tool_choice.model_dump() if isinstance(p.tool_choice, NamedToolChoice)
                                           else p.tool_choice)
    if not tools:
        choice = None  # "none" and "auto" without tools: nothing to call either way
    constraint = _constraint(p.response_format)
    max_tokens = p.max_completion_tokens if p.max_completion_tokens is not None else p.max_tokens
    return LLMRequest(messages=[_template_message(m) for m in p.messages], max_tokens=max_tokens,
                      tools=tools or None, tool_choice=choice, parallel_tool_calls=p.parallel_tool_calls,
                      constraint=constraint, logprobs=bool(p.logprobs) and not tools, **_sampling(p))


def completion_request(p: CompletionRequest) -> LLMRequest:
    """The LLMRequest for a (legacy) completion request."""
    prompt: Any = p.prompt
    if isinstance(prompt, list) and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    text, ids = (prompt, None) if isinstance(prompt, str) else (None, list(prompt))
    return LLMRequest(prompt=text, prompt_token_ids=ids, max_tokens=p.max_tokens, logprobs=p.logprobs is not None,
                      **_sampling(p))


def _meta(state: ServerState, prefix: str, kind: str) -> dict[str, Any]:
    return {"id": new_id(prefix), "object": kind, "created": now(), "model": state.model_name}


def _error_event(error: ApiError) -> bytes:
    return sse(json.loads(bytes(error.response().body)))


async def _generation(request: Request, state: ServerState, api: Literal["chat", "completions"],
                      llm_request: LLMRequest, params: dict[str, str], started: float) -> Generation | None:
    """An open generation, or None when the client left while it started."""
    assert state.llm is not None
    generation = Generation(state, api, state.llm, llm_request, param_names=params, started=started)

    async def start() -> Generation:
        await generation.open()
        return generation

    return await until_disconnect(request, start)


async def _run(request: Request, generation: Generation, stream: AsyncIterator[bytes] | None,
               collect: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
    """The streaming response, or the JSON body ``collect()`` builds (closing the generation either way)."""
    if stream is not None:
        return EventStream(stream, on_close=generation.aclose)
    try:
        result = await until_disconnect(request, collect)
    finally:
        await generation.aclose()
    return client_gone() if result is None else JSONResponse(result)


# ---- /v1/chat/completions --------------------------------------------------------------------------------------

def _token_logprobs(item: TextDelta) -> list[dict[str, Any]]:
    return [{"token": token, "logprob": logprob, "bytes": list(token.encode()), "top_logprobs": []}
            for token, logprob in zip(item.tokens or (), item.logprobs or (), strict=False)]


async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    payload = await body(request, ChatCompletionRequest)
    served_llm(state, payload.model)
    llm_request = chat_request(payload)
    generation = await _generation(request, state, "chat", llm_request, CHAT_PARAMS, started)
    if generation is None:
        return client_gone()
    meta = _meta(state, "chatcmpl", "chat.completion")
    include_usage = bool(payload.stream and payload.stream_options and payload.stream_options.include_usage)
    stream = _chat_chunks(generation, meta, include_usage, llm_request.logprobs) if payload.stream else None
    return await _run(request, generation, stream, lambda: _chat_completion(generation, meta, llm_request.logprobs))


async def _chat_completion(generation: Generation, meta: dict[str, Any], logprobs: bool) -> dict[str, Any]:
    texts: list[str] = []
    entries: list[dict[str, Any]] = []
    arguments: dict[str, list[str]] = {}  # call id -> its argument fragments, as the model wrote them
    ids: dict[int, str] = {}
    result: LLMResult | None = None
    async for item in generation:
        if isinstance(item, TextDelta):
            texts.append(item.text)
            entries += _token_logprobs(item) if logprobs else ()
        elif isinstance(item, ToolCallDelta):
            if item.id is not None:
                ids[item.index] = item.id
            arguments.setdefault(ids.get(item.index, ""), []).append(item.arguments)
        elif isinstance(item, LLMResult):
            result = item
    assert result is not None
    calls = [{"id": call.id, "type": "function",
              "function": {"name": call.name,
                           "arguments": "".join(arguments.get(call.id, ())) or json.dumps(call.arguments)}}
             for call in result.tool_calls]
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    choice = {"index": 0, "message": message,
              "logprobs": {"content": entries, "refusal": None} if logprobs else None,
              "finish_reason": finish_reason(result)}
    return {**meta, "choices": [choice], "usage": usage(result)}


async def _chat_chunks(generation: Generation, meta: dict[str, Any], include_usage: bool,
                       logprobs: bool) -> AsyncIterator[bytes]:
    base = {**meta, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        return sse(data)

    yield chunk({"role": "assistant", "content": "", "refusal": None})
    result: LLMResult | None = None
    try:
        async for item in generation:
            if isinstance(item, TextDelta):
                lp = {"content": _token_logprobs(item), "refusal": None} if logprobs else None
                yield chunk({"content": item.text}, lp=lp)
            elif isinstance(item, ToolCallDelta):
                call: dict[str, Any] = {"index": item.index}
                if item.id is not None:
                    call.update(id=item.id, type="function", function={"name": item.name, "arguments": item.arguments})
                else:
                    call["function"] = {"arguments": item.arguments}
                yield chunk({"tool_calls": [call]})
            elif isinstance(item, LLMResult):
                result = item
    except ApiError as e:
        yield _error_event(e)
        yield DONE
        return
    yield chunk({}, finish_reason(result))
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage(result)})
    yield DONE


# ---- /v1/completions -------------------------------------------------------------------------------------------

class _Offsets:
    """The legacy ``logprobs`` object of a completion, built piece by piece."""

    def __init__(self, start: int) -> None:
        self.offset = start

    def of(self, item: TextDelta) -> dict[str, Any]:
        tokens, offsets = list(item.tokens or ()), []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(token)
        return {"tokens": tokens, "token_logprobs": list(item.logprobs or ()), "top_logprobs": None,
                "text_offset": offsets}


async def completions(request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    payload = await body(request, CompletionRequest)
    served_llm(state, payload.model)
    llm_request = completion_request(payload)
    generation = await _generation(request, state, "completions", llm_request, COMPLETION_PARAMS, started)
    if generation is None:
        return client_gone()
    meta = _meta(state, "cmpl", "text_completion")
    echo = generation.request.prompt if payload.echo and generation.request.prompt is not None else ""
    include_usage = bool(payload.stream and payload.stream_options and payload.stream_options.include_usage)
    stream = _completion_chunks(generation, meta, include_usage, llm_request.logprobs, echo) if payload.stream \
        else None
    return await _run(request, generation, stream,
                      lambda: _completion(generation, meta, llm_request.logprobs, echo))


async def _completion(generation: Generation, meta: dict[str, Any], logprobs: bool, echo: str) -> dict[str, Any]:
    texts = [echo]
    offsets = _Offsets(len(echo))
    pieces: list[dict[str, Any]] = []
    result: LLMResult | None = None
    async for item in generation:
        if isinstance(item, TextDelta):
            texts.append(item.text)
            if logprobs:
                pieces.append(offsets.of(item))
        elif isinstance(item, LLMResult):
            result = item
    lp = None
    if logprobs:
        lp = {"tokens": [t for p in pieces for t in p["tokens"]],
              "token_logprobs": [x for p in pieces for x in p["token_logprobs"]], "top_logprobs": None,
              "text_offset": [x for p in pieces for x in p["text_offset"]]}
    choice = {"index": 0, "text": "".join(texts), "logprobs": lp, "finish_reason": finish_reason(result)}
    return {**meta, "choices": [choice], "usage": usage(result)}


async def _completion_chunks(generation: Generation, meta: dict[str, Any], include_usage: bool, logprobs: bool,
                             echo: str) -> AsyncIterator[bytes]:
    offsets = _Offsets(len(echo))

    def chunk(text: str, finish: str | None = None, lp: Any = None) -> bytes:
        data = {**meta, "choices": [{"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}]}
        if include_usage:
            data["usage"] = None
        return sse(data)

    if echo:
        yield chunk(echo)
    result: LLMResult | None = None
    try:
        async for item in generation:
            if isinstance(item, TextDelta):
                yield chunk(item.text, lp=offsets.of(item) if logprobs else None)
            elif isinstance(item, LLMResult):
                result = item
    except ApiError as e:
        yield _error_event(e)
        yield DONE
        return
    yield chunk("", finish_reason(result))
    if include_usage:
        yield sse({**meta, "choices": [], "usage": usage(result)})
    yield DONE


# ---- /v1/models ------------------------------------------------------------------------------------------------

def _card(state: ServerState) -> dict[str, Any]:
    created = state.extra.setdefault("model_created", now())
    return {"id": state.model_name, "object": "model", "created": created, "owned_by": "agentflow"}


async def list_models(request: Request) -> Response:
    state = state_of(request)
    data = [_card(state)] if state.llm is not None and state.model_name else []
    return JSONResponse({"object": "list", "data": data})


async def get_model(request: Request) -> Response:
    state = state_of(request)
    served_llm(state, request.path_params["model"])
    return JSONResponse(_card(state))


TAG = "openai"
STREAMED = ("With stream: true the answer is text/event-stream: `data: {chunk}` events, then `data: [DONE]`; "
            "a client that disconnects aborts the generation.")
ENDPOINTS = [
    Endpoint("GET", "/v1/models", list_models, "List the served models", TAG, responses={200: ModelList}),
    Endpoint("GET", "/v1/models/{model:path}", get_model, "Get a served model", TAG, responses={200: ModelCard},
             errors=(404,)),
    Endpoint("POST", "/v1/chat/completions", chat_completions, "Chat completion (OpenAI-compatible)", TAG,
             body=ChatCompletionRequest, responses={200: (ChatCompletion, SSE)}, errors=(404, 503),
             description="Tools (tool_choice auto / required / none / named, parallel_tool_calls), response_format "
             "json_object and json_schema (enforced while decoding), stop, seed, logprobs. " + STREAMED),
    Endpoint("POST", "/v1/completions", completions, "Text completion (OpenAI-compatible, legacy)", TAG,
             body=CompletionRequest, responses={200: (Completion, SSE)}, errors=(404, 503),
             description="One prompt (text or token ids) per request. " + STREAMED),
]

__all__ = ["ENDPOINTS", "ChatCompletionRequest", "CompletionRequest", "chat_request", "completion_request"]
