"""``AsyncEngine``: the engine's step loop on a background thread, streamed to async callers.

The event loop never waits on the engine. ``Engine.prepare`` (tokenize, validate, compile a
constraint) runs on worker threads, in two lanes: requests without a ``ConstraintSpec`` in one
thread (with dozens the event loop would queue for the GIL), requests with one in a small pool
(``compile_threads``). Compiling a big JSON schema can take a second (llguidance releases the GIL
meanwhile): it holds neither the engine thread, which keeps decoding the batch, nor the other
submits, and its errors still reach the submitter from ``stream`` / ``generate``. Compiled grammars
are cached (``engine/constrained/compiler.py``): a repeated schema costs a copy, not a compile.

Requests and aborts go to the engine thread through a command queue; after each step the engine
thread hands every delta for one event loop to that loop in a single non-blocking
``call_soon_threadsafe`` (asyncio) or ``run_sync_soon`` (trio), where it lands in the request's
stream. Works under anyio with either backend.

    engine = AsyncEngine("demo")
    async for delta in engine.stream(Request(prompt="Hi")):
        print(delta.text, end="")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio

from engine.constrained.spec import ConstraintSpec
from engine.engine import Engine, EngineStats
from engine.errors import EngineClosedError, EngineError, InvalidRequestError, RequestNotFoundError
from engine.request import Delta, Output, Request
from engine.sequence import Sequence

log = logging.getLogger(__name__)

T = TypeVar("T")
Schedule = Callable[[Callable[[], None]], object]
IDLE_POLL_S = 0.005
"""How long the loop sleeps when it has queued work it cannot admit yet (memory full of pins)."""
COMPILE_THREADS = 4
"""Worker threads preparing requests that carry a ``ConstraintSpec`` (compiling releases the GIL)."""


def _loop_scheduler() -> Schedule:
    """A thread-safe, non-blocking way to run a callback on the current event loop."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    try:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    except (ImportError, RuntimeError):
        raise RuntimeError("AsyncEngine must be used from an asyncio or trio event loop") from None


class _Stream:
    """One request's deltas, on the caller's event loop."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._items: deque[Delta | BaseException] = deque()
        self._event = anyio.Event()

    def push(self, item: Delta | BaseException) -> None:  # runs on the event loop
        self._items.append(item)
        self._event.set()

    async def next_batch(self) -> list[Delta | BaseException]:
        while not self._items:
            await self._event.wait()
            self._event = anyio.Event()
        items = list(self._items)
        self._items.clear()
        return items


class AsyncEngine:
    def __init__(self, model: str = "demo", *, engine: Engine | None = None, compile_threads: int = COMPILE_THREADS,
                 **options: Any) -> None:
        """Same arguments as ``Engine``; or wrap an existing ``engine`` (its loop becomes ours).
        ``compile_threads``: how many constrained requests may be prepared (compiled) at once."""
        if not isinstance(compile_threads, int) or isinstance(compile_threads, bool) or compile_threads < 1:
            raise ValueError(f"compile_threads must be a positive integer, got {compile_threads!r}")
        self.engine = engine if engine is not None else Engine(model, **options)
        self._commands: deque[tuple[str, Any, Any]] = deque()
        self._wake = threading.Event()
        self._streams: dict[str, _Stream] = {}  # owned by the engine thread
        self._closing = False
        self._error: BaseException | None = None
        self._stats = self.engine.stats()
        # One worker thread tokenizes: with dozens of them the event loop would queue for the GIL.
        self._tokenize_lane = anyio.CapacityLimiter(1)
        # Constrained requests compile beside it, so a slow compile queues no one but its own lane.
        self._compile_lane = anyio.CapacityLimiter(compile_threads)
        self._thread = threading.Thread(target=self._run, name="agentflow-engine", daemon=True)
        self._thread.start()

    @classmethod
    async def create(cls, model: str = "demo", *, compile_threads: int = COMPILE_THREADS,
                     **options: Any) -> AsyncEngine:
        """Build the engine (load weights, tokenizer) in a worker thread, so the event loop keeps
        running meanwhile. (Not perfectly: parsing tokenizer.json in Rust holds the GIL, ~0.2 s
        for Qwen's 5 MB file.)"""
        engine = await anyio.to_thread.run_sync(lambda: Engine(model, **options))
        return cls(engine=engine, compile_threads=compile_threads)

    # ---- async API ------------------------------------------------------------------------

    async def stream(self, request: Request) -> AsyncIterator[Delta]:
        """Yield the request's deltas as they are generated; the last has ``finish_reason`` set.
        Leaving the loop early (break, cancellation) aborts the request. A request whose output
        constraint failed (``finish_reason="error"``) raises ``InvalidRequestError`` instead of its last delta."""
        self._check_open()
        lane = self._compile_lane if isinstance(request.constraint, ConstraintSpec) else self._tokenize_lane
        seq = await anyio.to_thread.run_sync(self.engine.prepare, request, limiter=lane)
        stream = _Stream(_loop_scheduler())
        self._submit("add", seq, stream)
        done = False
        try:
            while not done:
                for item in await stream.next_batch():
                    if isinstance(item, BaseException):
                        done = True
                        raise item
                    done = item.finished
                    if item.finish_reason == "error":
                        raise InvalidRequestError(item.error or "the output constraint failed", field="constraint")
                    yield item
                    if done:
                        return
        finally:
            if not done:
                self._submit("abort", seq.request_id, None)

    async def generate(self, request: Request) -> Output:
        """Run one request to the end."""
        tokens: list[int] = []
        text: list[str] = []
        logprobs: list[float] = []
        last: Delta | None = None
        async for delta in self.stream(request):
            tokens.extend(delta.token_ids)
            text.append(delta.text)
            logprobs.extend(delta.logprobs or [])
            last = delta
        assert last is not None
        output = Output(last.request_id, tokens, "".join(text), last.finish_reason, last.stop_reason,
                        last.prompt_tokens, last.cached_tokens, logprobs if request.params.logprobs else None)
        return self.engine.structured(output, request.constraint)

    async def abort(self, request_id: str) -> None:
        """Stop a request; its stream ends with a delta whose finish_reason is ``abort``."""
        self._submit("abort", request_id, None)

    async def score(self, token_ids: list[int]) -> Any:
        """``Engine.score`` run on the engine thread."""
        return await self._call(self.engine.score, list(token_ids))

    def open_session(self, session_id: str, ttl: float | None = None) -> None:
        self._submit("call", lambda: self.engine.open_session(session_id, ttl), None)

    def close_session(self, session_id: str) -> None:
        self._submit("call", lambda: self.engine.close_session(session_id), None)

    def stats(self) -> EngineStats:
        """Counters as of the last step (never blocks)."""
        return self._stats

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        await anyio.to_thread.run_sync(self._thread.join)

    def shutdown(self) -> None:
        """Synchronous close, for code outside an event loop."""
        self._closing = True
        self._wake.set()
        self._thread.join()

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ---- plumbing -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise EngineClosedError(f"the engine loop stopped after an internal error: {self._error!r}")
        if self._closing:
            raise EngineClosedError("the engine is closed")

    def _submit(self, kind: str, payload: Any, extra: Any) -> None:
        self._commands.append((kind, payload, extra))
        self._wake.set()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        future: Future[T] = Future()
        self._submit("call", lambda: future.set_result(fn(*args)), future)
        return await anyio.to_thread.run_sync(future.result)

    def _run(self) -> None:
        try:
            while not self._closing:
                self._drain_commands()
                if not self.engine.has_work():
                    self._wake.wait()
                    self._wake.clear()
                    continue
                try:
                    deltas = self.engine.step()
                except Exception as e:  # fail what was in flight, keep serving
                    self._recover(e)
                    continue
                self._stats = self.engine.stats()
                if deltas:
                    self._deliver(deltas)
                else:  # queued work that cannot be admitted yet: do not spin
                    self._wake.wait(IDLE_POLL_S)
                    self._wake.clear()
        except BaseException as e:
            log.exception("engine loop failed")
            self._error = e
        finally:
            self._fail_all()

    def _recover(self, error: Exception) -> None:
        log.exception("engine step failed; ending the %d request(s) in flight with an error", len(self._streams))
        failure = EngineError(f"the engine step failed ({type(error).__name__}: {error}); this request was ended")
        failure.__cause__ = error
        self.engine.recover()
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            self._send(stream, [failure])
        self._stats = self.engine.stats()

    def _drain_commands(self) -> None:
        while self._commands:
            kind, payload, extra = self._commands.popleft()
            if kind == "add":
                self._add(payload, extra)
            elif kind == "abort":
                try:
                    delta = self.engine.abort(payload)
                except RequestNotFoundError:
                    continue  # already finished
                self._deliver([delta])
            elif kind == "call":
                try:
                    payload()
                except BaseException as e:
                    if extra is not None:
                        extra.set_exception(e)
                    else:
                        log.exception("engine command failed")
        self._stats = self.engine.stats()

    def _add(self, seq: Sequence, stream: _Stream) -> None:
        try:
            self.engine.add_request(seq)
        except Exception as e:
            self._send(stream, [e])
            return
        self._streams[seq.request_id] = stream

    def _deliver(self, deltas: list[Delta]) -> None:
        by_stream: dict[int, tuple[_Stream, list[Delta | BaseException]]] = {}
        for delta in deltas:
            stream = self._streams.get(delta.request_id)
            if stream is None:
                continue
            if delta.finished:
                del self._streams[delta.request_id]
            by_stream.setdefault(id(stream), (stream, []))[1].append(delta)
        by_loop: dict[Schedule, list[tuple[_Stream, list[Delta | BaseException]]]] = {}
        for stream, items in by_stream.values():
            by_loop.setdefault(stream.schedule, []).append((stream, items))
        for schedule, batch in by_loop.items():
            self._schedule(schedule, batch)

    def _send(self, stream: _Stream, items: list[Delta | BaseException]) -> None:
        self._schedule(stream.schedule, [(stream, items)])

    def _schedule(self, schedule: Schedule, batch: list[tuple[_Stream, list[Delta | BaseException]]]) -> None:
        def land() -> None:
            for stream, items in batch:
                for item in items:
                    stream.push(item)

        try:
            schedule(land)
        except RuntimeError:  # that event loop is closed: its requests have no reader
            for _stream, items in batch:
                for item in items:
                    if isinstance(item, Delta) and not item.finished:
                        self._commands.append(("abort", item.request_id, None))

    def _fail_all(self) -> None:
        error = EngineClosedError("the engine was closed" if self._error is None
                                  else f"the engine loop stopped after an internal error: {self._error!r}")
        for request_id, stream in list(self._streams.items()):
            with contextlib.suppress(Exception):  # state may be broken after an internal error
                self.engine.abort(request_id)
            self._send(stream, [error])
        self._streams.clear()
        while self._commands:
            kind, _payload, extra = self._commands.popleft()
            if kind == "add":
                self._send(extra, [error])
            elif kind == "call" and extra is not None:
                extra.set_exception(error)
