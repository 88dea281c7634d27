"""What the OpenAI-compatible API and ``/generate`` share: admission, the model stream, metrics,
Server-Sent Events and client disconnects.

A generation request goes through :class:`Generation`:

- :meth:`Generation.open` takes an admission slot (503 + ``Retry-After`` at the limit), starts the
  model's stream and waits for its first item, so that a request the engine refuses (a bad
  parameter, a schema that does not compile, a prompt longer than the context) is answered with a
  plain 400 instead of a stream that fails;
- iterating it yields the model's items, timing the first piece of output (``ttft``) and the gaps
  between pieces (``inter_token``);
- :meth:`Generation.aclose` closes the model stream (which aborts the engine request if it is still
  running) and gives the slot back. It runs whatever ends the request: the end of the stream, an
  error, or the client going away.

:class:`EventStream` is the response of streaming requests: ``data: {json}`` events, watched for the
client's disconnect, which stops the stream at once and closes the generation. Non-streaming
requests run under :func:`until_disconnect`, with the same effect.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from agentflow.llm.base import (
    LLM,
    LLMError,
    LLMRequest,
    LLMRequestError,
    LLMResult,
    StreamItem,
    TextDelta,
    ToolCallDelta,
)
from agentflow.server.errors import ApiError
from agentflow.server.state import ServerState

log = logging.getLogger(__name__)

Api = Literal["chat", "completions", "generate"]
T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
CLIENT_CLOSED = 499
"""The status recorded for a request whose client left before the answer (nginx's convention)."""
_INT64 = 2.0**63
_UNAVAILABLE = frozenset({"engine_closed", "model_load_error", "unsupported_architecture"})


def sse(payload: Any) -> bytes:
    """One Server-Sent Event: ``data: {json}`` and a blank line."""
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def served_llm(state: ServerState, model: str | None) -> LLM:
    """The local model if ``model`` names it (None: whatever is served); 404 ``model_not_found`` otherwise."""
    if state.llm is None or (model is not None and model != state.model_name):
        served = f"; this server serves {state.model_name!r}" if state.llm is not None else \
            "; this server has no local model"
        raise ApiError(404, f"the model {model!r} does not exist{served}", code="model_not_found", param="model")
    return state.llm


def rename_param(param: str | None, names: Mapping[str, str]) -> str | None:
    """The API's name for an engine field: the longest prefix of ``param`` in ``names`` replaced."""
    if param is None:
        return None
    for prefix in sorted(names, key=len, reverse=True):
        if param == prefix or param.startswith((prefix + ".", prefix + "[")):
            return names[prefix] + param[len(prefix):]
    return param


def api_error(error: LLMError, names: Mapping[str, str]) -> ApiError:
    """The HTTP error for a model error: 400 naming the parameter when the request is at fault, 503
    when the model cannot serve (closed, failed to load, remote backend down), 500 otherwise."""
    if isinstance(error, LLMRequestError):
        return ApiError(400, str(error), code="invalid_request", param=rename_param(error.param, names))
    cause = getattr(error.__cause__, "code", None)
    if cause == "constraint_violation":
        log.error("generation failed: %s", error)
        return ApiError(500, "the model's output broke its constraint (a server bug); see the server log",
                        code="internal_error")
    log.warning("generation failed: %s", error)
    status = getattr(error, "status_code", None)
    if cause in _UNAVAILABLE or status is None or status >= 500:
        return ApiError(503, f"the model is unavailable: {error}", code="model_unavailable")
    return ApiError(502, f"the model backend refused the request: {error}", code="upstream_error")


def clean(value: Any) -> Any:
    """``value`` (JSON data) with every lone surrogate in its strings replaced by U+FFFD (JSON may
    carry them, ``"\\ud800"``; UTF-8, the tokenizer and the response encoder cannot), and numbers with
    no fraction made integers (JSON Schema counts ``3.0`` as the integer 3; strict models would not),
    within 64 bits (what the engine's JSON Schema compiler takes)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_INT64 <= value < _INT64 else value
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, tuple):
        return tuple(clean(v) for v in value)
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def cleaned(data: Any) -> Any:
    """:func:`clean` for a ``model_validator(mode="before")``: a body nested too deeply is a
    validation error (422), not a crash."""
    try:
        return clean(data)
    except RecursionError:
        raise ValueError("the request is nested too deeply") from None


class Generation:
    """One admitted model call; see the module docstring. Use ``async for`` after :meth:`open`, and
    always :meth:`aclose`."""

    def __init__(self, state: ServerState, api: Api, llm: LLM, request: LLMRequest, *,
                 param_names: Mapping[str, str], started: float | None = None) -> None:
        self.state, self.api, self.llm, self.request = state, api, llm, request
        self.param_names = param_names
        self.started = time.perf_counter() if started is None else started
        """When the HTTP request arrived (``time.perf_counter``): time to first token counts from here."""
        self._stream: AsyncIterator[StreamItem | LLMResult] | None = None
        self._first: StreamItem | LLMResult | None = None
        self._admitted = False
        self._done = False
        self._last_output: float | None = None

    async def open(self) -> None:
        """Take a slot (503 at the limit), start the stream and wait for its first item. Raises the
        request's ``ApiError`` (and has closed itself) when the model refuses it."""
        self._apply_token_policy()
        self.state.admission.acquire()
        self._admitted = True
        try:
            self._stream = self.llm.stream(self.request)
            self._first = await self._fetch()
        except RecursionError:  # a schema nested past what the engine's (recursive) checks handle
            await self.aclose()
            raise ApiError(400, "the request is nested too deeply", code="invalid_request") from None
        except BaseException:
            await self.aclose()
            raise

    def _apply_token_policy(self) -> None:
        """The server's ``default_max_tokens`` for requests that set none; ``max_tokens_limit`` refused above."""
        config = self.state.config
        limit = config.max_tokens_limit
        if self.request.max_tokens is None:  # the server's own default never breaks the server's own limit
            self.request.max_tokens = min(config.default_max_tokens, limit or config.default_max_tokens)
        if limit is not None and self.request.max_tokens > limit:
            param = rename_param("max_new_tokens", self.param_names) or "max_tokens"
            raise ApiError(400, f"{param}: at most {limit} tokens may be generated per request on this server, "
                           f"asked for {self.request.max_tokens}", code="max_tokens_too_large", param=param)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> StreamItem | LLMResult:
        if self._first is not None:
            item, self._first = self._first, None
            return item
        if self._done:
            raise StopAsyncIteration
        return await self._fetch()

    async def _fetch(self) -> StreamItem | LLMResult:
        assert self._stream is not None, "open() first"
        try:
            item = await self._stream.__anext__()
        except StopAsyncIteration:
            self._done = True
            raise ApiError(500, "the model ended its stream without a result", code="internal_error") from None
        except LLMError as e:
            self._done = True
            raise api_error(e, self.param_names) from e
        if isinstance(item, LLMResult):
            self._done = True
        elif isinstance(item, (TextDelta, ToolCallDelta)):
            self._observe()
        return item

    def _observe(self) -> None:
        at = time.perf_counter()
        metrics = self.state.metrics
        if self._last_output is None:
            metrics.ttft.labels(self.api).observe(at - self.started)
        else:
            metrics.inter_token.labels(self.api).observe(at - self._last_output)
        self._last_output = at

    async def aclose(self) -> None:
        """Close the model stream (aborting the engine request if it runs) and release the slot;
        idempotent, and done even when the caller is being cancelled."""
        with anyio.CancelScope(shield=True):
            stream, self._stream = self._stream, None
            self._done = True
            self._first = None
            try:
                close = getattr(stream, "aclose", None)
                if close is not None:
                    await close()
            except Exception:
                log.exception("closing a model stream failed")
            finally:
                if self._admitted:
                    self._admitted = False
                    self.state.admission.release()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    """Wait for the client to go away, then cancel ``scope``. Runs once the request body is read:
    the only message left to receive is ``http.disconnect``."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def watching(receive: Receive, work: Callable[[], Awaitable[T]]) -> T | None:
    """Run ``work()``, cancelled if the client disconnects meanwhile: its value, or None when the
    client left. Its exceptions propagate as they are. Only once the request body has been read."""
    result: list[T] = []
    errors: list[Exception] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(_cancel_on_disconnect, receive, tg.cancel_scope)
        try:
            result.append(await work())
        except Exception as e:  # raised after the task group, not wrapped in an ExceptionGroup
            errors.append(e)
        tg.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return result[0] if result else None


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T | None:
    """:func:`watching` for a handler: ``work()``'s value, or None when the client left."""
    return await watching(request.receive, work)


def client_gone() -> Response:
    """The response to a request whose client left (nobody reads it; the metrics count it)."""
    return Response(status_code=CLIENT_CLOSED)


class EventStream(Response):
    """``text/event-stream`` from an async iterator of ready-made events. On the client's
    disconnect the iteration is cancelled at once; whatever ends it, the iterator is closed and
    ``on_close`` runs (shielded from cancellation)."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], *, on_close: Callable[[], Awaitable[None]],
                 headers: Mapping[str, str] | None = None) -> None:
        self.events, self.on_close = events, on_close
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> bool:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for event in self.events:
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True

        try:
            await watching(receive, stream)
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(self.events, "aclose", None)
                try:
                    if close is not None:
                        await close()
                finally:
                    await self.on_close()


def finish_reason(result: LLMResult | None) -> str:
    """OpenAI's finish reasons: ``stop``, ``length`` or ``tool_calls``."""
    reason = result.finish_reason if result is not None else None
    return reason if reason in ("stop", "length", "tool_calls") else "stop"


def usage(result: LLMResult | None) -> dict[str, Any]:
    """OpenAI's ``usage`` object."""
    prompt = result.prompt_tokens if result is not None else 0
    completion = result.completion_tokens if result is not None else 0
    cached = result.cached_tokens if result is not None else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


__all__ = [
    "CLIENT_CLOSED",
    "DONE",
    "Api",
    "EventStream",
    "Generation",
    "api_error",
    "clean",
    "cleaned",
    "client_gone",
    "finish_reason",
    "new_id",
    "now",
    "rename_param",
    "served_llm",
    "sse",
    "until_disconnect",
    "usage",
    "watching",
]
