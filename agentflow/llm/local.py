"""``LocalEngine``: the ``LLM`` protocol on the in-process engine (``engine.AsyncEngine``).

This is the only module of agentflow that imports ``engine``, and it does so inside functions:
importing it (or constructing a ``LocalEngine``) pulls in neither the engine nor torch. The engine
is built on the first call.

    llm = LocalEngine("demo", max_kv_tokens=16384)
    result = await generate(llm, LLMRequest(messages=[{"role": "user", "content": "Hi"}]))
    await llm.aclose()

How an ``LLMRequest`` maps onto the engine:

- ``messages`` go through the model's chat template, with ``tools`` rendered into it; ``prompt``
  is raw text; ``prompt_token_ids`` are token ids, used as they are. Assistant messages whose tool
  calls carry OpenAI-style string ``arguments`` get them decoded to objects first (chat templates
  serialize them with ``tojson``).
- Sampling: ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` (256); every other parameter
  that is ``None`` keeps the engine's default (temperature 1.0, top_p 1.0, top_k off, no seed).
  Without tools, each ``TextDelta`` carries its ``token_ids`` (and with ``logprobs`` their
  log-probabilities and texts), and the result every generated token id.
- Invalid requests raise ``LLMRequestError`` (an ``LLMError``) naming the engine's field.
- ``session_id`` is passed through: the engine keeps the session's K/V pinned between turns, so
  an agent's next turn prefills only what is new.
- ``constraint`` becomes an ``engine.constrained.ConstraintSpec`` when that module is installed;
  without it the call runs unconstrained (the orchestrator validates outputs either way).
- With ``tools``, generation is constrained to the model's native tool-call format
  (``engine.constrained.ToolCallSpec``: every call parses and its arguments match the tool's
  schema; ``tool_choice`` is honoured). The stream yields ``TextDelta`` for the content only,
  ``ToolCallDelta`` pieces (id and name first, then argument fragments) and a ``ToolCallReady``
  the moment each call's arguments are complete, while the model goes on. The result's ``text`` is
  the content before the calls, and its ``finish_reason`` is ``tool_calls`` when it made calls.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import anyio

from agentflow.llm.base import (
    Constraint,
    LLMError,
    LLMRequest,
    LLMRequestError,
    LLMResult,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    ToolCallReady,
    ToolCallRequest,
)

if TYPE_CHECKING:
    from engine.async_engine import AsyncEngine
    from engine.constrained.toolcall import ToolCallStream, ToolStreamEvent
    from engine.engine import EngineStats
    from engine.request import Delta, Request
    from engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
"""Generated-token cap when a request does not set ``max_tokens``."""


class LocalEngine:
    """The ``LLM`` protocol on an in-process ``AsyncEngine``."""

    def __init__(self, model: str | os.PathLike[str] | Any = "demo", **engine_config: Any) -> None:
        """``model`` is a model name (``"demo"``) or checkpoint directory, built on first use with
        ``AsyncEngine.create(model, **engine_config)`` and shut down by :meth:`aclose`; or a
        running ``AsyncEngine``, which is used as is and left open by :meth:`aclose`."""
        self._engine: AsyncEngine | None = None
        self._model: str | None = None
        if isinstance(model, (str, os.PathLike)):
            self._model = os.fspath(model)
            self._owned = True
        else:
            if engine_config:
                raise TypeError("engine options are only accepted with a model name, not an engine instance")
            if not callable(getattr(model, "stream", None)):
                raise TypeError(f"model must be a model name, a path or an AsyncEngine, got {type(model).__name__}")
            self._engine = model
            self._owned = False
        self._config = engine_config
        self._lock = anyio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"LocalEngine({self._model!r})" if self._model is not None else f"LocalEngine({self._engine!r})"

    async def engine(self) -> AsyncEngine:
        """The engine, built on the first call (concurrent first calls share one build)."""
        if self._closed:
            raise LLMError("this LocalEngine is closed")
        if self._engine is not None:
            return self._engine
        async with self._lock:
            if self._engine is None:
                from engine.async_engine import AsyncEngine
                from engine.errors import EngineError

                assert self._model is not None  # set whenever there is no engine instance
                log.info("loading local model %s", self._model)
                try:
                    self._engine = await AsyncEngine.create(self._model, **self._config)
                except (EngineError, TypeError, ValueError) as e:
                    raise LLMError(f"could not load the local model {self._model!r}: {e}") from e
            return self._engine

    async def stream(self, request: LLMRequest) -> AsyncIterator[StreamItem | LLMResult]:
        """Yield the content as a ``TextDelta`` per engine step, tool calls as ``ToolCallDelta`` and
        ``ToolCallReady`` items, then one ``LLMResult``. Closing the iterator early (break,
        cancellation) aborts the engine request."""
        from engine.errors import EngineError

        engine = await self.engine()
        try:
            engine_request = _to_engine_request(request)
            calls = _call_stream(engine_request, engine)
        except EngineError as e:  # SamplingParams and ToolCallSpec validate at construction
            raise _llm_error(e) from e
        # An async generator: closing it aborts the request (AsyncEngine.stream's own finally).
        deltas = cast("AsyncGenerator[Delta, None]", engine.stream(engine_request))
        tokenizer = engine.engine.tokenizer if request.logprobs else None
        content: list[str] = []
        ready: list[ToolCallRequest] = []
        token_ids: list[int] = []
        logprobs: list[float] = []
        sent = 0  # token ids (and logprobs) handed out with a TextDelta so far
        last = None
        try:
            async for delta in deltas:
                last = delta
                if calls is None:
                    token_ids += delta.token_ids
                    logprobs += delta.logprobs or ()
                    if delta.text:
                        content.append(delta.text)
                        ids = token_ids[sent:]
                        yield TextDelta(delta.text, token_ids=ids,
                                        logprobs=logprobs[sent:] if request.logprobs else None,
                                        tokens=_token_texts(tokenizer, ids) if request.logprobs else None,
                                        token_bytes=_token_bytes(tokenizer, ids) if request.logprobs else None)
                        sent = len(token_ids)
                    continue
                events = calls.feed(delta.text) if delta.text else []
                if delta.finished:
                    # a stop string of the caller's may cut a call short: it is answered as cut, as at `length`
                    cut = isinstance(delta.stop_reason, str)
                    events += calls.finish(complete=delta.finish_reason == "stop" and not cut)
                for item in _stream_items(events, content, ready):
                    yield item
        except EngineError as e:
            raise _llm_error(e) from e
        finally:
            await deltas.aclose()  # aborts the request unless it already finished
        if last is None:
            raise LLMError("the engine ended the stream without a final delta")
        # "tool_calls" says every call is whole: not when a stop string of the caller's cut the last one short
        whole = last.finish_reason == "stop" and (calls is None or calls.dropped is None)
        finish_reason = "tool_calls" if ready and whole else last.finish_reason
        plain = calls is None
        yield LLMResult(text="".join(content), finish_reason=finish_reason, tool_calls=ready,
                        prompt_tokens=last.prompt_tokens, completion_tokens=last.completion_tokens,
                        cached_tokens=last.cached_tokens, token_ids=token_ids if plain else None,
                        logprobs=logprobs if plain and request.logprobs else None)

    async def stats(self) -> EngineStats | None:
        """The engine's counters (running, waiting, KV use, cache hits), or None before it is built."""
        return self._engine.stats() if self._engine is not None else None

    async def aclose(self) -> None:
        """Shut down the engine if this object built it; an engine passed in stays open."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None and self._owned:
            await engine.aclose()


def _to_engine_request(request: LLMRequest) -> Request:
    from engine.request import Request
    from engine.sampling_params import SamplingParams

    prompts = [p for p in (request.messages, request.prompt, request.prompt_token_ids) if p is not None]
    if len(prompts) != 1:
        raise LLMRequestError("give exactly one of messages, prompt and prompt_token_ids", param="prompt")
    if request.tool_choice is not None and not request.tools:
        raise LLMRequestError("tool_choice needs tools", param="tool_choice")
    if request.tools and request.constraint is not None:
        raise LLMRequestError("a request with tools cannot also carry an output constraint (the tool-call format is "
                              "the constraint)", param="constraint")
    stop = request.stop
    if request.constraint is not None and (request.constraint.json_schema is not None
                                           or request.constraint.choices is not None):
        stop = None  # the schema or the choice decides where the answer ends: a stop string would cut it short
    options: dict[str, Any] = {
        "max_new_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "min_p": request.min_p, "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty, "repetition_penalty": request.repetition_penalty,
        "seed": request.seed, "stop": tuple(stop) if stop else None,
        "stop_token_ids": tuple(request.stop_token_ids) if request.stop_token_ids else None,
        "ignore_eos": request.ignore_eos, "logprobs": request.logprobs or None,
    }
    params = SamplingParams(**{k: v for k, v in options.items() if v is not None})
    messages = _template_messages(request.messages) if request.messages is not None else None
    constraint = _tool_call_spec(request) if request.tools else _constraint_spec(request.constraint)
    prompt = request.prompt if request.prompt is not None else request.prompt_token_ids
    return Request(prompt=prompt, messages=messages, tools=request.tools or None, params=params,
                   session_id=request.session_id, constraint=constraint)


def _llm_error(error: Exception) -> LLMError:
    """The ``LLMError`` for an engine error: ``LLMRequestError`` when the request is at fault."""
    from engine.errors import InvalidRequestError

    if isinstance(error, InvalidRequestError):
        return LLMRequestError(str(error), param=error.field)
    return LLMError(str(error))


def _token_texts(tokenizer: Tokenizer | None, token_ids: list[int]) -> list[str]:
    """Each token's text decoded alone (special tokens kept); empty strings without a tokenizer."""
    if tokenizer is None:
        return [""] * len(token_ids)
    return [tokenizer.decode([t], skip_special_tokens=False) for t in token_ids]


def _token_bytes(tokenizer: Tokenizer | None, token_ids: list[int]) -> list[bytes] | None:
    return None if tokenizer is None else [tokenizer.token_bytes(t) for t in token_ids]


def _tool_call_spec(request: LLMRequest) -> Any:
    from engine.constrained.spec import ConstraintSpec, ToolCallSpec

    return ConstraintSpec(tool_calls=ToolCallSpec(tools=list(request.tools or ()),
                                                  tool_choice=request.tool_choice or "auto",
                                                  parallel=request.parallel_tool_calls is not False,
                                                  min_calls=request.min_tool_calls or 1,
                                                  call_limit=request.max_tool_calls))


def _call_stream(engine_request: Request, engine: AsyncEngine) -> ToolCallStream | None:
    """The parser that splits a tool-calling request's output into content and calls, or None."""
    spec = getattr(engine_request.constraint, "tool_calls", None)
    if spec is None:
        return None
    from engine.constrained.toolcall import ToolCallStream

    tokenizer = engine.engine.tokenizer
    template = getattr(tokenizer.hf, "chat_template", None) if tokenizer is not None else None
    return ToolCallStream(spec, chat_template=template if isinstance(template, str) else None)


def _stream_items(events: list[ToolStreamEvent], content: list[str],
                  ready: list[ToolCallRequest]) -> list[StreamItem]:
    """The LLM-protocol items for the tool-call parser's events; collects content and finished calls."""
    from engine.constrained.toolcall import ContentDelta, ToolCallArgumentsDelta, ToolCallComplete, ToolCallStart

    items: list[StreamItem] = []
    for event in events:
        if isinstance(event, ContentDelta):
            if event.text:
                content.append(event.text)
                items.append(TextDelta(event.text))
        elif isinstance(event, ToolCallStart):
            items.append(ToolCallDelta(event.index, id=event.id, name=event.name))
        elif isinstance(event, ToolCallArgumentsDelta):
            items.append(ToolCallDelta(event.index, arguments=event.arguments))
        elif isinstance(event, ToolCallComplete):
            call = ToolCallRequest(event.call.id, event.call.name, event.call.arguments)
            ready.append(call)
            items.append(ToolCallReady(event.index, call))
    return items


def _template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped messages as chat templates expect them: ``content`` never None, tool-call
    ``arguments`` as objects rather than JSON strings."""
    out = []
    for message in messages:
        if message.get("content", "") is None:
            message = {**message, "content": ""}
        if message.get("tool_calls"):
            message = {**message, "tool_calls": [_decoded_call(c) for c in message["tool_calls"]]}
        out.append(message)
    return out


def _decoded_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        arguments = json.loads(function["arguments"]) if function["arguments"].strip() else {}
    except json.JSONDecodeError:
        return call  # rendered as the string it is
    return {**call, "function": {**function, "arguments": arguments}}


def _constraint_spec(constraint: Constraint | None) -> Any:
    if constraint is None or (constraint.json_schema is None and constraint.regex is None
                              and constraint.choices is None):
        return None
    try:
        from engine.constrained import ConstraintSpec
    except ImportError:
        log.debug("engine.constrained is not available; generating without the constraint")
        return None
    choices = list(constraint.choices) if constraint.choices is not None else None
    return ConstraintSpec(json_schema=constraint.json_schema, regex=constraint.regex, choices=choices)


__all__ = ["DEFAULT_MAX_TOKENS", "LocalEngine"]
