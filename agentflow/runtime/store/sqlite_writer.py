"""The SQLite store's writer thread, and the waiting side that both writers share.

``Writer``: one thread owns the write connection and group-commits what the event loop queues (see
``base`` for the guarantees); ``writer="thread"`` in ``SQLiteStore``. The default writer is a child
process (``sqlite_process``). Both take the ops of ``sqlite_ops`` and answer them through ``Waiter``s;
``op_error`` turns an op's failure into the store's exception."""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from agentflow.runtime.errors import (
    DuplicateEventError,
    RunExistsError,
    RunNotFoundError,
    StoreClosedError,
    StoreError,
)
from agentflow.runtime.store.base import FINISHED, PendingWrite, _Deferred
from agentflow.runtime.store.sqlite_ops import (
    MAX_BATCH_OPS,
    PURGE_INTERVAL_S,
    Failure,
    Op,
    commit_batch,
    connect,
)

if TYPE_CHECKING:
    from agentflow.runtime.store.sqlite_process import ProcessWriter

log = logging.getLogger(__name__)


def op_error(failure: Failure, path: Path) -> StoreError | RunNotFoundError:
    """The store's exception for an op's ``(code, message)`` failure (see ``sqlite_ops``)."""
    code, message = failure
    if code == "duplicate_event":
        return DuplicateEventError(message)
    if code == "run_exists":
        return RunExistsError(message)
    if code == "run_not_found":
        return RunNotFoundError(message)
    if code == "batch":
        return StoreError(f"run store commit failed: {message}")
    if code == "open":
        return StoreError(f"{path}: {message}")
    return StoreError(f"{path}: a run store write failed: {message}")


Schedule = Callable[[Callable[[], object]], object]


def _loop_scheduler() -> tuple[Schedule, asyncio.AbstractEventLoop | None]:
    """A thread-safe, non-blocking way to run a callback on the current event loop (and the loop, if asyncio)."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop.call_soon_threadsafe, loop
    try:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon, None
    except (ImportError, RuntimeError):
        raise RuntimeError("the run store must be awaited from an asyncio or trio event loop") from None


class Waiter:
    """The awaiting side of one op: made on the loop thread, answered by the writer (on any thread)."""

    __slots__ = ("_event", "_schedule", "failure", "loop", "result")

    def __init__(self) -> None:
        self._schedule, self.loop = _loop_scheduler()
        self._event = anyio.Event()
        self.result: Any = None
        self.failure: BaseException | None = None

    def deliver(self, result: Any, failure: BaseException | None) -> None:
        self.result, self.failure = result, failure
        if self.loop is not None and asyncio._get_running_loop() is self.loop:
            self._event.set()  # answered by the loop itself (the writer process's replies): no hop
            return
        try:
            self._schedule(self._event.set)
        except RuntimeError:  # the loop is gone (closed, or the trio run ended): nobody is waiting
            log.debug("run store: event loop closed before a write completed")

    async def wait(self) -> Any:
        await self._event.wait()
        if self.failure is not None:
            raise self.failure
        return self.result


class Pending(Waiter, PendingWrite):
    """``append_soon``'s handle: a waiter that may be awaited later, by several tasks. With the writer
    thread, its op lingers like an ``append_nowait`` one until somebody waits: the thread is woken when
    the loop is about to idle, not while it still has work, when the writer would only queue for the
    GIL (a second thread wake-up, about 50 µs on a small VM). The writer process is sent it at once."""

    __slots__ = ("_deferred", "_writer")

    def __init__(self, deferred: _Deferred, writer: Writer | ProcessWriter) -> None:
        super().__init__()
        self._deferred = deferred
        self._writer = writer

    def done(self) -> bool:
        return self._event.is_set()  # set on the loop thread, after the writer stored the outcome

    def error(self) -> BaseException | None:
        return self.failure if self._event.is_set() else None

    async def wait(self) -> None:
        if not self._event.is_set():
            self._writer.urge()
        await super().wait()
        self._deferred.raise_if_any()


@dataclass(slots=True)
class _Op:
    op: Op | None  # None: the stop marker
    waiter: Waiter | None  # None: append_nowait or housekeeping
    background: bool = False  # housekeeping: errors are logged, not raised at anyone
    urgent: bool = False  # somebody waits for it now: the writer is woken at once


LINGER_S = 0.02
"""How long an unawaited write (``append_nowait``) may wait for company before the writer commits it.
Awaited writes, flushes and reads wake the writer at once and take every queued write along, so a
node's events ride in the same transaction as its checkpoint instead of costing a thread wake-up
each; a crash can lose at most this much of the unawaited tail (never an awaited write)."""


class Writer:
    """The thread that owns the write connection and group-commits the queue."""

    def __init__(self, path: Path, synchronous: str, retention_days: float | None, deferred: _Deferred) -> None:
        self._path, self._synchronous, self._retention_days = path, synchronous, retention_days
        self._deferred = deferred
        self._ops: collections.deque[_Op] = collections.deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._urgent = 0  # queued ops somebody waits for (or the stop marker)
        self._urged = False  # urge(): commit everything queued now
        self._linger_until: float | None = None  # when the oldest unawaited op must be written
        self._outstanding = 0  # ops queued but not yet committed and delivered
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"agentflow-store:{path.name}", daemon=True)
        self._thread.start()

    def submit_op(self, op: Op, waiter: Waiter | None, *, urgent: bool = True) -> None:
        """Queue an op; it is urgent (the writer wakes now) when somebody waits for it (``urgent``)."""
        with self._wake:
            if self._closed:
                raise StoreClosedError("the run store is closed")
            self._outstanding += 1
            urgent = urgent and waiter is not None
            self._ops.append(_Op(op, waiter, urgent=urgent))
            if urgent:
                self._urgent += 1
                self._wake.notify()
            elif self._linger_until is None:
                self._linger_until = time.monotonic() + LINGER_S  # no wake-up: the writer polls

    def urge(self) -> None:
        """Commit everything queued now (somebody started waiting for a lingering op)."""
        with self._wake:
            if self._ops and not self._urged:
                self._urged = True
                self._wake.notify()

    @property
    def idle(self) -> bool:
        return self._outstanding == 0

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop taking ops; the thread commits what is queued, closes its connection and exits."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._ops.append(_Op(None, None))
                self._urgent += 1
                self._wake.notify()

    def join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def release(self) -> None:
        """Nothing to let go of (the process writer's loops stop watching its pipe here)."""

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(self._path, synchronous=self._synchronous)
        except Exception:  # every op will get an error rather than hang
            log.exception("run store: cannot open %s for writing", self._path)
        next_purge = time.monotonic() if self._retention_days is not None else None
        try:
            while True:
                if next_purge is not None and time.monotonic() >= next_purge:
                    purge = ("purge", (self._retention_days or 0.0, sorted(FINISHED)))
                    self._commit(conn, [_Op(purge, None, background=True)])
                    next_purge = time.monotonic() + PURGE_INTERVAL_S
                batch = self._take(next_purge)
                if not batch:
                    continue  # time to purge
                ops = [op for op in batch if op.op is not None]
                self._commit(conn, ops)
                with self._lock:
                    self._outstanding -= len(ops)
                if batch[-1].op is None:  # nothing can follow the stop marker: submit_op() refuses once closed
                    return
        finally:
            if conn is not None:
                conn.close()

    def _take(self, next_purge: float | None) -> list[_Op]:
        """Wait until a write is awaited, the linger of an unawaited one ends, or a purge is due; then
        take up to ``MAX_BATCH_OPS`` queued ops (in order). Empty: only the purge is due."""
        with self._wake:
            while True:
                now = time.monotonic()
                if self._urgent or self._urged or (self._linger_until is not None and now >= self._linger_until):
                    break
                if next_purge is not None and now >= next_purge:
                    return []
                deadlines = [t for t in (self._linger_until, next_purge, now + LINGER_S) if t is not None]
                self._wake.wait(max(0.0, min(deadlines) - now))
            batch: list[_Op] = []
            while self._ops and len(batch) < MAX_BATCH_OPS:
                op = self._ops.popleft()
                batch.append(op)
                if op.op is None or op.urgent:
                    self._urgent -= 1
                if op.op is None:
                    break
            self._urged = self._urged and bool(self._ops)
            self._linger_until = time.monotonic() + LINGER_S if self._ops and not self._urgent else None
            return batch

    def _commit(self, conn: sqlite3.Connection | None, ops: list[_Op]) -> None:
        """One transaction for the batch (``sqlite_ops.commit_batch``), then each op's answer."""
        if not ops:
            return
        outcomes = commit_batch(conn, [op.op for op in ops if op.op is not None])
        if outcomes and outcomes[0][1] is not None and outcomes[0][1][0] == "batch":
            log.error("run store: commit of %d ops failed: %s", len(ops), outcomes[0][1][1])
        for op, (result, failure) in zip(ops, outcomes, strict=True):
            error = None if failure is None else op_error(failure, self._path)
            if op.waiter is not None:
                op.waiter.deliver(result, error)
            elif error is not None and op.background:
                log.error("run store housekeeping failed: %s", error)
            elif error is not None:
                log.error("run store: append_nowait failed (raised at the next awaited call): %s", error)
                self._deferred.add(error)
            elif op.background and result:
                log.info("run store: retention purged %d event/node rows of finished runs", result)
