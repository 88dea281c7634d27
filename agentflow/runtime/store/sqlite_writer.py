"""The SQLite store's write side: one thread owns the write connection and group-commits what the
event loop queues (see ``base`` for the guarantees). ``SQLiteStore`` (``sqlite.py``) submits ops
here and awaits their ``Waiter``s; reads go through its own pool."""

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
from typing import Any

import anyio

from agentflow.runtime.errors import DuplicateEventError, RunNotFoundError, StoreClosedError, StoreError
from agentflow.runtime.store.base import FINISHED, MAX_BATCH_OPS, PURGE_INTERVAL_S, PendingWrite, _Deferred, _Write

log = logging.getLogger(__name__)

_FINISHED_SQL = ", ".join(f"'{s}'" for s in sorted(FINISHED))

SqlFn = Callable[[sqlite3.Connection], Any]


def connect(path: Path, *, synchronous: str = "NORMAL", reader: bool = False) -> sqlite3.Connection:
    # Readers live in a pool shared by anyio's worker threads, hence check_same_thread=False for them only.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not reader)
    conn.execute("PRAGMA busy_timeout = 5000")
    if reader:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # truncate the WAL back to 64 MiB after checkpoints
    return conn


_INSERT_EVENTS = "INSERT INTO events (run_id, seq, name, time, node, data) VALUES (?, ?, ?, ?, ?, ?)"
_INSERT_NODES = "INSERT INTO nodes (run_id, path, kind, attempt, output, writes) VALUES (?, ?, ?, ?, ?, ?)"


def _sql_append(conn: sqlite3.Connection, write: _Write) -> None:
    if write.events:
        try:
            conn.executemany(_INSERT_EVENTS, write.events)
        except sqlite3.IntegrityError as exc:
            seqs = [row[1] for row in write.events]
            raise DuplicateEventError(f"run {write.run_id!r}: event seq already stored (seqs {seqs[:5]}...)") from exc
    if write.nodes:
        conn.executemany(_INSERT_NODES, write.nodes)
    if write.run:
        # Column names come from _RunFields (validated), never from caller strings.
        sets = ", ".join(f"{name} = ?" for name in write.run)
        cur = conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*write.run.values(), write.run_id])
        if cur.rowcount == 0:
            raise RunNotFoundError(f"run {write.run_id!r} not found")


def sql_purge(conn: sqlite3.Connection, days: float) -> int:
    cutoff = time.time() - days * 86400.0
    old = f"SELECT run_id FROM runs WHERE status IN ({_FINISHED_SQL}) AND updated_at < ?"
    deleted = conn.execute(f"DELETE FROM events WHERE run_id IN ({old})", (cutoff,)).rowcount
    deleted += conn.execute(f"DELETE FROM nodes WHERE run_id IN ({old})", (cutoff,)).rowcount
    return int(deleted)


Schedule = Callable[[Callable[[], object]], object]


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
        raise RuntimeError("the run store must be awaited from an asyncio or trio event loop") from None


class Waiter:
    """The awaiting side of one op: made on the loop thread, completed from the writer thread."""

    __slots__ = ("_event", "_schedule", "failure", "result")

    def __init__(self) -> None:
        self._schedule = _loop_scheduler()
        self._event = anyio.Event()
        self.result: Any = None
        self.failure: BaseException | None = None

    def deliver(self, result: Any, failure: BaseException | None) -> None:  # writer thread
        self.result, self.failure = result, failure
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
    """``append_soon``'s handle: a waiter that may be awaited later, by several tasks. Its op lingers like
    an ``append_nowait`` one until somebody waits: the writer is woken when the loop is about to idle,
    not while it still has work, when the writer would only queue for the GIL (a second thread wake-up,
    about 50 µs on a small VM)."""

    __slots__ = ("_deferred", "_writer")

    def __init__(self, deferred: _Deferred, writer: Writer) -> None:
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
    fn: SqlFn | None  # None: a barrier (flush), or an append (``write``)
    waiter: Waiter | None  # None: append_nowait or housekeeping
    background: bool = False  # housekeeping: errors are logged, not raised at anyone
    urgent: bool = False  # somebody waits for it now: the writer is woken at once
    write: _Write | None = None  # an append: rows only, which a batch may insert together with its neighbours


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
        self._ops: collections.deque[_Op | None] = collections.deque()  # None: stop
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._urgent = 0  # queued ops somebody waits for (or the stop marker)
        self._urged = False  # urge(): commit everything queued now
        self._linger_until: float | None = None  # when the oldest unawaited op must be written
        self._outstanding = 0  # ops queued but not yet committed and delivered
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"agentflow-store:{path.name}", daemon=True)
        self._thread.start()

    def submit(self, fn: SqlFn | None, waiter: Waiter | None, *, urgent: bool = True,
               write: _Write | None = None) -> None:
        """Queue an op (``fn``, or an append's ``write``); it is urgent (the writer wakes now) when somebody
        waits for it (``urgent``)."""
        with self._wake:
            if self._closed:
                raise StoreClosedError("the run store is closed")
            self._outstanding += 1
            urgent = urgent and waiter is not None
            self._ops.append(_Op(fn, waiter, urgent=urgent, write=write))
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
                self._ops.append(None)
                self._urgent += 1
                self._wake.notify()

    def join(self) -> None:
        if threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        error: BaseException | None = None
        try:
            conn = connect(self._path, synchronous=self._synchronous)
        except Exception as exc:  # every op will get this error rather than hang
            log.exception("run store: cannot open %s for writing", self._path)
            error = exc
        next_purge = time.monotonic() if self._retention_days is not None else None
        try:
            while True:
                if next_purge is not None and time.monotonic() >= next_purge:
                    self._commit(conn, error, [_Op(self._purge, None, background=True)])
                    next_purge = time.monotonic() + PURGE_INTERVAL_S
                batch = self._take(next_purge)
                if not batch:
                    continue  # time to purge
                ops = [op for op in batch if op is not None]
                self._commit(conn, error, ops)
                with self._lock:
                    self._outstanding -= len(ops)
                if batch[-1] is None:  # nothing can follow the stop marker: submit() refuses once closed
                    return
        finally:
            if conn is not None:
                conn.close()

    def _take(self, next_purge: float | None) -> list[_Op | None]:
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
            batch: list[_Op | None] = []
            while self._ops and len(batch) < MAX_BATCH_OPS:
                op = self._ops.popleft()
                batch.append(op)
                if op is None or op.urgent:
                    self._urgent -= 1
                if op is None:
                    break
            self._urged = self._urged and bool(self._ops)
            self._linger_until = time.monotonic() + LINGER_S if self._ops and not self._urgent else None
            return batch

    def _purge(self, conn: sqlite3.Connection) -> None:
        deleted = sql_purge(conn, self._retention_days or 0.0)
        if deleted:
            log.info("run store: retention purged %d event/node rows of finished runs", deleted)

    def _commit(self, conn: sqlite3.Connection | None, error: BaseException | None, ops: list[_Op]) -> None:
        """One transaction for the whole batch. Optimistically without savepoints (the common case:
        nothing fails); if an op fails, the batch is rolled back and replayed with each op in its
        own SAVEPOINT, so only the failing op is lost."""
        results: list[tuple[Any, BaseException | None]] = [(None, None)] * len(ops)
        if any(op.fn is not None or op.write is not None for op in ops):
            try:
                if conn is None:
                    raise StoreError(f"{self._path}: the run store's write connection is not open") from error
                conn.execute("BEGIN IMMEDIATE")
                try:
                    results = self._apply_merged(conn, ops)
                except Exception:
                    conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    results = [self._apply(conn, op) for op in ops]
                conn.execute("COMMIT")
            except Exception as exc:  # the transaction itself failed: nothing of this batch is stored
                _rollback(conn)
                log.error("run store: commit of %d ops failed: %s", len(ops), exc)
                results = [(None, _batch_error(exc)) for _ in ops]
        for op, (result, failure) in zip(ops, results, strict=True):
            if op.waiter is not None:
                op.waiter.deliver(result, failure)
            elif failure is not None and op.background:
                log.error("run store housekeeping failed: %s", failure, exc_info=failure)
            elif failure is not None:
                log.error("run store: append_nowait failed (raised at the next awaited call): %s", failure)
                self._deferred.add(failure)

    @staticmethod
    def _apply_merged(conn: sqlite3.Connection, ops: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        """The optimistic pass: the rows of consecutive appends go in with one statement per table (a
        node's events and checkpoint are several ops; one ``executemany`` each costs about 5 µs). Any
        error aborts the pass, and the batch is replayed op by op."""
        results: list[tuple[Any, BaseException | None]] = []
        events: list[Any] = []
        nodes: list[Any] = []

        def insert() -> None:
            if events:
                conn.executemany(_INSERT_EVENTS, events)
                events.clear()
            if nodes:
                conn.executemany(_INSERT_NODES, nodes)
                nodes.clear()

        for op in ops:
            if op.write is not None and not op.write.run:
                events.extend(op.write.events)
                nodes.extend(op.write.nodes)
                results.append((None, None))
                continue
            insert()
            if op.write is not None:
                _sql_append(conn, op.write)
                results.append((None, None))
            else:
                results.append((op.fn(conn) if op.fn is not None else None, None))
        insert()
        return results

    @staticmethod
    def _apply(conn: sqlite3.Connection, op: _Op) -> tuple[Any, BaseException | None]:
        if op.fn is None and op.write is None:
            return None, None
        conn.execute("SAVEPOINT op")
        result: Any = None
        try:
            if op.write is not None:
                _sql_append(conn, op.write)
            elif op.fn is not None:
                result = op.fn(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return None, exc
        conn.execute("RELEASE op")
        return result, None


def _rollback(conn: sqlite3.Connection | None) -> None:
    try:
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:  # SQLite may have rolled back by itself (e.g. on SQLITE_FULL)
        log.exception("run store: rollback failed")


def _batch_error(exc: Exception) -> StoreError:
    error = StoreError(f"run store commit failed: {exc}")
    error.__cause__ = exc
    return error
