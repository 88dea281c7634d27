"""``OpenAICompatible``: the ``LLM`` protocol over any OpenAI-compatible chat completions API
(OpenAI itself, vLLM, SGLang, llama.cpp, Ollama, agentflow's own server), streamed with httpx.

    llm = OpenAICompatible("https://api.openai.com/v1", model="gpt-4o-mini")   # key from OPENAI_API_KEY
    llm = OpenAICompatible("http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")

``base_url`` follows the OpenAI SDK convention: it ends where ``/chat/completions`` is appended
(usually at ``/v1``). Every call is one streamed ``POST {base_url}/chat/completions`` with
``stream_options.include_usage``; the server-sent events are read until ``data: [DONE]``.

How an ``LLMRequest`` maps onto the API:

- ``messages`` are sent as they are; a ``prompt`` becomes one user message.
- ``model`` is the request's, else the constructor's; with neither the field is left out (servers
  that serve one model accept that).
- ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop`` and ``tools`` are sent when set.
  ``top_k`` is not part of OpenAI's API; it is sent when set, for servers that accept it (vLLM,
  SGLang, llama.cpp) — leave it unset for api.openai.com.
- A ``json_schema`` constraint becomes ``response_format`` (type ``json_schema``, name ``output``,
  ``strict``). ``regex`` and ``choices`` constraints have no OpenAI form and are not sent: the
  orchestrator validates the output.
- Streamed tool-call fragments are joined by index and their ``arguments`` parsed as JSON at the
  end; arguments that are not a JSON object raise ``LLMError``. Servers that stray from OpenAI's
  shape are read as meant: a name repeated in every fragment is kept once, a new ``id`` at an index
  already in use (Ollama numbers every call 0) starts a new call, a fragment without ``index``
  continues the last call unless it carries another ``id`` (or a name and no ``id``), and
  ``arguments`` sent as an object are taken as they are. Events with empty ``data`` (keep-alives) are skipped.

Errors are ``LLMError``: ``LLMStatusError`` (with ``status_code``, and ``retry_after`` when the
server sent ``Retry-After``) for HTTP error responses, carrying the server's own message; a chunk
that is not in OpenAI's shape is an ``LLMError`` too. Retrying is the orchestrator's job; nothing is
retried here.
Closing the stream early (break, cancellation) closes the HTTP response, which tells the server
to stop generating.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentflow.api import retry_after_seconds
from agentflow.llm.base import LLMError, LLMRequest, LLMResult, TextDelta, ToolCallRequest, new_call_id

log = logging.getLogger(__name__)


class LLMStatusError(LLMError):
    """The server answered with an HTTP error status; ``status_code`` says which (429 and 5xx are
    usually worth a retry, 4xx otherwise are not) and ``retry_after`` how many seconds the server
    asked to wait first (its ``Retry-After`` header, in seconds or as a date; None without one)."""

    code = "llm_http_error"

    def __init__(self, message: str, *, status_code: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class OpenAICompatible:
    """The ``LLM`` protocol over an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, *, api_key: str | None = None, model: str | None = None,
                 timeout: float = 60, headers: Mapping[str, str] | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        """``api_key`` defaults to ``$OPENAI_API_KEY`` (no ``Authorization`` header when neither is
        set). ``timeout`` bounds connecting and each wait for the next chunk, not the whole call.
        A ``client`` passed in is used as is and left open by :meth:`aclose`."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._headers = {"Accept": "text/event-stream", **(headers or {})}
        if key:
            self._headers.setdefault("Authorization", f"Bearer {key}")
        self._owned = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=httpx.Timeout(timeout))

    def __repr__(self) -> str:
        return f"OpenAICompatible({self.url!r}, model={self.model!r})"

    async def stream(self, request: LLMRequest) -> AsyncIterator[TextDelta | LLMResult]:
        """Yield a ``TextDelta`` per content chunk, then one ``LLMResult``."""
        body = self.request_body(request)
        try:
            async with self._client.stream("POST", self.url, json=body, headers=self._headers) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(response)
                acc = _Accumulator()
                async for data in _sse_data(response):
                    text = acc.add(_parse_chunk(data))
                    if text:
                        yield TextDelta(text)
        except httpx.HTTPError as e:
            raise LLMError(f"request to {self.url} failed: {type(e).__name__}: {e}") from e
        yield acc.result()

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        if (request.messages is None) == (request.prompt is None):
            raise LLMError("give exactly one of messages and prompt")
        messages = (_wire_messages(request.messages) if request.messages is not None
                    else [{"role": "user", "content": request.prompt}])
        body: dict[str, Any] = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}}
        optional = {"model": request.model or self.model, "max_tokens": request.max_tokens,
                    "temperature": request.temperature, "top_p": request.top_p, "top_k": request.top_k,
                    "seed": request.seed, "stop": request.stop or None, "tools": request.tools or None,
                    "tool_choice": request.tool_choice if request.tools else None,
                    "parallel_tool_calls": request.parallel_tool_calls if request.tools else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        constraint = request.constraint
        if constraint is not None and constraint.json_schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "output", "schema": constraint.json_schema, "strict": True}}
        return body

    async def aclose(self) -> None:
        """Close the HTTP client if this object made it."""
        if self._owned:
            await self._client.aclose()


def _wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the OpenAI wire format wants them: tool-call ``arguments`` as JSON strings."""
    out = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls and any(not isinstance(c.get("function", {}).get("arguments"), str) for c in calls):
            calls = [{**c, "function": {**c["function"], "arguments": json.dumps(c["function"].get("arguments") or {},
                                                                                  ensure_ascii=False)}}
                     for c in calls]
            message = {**message, "tool_calls": calls}
        out.append(message)
    return out


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event before ``[DONE]``. The body is read to its end, so
    the connection goes back to the pool."""
    lines: list[str] = []
    done = False
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
        elif not line and lines:  # a blank line ends the event
            data, lines = "\n".join(lines), []
            done = done or data.strip() == "[DONE]"
            if not done and data.strip():  # an event with empty data is a keep-alive
                yield data
    if lines and not done and "\n".join(lines).strip() not in ("", "[DONE]"):
        yield "\n".join(lines)


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as e:
        raise LLMError(f"the server sent an event that is not JSON: {data[:200]!r}") from e
    if not isinstance(chunk, dict):
        raise LLMError(f"the server sent an event that is not a JSON object: {data[:200]!r}")
    if "error" in chunk:  # some servers report failures mid-stream
        raise LLMError(f"the server reported an error mid-stream: {_error_message(chunk) or data[:200]}")
    return chunk


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Accumulator:
    """The stream so far: text, tool calls in the order they began, finish reason, usage."""

    text: list[str] = field(default_factory=list)
    calls: list[_PartialCall] = field(default_factory=list)
    at_index: dict[Any, _PartialCall] = field(default_factory=dict)
    """The call each wire ``index`` currently names."""
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk in; return its content text."""
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        text = ""
        for choice in _list_of_objects(chunk.get("choices"), "choices"):
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise LLMError(f"the server sent a chunk whose delta is not an object: {delta!r:.200}")
            text = delta.get("content") or ""
            if not isinstance(text, str):
                raise LLMError(f"the server sent a chunk whose content is not a string: {text!r:.200}")
            if text:
                self.text.append(text)
            for fragment in _list_of_objects(delta.get("tool_calls"), "tool_calls"):
                self._add_call_fragment(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text

    def _add_call_fragment(self, fragment: dict[str, Any]) -> None:
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise LLMError(f"the server sent a tool call whose function is not an object: {function!r:.200}")
        call_id, name = fragment.get("id") or "", function.get("name") or ""
        call = self._call_for(fragment.get("index"), call_id, name)
        call.id = call_id or call.id
        if name != call.name:  # some servers repeat the whole name in every fragment
            call.name += name
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # sent as an object rather than as JSON text
            arguments = json.dumps(arguments, ensure_ascii=False)
        elif arguments is not None and not isinstance(arguments, str):
            raise LLMError(f"tool call {call.name!r} has arguments that are neither JSON text nor an object: "
                           f"{arguments!r:.200}")
        call.arguments.append(arguments or "")

    def _call_for(self, index: Any, call_id: str, name: str) -> _PartialCall:
        """The call a fragment continues, or a new one it begins."""
        if index is None:  # servers that send whole calls leave the index out
            last = self.calls[-1] if self.calls else None
            if last is None or (call_id and call_id != last.id) or (not call_id and name):
                last = _PartialCall()
                self.calls.append(last)
            return last
        call = self.at_index.get(index)
        if call is None or (call_id and call.id and call_id != call.id):  # a new id at a used index: a new call
            call = self.at_index[index] = _PartialCall()
            self.calls.append(call)
        return call

    def result(self) -> LLMResult:
        if self.finish_reason is None and self.usage is None:
            raise LLMError("the server closed the stream before the response finished")
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details")
        details = details if isinstance(details, dict) else {}
        return LLMResult(text="".join(self.text), finish_reason=self.finish_reason,
                         tool_calls=[_finish_call(c, self.finish_reason) for c in self.calls],
                         prompt_tokens=usage.get("prompt_tokens") or 0,
                         completion_tokens=usage.get("completion_tokens") or 0,
                         cached_tokens=details.get("cached_tokens") or 0)


def _list_of_objects(value: Any, what: str) -> list[dict[str, Any]]:
    """``value`` as a list of JSON objects (None: empty); anything else is a malformed chunk."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise LLMError(f"the server sent a chunk whose {what} is not a list of objects: {value!r:.200}")
    return value


def _finish_call(call: _PartialCall, finish_reason: str | None) -> ToolCallRequest:
    raw = "".join(call.arguments)
    try:
        arguments = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as e:
        if finish_reason == "length":
            raise LLMError(f"tool call {call.name!r} was cut short by max_tokens (finish_reason 'length'): "
                           f"{raw[:200]!r}") from e
        raise LLMError(f"tool call {call.name!r} has arguments that are not valid JSON ({e}): {raw[:200]!r}") from e
    if not isinstance(arguments, dict):
        raise LLMError(f"tool call {call.name!r} has arguments that are not a JSON object: {raw[:200]!r}")
    if not call.name:
        raise LLMError("the server sent a tool call without a function name")
    return ToolCallRequest(id=call.id or new_call_id(), name=call.name, arguments=arguments)


def _status_error(response: httpx.Response) -> LLMStatusError:
    try:
        message = _error_message(response.json())
    except (json.JSONDecodeError, UnicodeDecodeError):
        message = None
    if not message:
        message = response.text.strip()[:500] or response.reason_phrase
    return LLMStatusError(f"HTTP {response.status_code} from {response.request.url}: {message}",
                          status_code=response.status_code,
                          retry_after=retry_after_seconds(response.headers.get("retry-after")))


def _error_message(body: Any) -> str | None:
    """The message of ``{"error": {"message": ...}}``, ``{"error": "..."}`` or ``{"detail": "..."}``."""
    if not isinstance(body, dict):
        return None
    error = body.get("error", body.get("detail"))
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) else None


__all__ = ["LLMStatusError", "OpenAICompatible"]
