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

import codecs
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentflow.llm.base import Constraint, LLMRequest, LLMResult, TextDelta, ToolCallDelta
from agentflow.server.endpoint import SSE, Endpoint, body
from agentflow.server.errors import ApiError
from agentflow.server.generation import (
    DONE,
    EventStream,
    Generation,
    client_gone,
    finish_reason,
    new_id,
    now,
    served_llm,
    sse,
    until_disconnect,
    usage,
)
from agentflow.server.openai_models import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    JsonObjectFormat,
    JsonSchemaResponseFormat,
    ModelCard,
    ModelList,
    NamedToolChoice,
    RefusalPart,
    SamplingFields,
    SystemMessage,
    TextFormat,
    TextPart,
    ToolMessage,
    UserMessage,
)
from agentflow.server.state import ServerState, state_of

log = logging.getLogger(__name__)

# ---- shared checks ---------------------------------------------------------------------------------------------

CHAT_PARAMS = {"prompt": "messages", "messages": "messages", "max_new_tokens": "max_tokens",
               "constraint.tool_calls.tools": "tools", "constraint.tool_calls.tool_choice": "tool_choice",
               "constraint.tool_calls.parallel": "parallel_tool_calls", "constraint.tool_calls": "tools",
               "constraint.json_schema": "response_format.json_schema.schema", "constraint": "response_format"}
COMPLETION_PARAMS = {"prompt": "prompt", "max_new_tokens": "max_tokens", "constraint": "prompt"}


def _sampling(p: SamplingFields) -> dict[str, Any]:
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
    # `bytes` lets a client rebuild a character split over tokens: each token's own bytes, where known
    raw = item.token_bytes or [token.encode() for token in item.tokens or ()]
    return [{"token": token, "logprob": logprob, "bytes": list(data), "top_logprobs": []}
            for token, logprob, data in zip(item.tokens or (), item.logprobs or (), raw, strict=False)]


async def chat_completions(request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    payload = await body(request, ChatCompletionRequest, lone_surrogates=True)
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
    names: dict[str, str] = {}  # call id -> tool name, in the order the calls began
    result: LLMResult | None = None
    async for item in generation:
        if isinstance(item, TextDelta):
            texts.append(item.text)
            entries += _token_logprobs(item) if logprobs else ()
        elif isinstance(item, ToolCallDelta):
            if item.id is not None:
                ids[item.index] = item.id
                names[item.id] = item.name or ""
            arguments.setdefault(ids.get(item.index, ""), []).append(item.arguments)
        elif isinstance(item, LLMResult):
            result = item
    assert result is not None
    calls = [{"id": call.id, "type": "function",
              "function": {"name": call.name,
                           "arguments": "".join(arguments.get(call.id, ())) or json.dumps(call.arguments)}}
             for call in result.tool_calls]
    if result.finish_reason != "tool_calls":  # a call cut off (max_tokens, a stop string): as streamed, incomplete
        done = {call.id for call in result.tool_calls}
        calls += [{"id": call_id, "type": "function",
                   "function": {"name": name, "arguments": "".join(arguments.get(call_id, ()))}}
                  for call_id, name in names.items() if call_id not in done]
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
        self.offset = start  # the whole characters before the next token: a token may end mid-character
        self._chars = codecs.getincrementaldecoder("utf-8")("replace")

    def of(self, item: TextDelta) -> dict[str, Any]:
        tokens, offsets = list(item.tokens or ()), []
        raw = item.token_bytes or [token.encode() for token in tokens]
        for data in raw[:len(tokens)]:
            offsets.append(self.offset)
            self.offset += len(self._chars.decode(data))
        return {"tokens": tokens, "token_logprobs": list(item.logprobs or ()), "top_logprobs": None,
                "text_offset": offsets}


async def completions(request: Request) -> Response:
    started = time.perf_counter()
    state = state_of(request)
    payload = await body(request, CompletionRequest, lone_surrogates=True)
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
