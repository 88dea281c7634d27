"""``FakeOpenAIServer``: a stand-in for an OpenAI-compatible API (no real remote API is reachable
from tests), built on the stdlib ``ThreadingHTTPServer`` on 127.0.0.1 and answering with server-sent
events in OpenAI's exact chunk shape. Shared by the backend tests and the agent-node tests."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Reply = Callable[["_Handler"], None]


@dataclass
class FakeOpenAIServer:
    """A fake OpenAI-compatible ``/v1/chat/completions`` on an ephemeral local port. ``reply``
    decides what the next request gets; every request is recorded in ``received``."""

    reply: Reply = field(default_factory=lambda: sse_reply(text_chunks(["Hello"])))
    received: list[Received] = field(default_factory=list)
    disconnected: threading.Event = field(default_factory=threading.Event)
    """Set when a streaming reply found the client gone."""

    def __post_init__(self) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="fake-openai", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked bodies: what real servers speak

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.fake.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                           json.loads(raw)))
        if self.path != "/v1/chat/completions":
            return json_reply(404, {"error": {"message": f"no route {self.path}"}})(self)
        self.fake.reply(self)

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fake server: " + format, *args)


def sse_reply(chunks: list[dict[str, Any]], *, done: bool = True, delay: float = 0.0) -> Reply:
    """A 200 ``text/event-stream``: one ``data:`` event per chunk (``delay`` seconds apart), then ``data: [DONE]``."""
    return raw_sse_reply([f"data: {json.dumps(chunk)}\n\n" for chunk in chunks], delay=delay,
                         end="data: [DONE]\n\n" if done else "")


def raw_sse_reply(events: list[str], *, delay: float = 0.0, end: str = "") -> Reply:
    """A 200 ``text/event-stream`` whose body is ``events`` as they are (for off-spec streams), then ``end``."""

    def reply(h: _Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for event in events:
            h.write_chunk(event.encode())
            time.sleep(delay)
        if end:
            h.write_chunk(end.encode())
        h.write_chunk(b"")

    return reply


def endless_reply(h: _Handler) -> None:
    """Content chunks every 10 ms until the client hangs up (then ``disconnected`` is set)."""
    h.send_response(200)
    h.send_header("Content-Type", "text/event-stream")
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            h.write_chunk(f"data: {json.dumps(chunk({'content': 'tick '}))}\n\n".encode())
            time.sleep(0.01)
    except (BrokenPipeError, ConnectionResetError):
        h.fake.disconnected.set()
        h.close_connection = True


def json_reply(status: int, body: dict[str, Any] | str, headers: dict[str, str] | None = None) -> Reply:
    def reply(h: _Handler) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-fake", "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            "usage": None}


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-fake1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-fake", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def text_chunks(pieces: list[str], finish_reason: str = "stop") -> list[dict[str, Any]]:
    return ([chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
            + [chunk({}, finish_reason), usage_chunk(12, len(pieces), cached=8)])


def tool_call_chunks() -> list[dict[str, Any]]:
    """Two calls, streamed as OpenAI does: id and name first, then argument fragments."""

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    return [chunk({"role": "assistant", "content": None}),
            call(0, id="call_abc", type="function", function={"name": "get_weather", "arguments": ""}),
            call(0, function={"arguments": '{"ci'}), call(0, function={"arguments": 'ty": "Par'}),
            call(0, function={"arguments": 'is"}'}),
            call(1, id="call_def", type="function", function={"name": "get_time", "arguments": ""}),
            call(1, function={"arguments": '{"tz": "Europe/Paris", "fmt": {"h24": true}}'}),
            chunk({}, "tool_calls"), usage_chunk(40, 30)]
