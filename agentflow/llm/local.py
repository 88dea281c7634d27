"""``LocalEngine``: the ``LLM`` protocol on the in-process engine (``engine.AsyncEngine``).

This is the only module of agentflow that imports ``engine``, and it does so inside functions:
importing it (or constructing a ``LocalEngine``) pulls in neither the engine nor torch. The engine
is built on the first call.

    llm = LocalEngine("demo", max_kv_tokens=16384)
    result = await generate(llm, LLMRequest(messages=[{"role": "user", "content": "Hi"}]))
    await llm.aclose()

How an ``LLMRequest`` maps onto the engine:

- ``messages`` go through the model's chat template, with ``tools`` rendered into it; ``prompt``
  is raw text. Assistant messages whose tool calls carry OpenAI-style string ``arguments`` get
  them decoded to objects first (chat templates serialize them with ``tojson``).
- Sampling: ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS` (256); every other parameter
  that is ``None`` keeps the engine's default (temperature 1.0, top_p 1.0, top_k off, no seed).
- ``session_id`` is passed through: the engine keeps the session's K/V pinned between turns, so
  an agent's next turn prefills only what is new.
- ``constraint`` becomes an ``engine.constrained.ConstraintSpec`` when that module is installed;
  without it the call runs unconstrained (the orchestrator validates outputs either way).
- With ``tools``, the result's ``tool_calls`` are parsed from the text (``<tool_call>`` blocks,
  see :mod:`agentflow.llm.toolcalls`); the result's ``text`` stays the raw text, and its
  ``finish_reason`` is ``tool_calls`` when the model stopped after making calls.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any, cast

import anyio

from agentflow.llm.base import Constraint, LLMError, LLMRequest, LLMResult, TextDelta
from agentflow.llm.toolcalls import parse_tool_calls

if TYPE_CHECKING:
    from engine.async_engine import AsyncEngine
    from engine.engine import EngineStats
    from engine.request import Delta, Request

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

    async def stream(self, request: LLMRequest) -> AsyncIterator[TextDelta | LLMResult]:
        """Yield a ``TextDelta`` per engine step that produced text, then one ``LLMResult``.
        Closing the iterator early (break, cancellation) aborts the engine request."""
        from engine.errors import EngineError

        engine = await self.engine()
        try:
            engine_request = _to_engine_request(request)
        except EngineError as e:  # SamplingParams validates at construction
            raise LLMError(str(e)) from e
        # An async generator: closing it aborts the request (AsyncEngine.stream's own finally).
        deltas = cast("AsyncGenerator[Delta, None]", engine.stream(engine_request))
        pieces: list[str] = []
        last = None
        try:
            async for delta in deltas:
                last = delta
                if delta.text:
                    pieces.append(delta.text)
                    yield TextDelta(delta.text)
        except EngineError as e:
            raise LLMError(str(e)) from e
        finally:
            await deltas.aclose()  # aborts the request unless it already finished
        if last is None:
            raise LLMError("the engine ended the stream without a final delta")
        yield _result("".join(pieces), last.finish_reason, last.prompt_tokens, last.completion_tokens,
                      last.cached_tokens, parse_calls=bool(request.tools))

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

    if (request.messages is None) == (request.prompt is None):
        raise LLMError("give exactly one of messages and prompt")
    options: dict[str, Any] = {
        "max_new_tokens": request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
        "seed": request.seed, "stop": tuple(request.stop) if request.stop else None,
    }
    params = SamplingParams(**{k: v for k, v in options.items() if v is not None})
    messages = _template_messages(request.messages) if request.messages is not None else None
    return Request(prompt=request.prompt, messages=messages, tools=request.tools or None, params=params,
                   session_id=request.session_id, constraint=_constraint_spec(request.constraint))


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


def _result(text: str, finish_reason: str | None, prompt_tokens: int, completion_tokens: int,
            cached_tokens: int, *, parse_calls: bool) -> LLMResult:
    calls = parse_tool_calls(text)[1] if parse_calls else []
    if calls and finish_reason == "stop":
        finish_reason = "tool_calls"
    return LLMResult(text=text, finish_reason=finish_reason, tool_calls=calls, prompt_tokens=prompt_tokens,
                     completion_tokens=completion_tokens, cached_tokens=cached_tokens)


__all__ = ["DEFAULT_MAX_TOKENS", "LocalEngine"]
