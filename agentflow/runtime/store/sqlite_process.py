"""The SQLite store's writer process, parent side (the child is ``sqlite_child``).

Why a process: a writer *thread* shares the GIL with the event loop. The loop and the writer then
take turns (a thread woken while the loop runs Python only queues for the GIL), so a chain of durable
nodes pays the loop's work, the writer's work and two thread wake-ups one after the other. A child
process has its own interpreter: it commits node N's checkpoint while the loop prepares node N + 1,
and the loop learns of the commit from a pipe it watches itself (``add_reader``), with no thread in
between. Ops are the plain tuples of ``sqlite_ops``; the guarantees are those of ``base``.

Sending: an op with a waiter goes to the child at once (one non-blocking write); an unawaited one
(``append_nowait``) lingers in a local buffer for up to ``LINGER_S`` to ride along with the next,
and a small timer thread writes it out if nothing comes. If the pipe is full (a large batch), a
sender thread writes the rest; later sends queue behind it, so the order holds.

Receiving: on an asyncio loop, the loop itself reads the reply pipe; otherwise (trio, or a sync
``close_sync``) a reader thread does and hands replies to their loops. If the child dies, every
waiting op fails with ``StoreError`` and the store refuses further writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from agentflow.runtime.errors import StoreClosedError, StoreError
from agentflow.runtime.store.base import FINISHED, _Deferred
from agentflow.runtime.store.sqlite_ops import Failure, Op
from agentflow.runtime.store.sqlite_writer import LINGER_S, Waiter, op_error

log = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("sqlite_child.py")
HEADER = 4
PIPE_BYTES = 1 << 20
"""Pipe capacity asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default)."""


class ProcessWriter:
    """Owns the writer process and the two pipes to it; the same interface as ``sqlite_writer.Writer``."""

    def __init__(self, path: Path, synchronous: str, retention_days: float | None, deferred: _Deferred, *,
                 spin_us: float = 0.0) -> None:
        self._path = path
        self._deferred = deferred
        args = [sys.executable, "-S", str(CHILD), str(path), synchronous,
                "" if retention_days is None else repr(retention_days), ",".join(sorted(FINISHED)), repr(spin_us)]
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                          close_fds=True, start_new_session=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot start the run store's writer process: {exc}") from exc
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out = self._proc.stdin.fileno()
        self._in = self._proc.stdout.fileno()
        for fd in (self._out, self._in):
            os.set_blocking(fd, False)
            with contextlib.suppress(ImportError, AttributeError, OSError):  # not Linux, or over the cap
                import fcntl

                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._lock = threading.Lock()  # guards everything below
        self._next_id = 1
        self._waiters: dict[int, Waiter | None] = {}  # ops sent or buffered, not yet answered
        self._linger: list[tuple[int, str, tuple[Any, ...]]] = []  # unawaited ops not yet sent
        self._linger_since = 0.0
        self._backlog = bytearray()  # bytes the pipe did not take; the sender thread writes them
        self._sender: threading.Thread | None = None
        self._inbuf = bytearray()
        self._loops: dict[asyncio.AbstractEventLoop, None] = {}  # loops that read the reply pipe
        self._reader: threading.Thread | None = None
        self._closed = False
        self._ended = False  # the reply pipe reached its end: the child exited
        self._wake_timer = threading.Condition(self._lock)
        self._timer = threading.Thread(target=self._linger_timer, name=f"agentflow-store-linger:{path.name}",
                                       daemon=True)
        self._timer.start()

    # -- the interface of Writer ----------------------------------------------------------------------

    def submit_op(self, op: Op, waiter: Waiter | None) -> None:
        """Queue one op; with a waiter, send it (and everything lingering before it) now."""
        with self._lock:
            if self._closed:
                raise StoreClosedError("the run store is closed")
            op_id = self._next_id
            self._next_id += 1
            self._waiters[op_id] = waiter
            if not self._linger:
                self._linger_since = time.monotonic()
            self._linger.append((op_id, op[0], op[1]))
            if waiter is not None:
                self._send_locked()
        if waiter is not None:
            self._watch(waiter)

    def urge(self) -> None:
        """Send what lingers now (somebody waits)."""
        if self._linger:
            with self._lock:
                self._send_locked()

    @property
    def idle(self) -> bool:
        return not self._waiters

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop taking ops; the child commits what it was sent, answers, and exits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._linger.append((0, "stop", ()))
            self._send_locked()
            self._wake_timer.notify()

    def join(self) -> None:
        """Wait for the child to exit, delivering its last replies (from any thread but a loop's own)."""
        sender = self._sender
        if sender is not None:
            sender.join()
        with self._lock:
            if not self._backlog:
                self._close_out()
        while not self._ended:
            readable, _, _ = select.select([self._in], [], [], 0.5)
            if readable:
                self._receive()
        self._proc.wait()
        self._timer.join()

    def release(self) -> None:
        """After ``join``: stop every loop watching the reply pipe, and close it."""
        self._unwatch()
        if self._ended and self._proc.stdout is not None:
            self._proc.stdout.close()

    def _unwatch(self) -> None:
        """No loop may keep watching the reply pipe once it ended (it would stay readable)."""
        running = _running_loop()
        for loop in list(self._loops):
            if loop is running:
                loop.remove_reader(self._in)
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(loop.remove_reader, self._in)
        self._loops.clear()

    # -- sending -------------------------------------------------------------------------------------

    def _send_locked(self) -> None:
        if not self._linger:
            return
        payload = marshal.dumps(self._linger)
        self._linger = []
        frame = len(payload).to_bytes(HEADER, "little") + payload
        if self._backlog:  # the sender thread is writing: queue behind it
            self._backlog += frame
            return
        try:
            written = os.write(self._out, frame)
        except BlockingIOError:
            written = 0
        except (BrokenPipeError, OSError) as exc:
            self._child_gone(f"cannot send to the writer process: {exc}")
            return
        if written < len(frame):
            self._backlog += frame[written:]
            self._sender = threading.Thread(target=self._send_backlog, name="agentflow-store-send", daemon=True)
            self._sender.start()

    def _send_backlog(self) -> None:
        while True:
            with self._lock:
                if not self._backlog:
                    self._sender = None
                    if self._closed:
                        self._close_out()
                    return
                try:
                    written = os.write(self._out, self._backlog)
                except BlockingIOError:
                    written = 0
                except OSError as exc:
                    self._backlog.clear()
                    self._child_gone(f"cannot send to the writer process: {exc}")
                    continue
                del self._backlog[:written]
                if written:
                    continue
            select.select([], [self._out], [], 0.5)

    def _linger_timer(self) -> None:
        """Send unawaited ops that waited ``LINGER_S`` for company (a poll: submit never wakes this)."""
        with self._lock:
            while not self._closed:
                now = time.monotonic()
                if self._linger and now - self._linger_since >= LINGER_S:
                    self._send_locked()
                self._wake_timer.wait(LINGER_S)

    def _close_out(self) -> None:
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()

    # -- receiving -----------------------------------------------------------------------------------

    def _watch(self, waiter: Waiter) -> None:
        """Make sure somebody reads the reply pipe for this waiter: its asyncio loop, else the reader thread."""
        loop = waiter.loop
        if loop is not None:
            if loop not in self._loops:
                self._loops[loop] = None
                loop.add_reader(self._in, self._receive)
        elif self._reader is None:
            with self._lock:
                if self._reader is None:
                    self._reader = threading.Thread(target=self._read_forever, name="agentflow-store-reader",
                                                    daemon=True)
                    self._reader.start()

    def _read_forever(self) -> None:
        while not self._ended:
            readable, _, _ = select.select([self._in], [], [], 0.5)
            if readable:
                self._receive()

    def _receive(self) -> None:
        """Read what the reply pipe holds and answer the ops it names (on any thread, or a loop's callback)."""
        replies: list[tuple[Waiter | None, Any, Failure | None]] = []
        with self._lock:
            if self._ended:
                return
            while True:
                try:
                    chunk = os.read(self._in, 1 << 20)
                except BlockingIOError:
                    break
                except OSError:
                    chunk = b""
                if not chunk:
                    self._ended = True
                    break
                self._inbuf += chunk
            while len(self._inbuf) >= HEADER:
                size = int.from_bytes(self._inbuf[:HEADER], "little")
                if len(self._inbuf) < HEADER + size:
                    break
                entries = marshal.loads(bytes(self._inbuf[HEADER:HEADER + size]))
                del self._inbuf[:HEADER + size]
                for op_id, result, failure in entries:
                    if op_id == 0:
                        if result is not None:  # a log record from the child
                            log.log(result[0], "%s", result[1])
                        continue
                    replies.append((self._waiters.pop(op_id, None), result, failure))
            lost = self._ended and self._waiters
            if lost:
                orphans, self._waiters = list(self._waiters.values()), {}
        for waiter, result, failure in replies:
            error = None if failure is None else op_error(failure, self._path)
            if waiter is not None:
                waiter.deliver(result, error)
            elif error is not None:
                log.error("run store: append_nowait failed (raised at the next awaited call): %s", error)
                self._deferred.add(error)
        if lost:
            self._fail(orphans, "the run store's writer process exited")
        if self._ended:
            self._unwatch()  # the pipe is closed by release(), after join(), which may be reading it now

    def _child_gone(self, why: str) -> None:
        """The child can't be reached (called with the lock held): refuse further ops."""
        self._closed = True
        log.error("run store %s: %s", self._path, why)

    def _fail(self, waiters: list[Waiter | None], why: str) -> None:
        code = self._proc.poll()
        error = StoreError(f"{self._path}: {why}" + (f" (exit code {code})" if code is not None else ""))
        with self._lock:
            self._closed = True
        for waiter in waiters:
            if waiter is not None:
                waiter.deliver(None, error)
            else:
                self._deferred.add(error)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
