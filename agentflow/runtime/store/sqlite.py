"""``SQLiteStore``: the durable run store (WAL, one writer thread with group commit; see ``base``)."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread

from agentflow.runtime.errors import (
    DuplicateEventError,
    RunExistsError,
    RunNotFoundError,
    StoreClosedError,
    StoreError,
    StoreVersionError,
)
from agentflow.runtime.events import EventBase, parse_event
from agentflow.runtime.store.base import (
    _RUN_COLUMNS,
    FINISHED,
    MAX_BATCH_OPS,
    PURGE_INTERVAL_S,
    SCHEMA_VERSION,
    UNFINISHED,
    NodeRecord,
    PendingWrite,
    RunRecord,
    RunStore,
    T,
    WorkflowRecord,
    _decode_cursor,
    _Deferred,
    _encode_cursor,
    _node_from_row,
    _prepare,
    _run_from_row,
    _run_row,
    _Write,
)

log = logging.getLogger(__name__)

# ---- SQLiteStore ------------------------------------------------------------------------------------------

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
    input TEXT, output TEXT, error TEXT, spec TEXT, parent_run_id TEXT, interrupt TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, tenant TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs (workflow, created_at, run_id);
CREATE TABLE IF NOT EXISTS nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
    attempt INTEGER NOT NULL, output TEXT, writes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_by_run ON nodes (run_id, id);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, time REAL NOT NULL, node TEXT,
    data TEXT NOT NULL, PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL, source TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""
_MIGRATIONS = {
    1: """
BEGIN IMMEDIATE;
ALTER TABLE runs ADD COLUMN tenant TEXT;
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, created_at, run_id);
PRAGMA user_version = 2;
COMMIT;
""",
    2: """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS workflows (
    name TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL, source TEXT, created_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
PRAGMA user_version = 3;
COMMIT;
""",
}
"""Schema upgrades: version N's file is brought to N + 1 by script N (in order, at open)."""
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs"
_FINISHED_SQL = ", ".join(f"'{s}'" for s in sorted(FINISHED))
_UNFINISHED_SQL = ", ".join(f"'{s}'" for s in UNFINISHED)
SqlFn = Callable[[sqlite3.Connection], Any]


def _connect(path: Path, *, synchronous: str = "NORMAL", reader: bool = False) -> sqlite3.Connection:
    # Readers live in a pool shared by anyio's worker threads, hence check_same_thread=False for them only.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not reader)
    conn.execute("PRAGMA busy_timeout = 5000")
    if reader:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # truncate the WAL back to 64 MiB after checkpoints
    return conn


def _init_database(path: Path) -> None:
    """Create or check the schema, and switch the file to WAL (a persistent property of the file)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreVersionError(f"{path}: run store schema version {version} was written by a newer agentflow "
                                    f"(this one reads up to {SCHEMA_VERSION}); upgrade agentflow to open it")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: journal_mode is %s, not WAL; writes may block readers", path, mode)
        if version == 0:
            conn.executescript(_SCHEMA)
        for step in range(version, SCHEMA_VERSION) if version else ():
            log.info("%s: upgrading the run store schema from version %d to %d", path, step, step + 1)
            conn.executescript(_MIGRATIONS[step])
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the run store: {exc}") from exc
    finally:
        conn.close()


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


def _sql_create_run(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    try:
        conn.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    except sqlite3.IntegrityError as exc:
        raise RunExistsError(f"run {row['run_id']!r} already exists") from exc


def _sql_delete_run(conn: sqlite3.Connection, run_id: str) -> None:
    for table in ("events", "nodes", "runs"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def _sql_purge(conn: sqlite3.Connection, days: float) -> int:
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


class _Waiter:
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


class _Pending(_Waiter, PendingWrite):
    """``append_soon``'s handle: a waiter that may be awaited later, by several tasks. Its op lingers like
    an ``append_nowait`` one until somebody waits: the writer is woken when the loop is about to idle,
    not while it still has work, when the writer would only queue for the GIL (a second thread wake-up,
    about 50 µs on a small VM)."""

    __slots__ = ("_deferred", "_writer")

    def __init__(self, deferred: _Deferred, writer: _Writer) -> None:
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
    waiter: _Waiter | None  # None: append_nowait or housekeeping
    background: bool = False  # housekeeping: errors are logged, not raised at anyone
    urgent: bool = False  # somebody waits for it now: the writer is woken at once
    write: _Write | None = None  # an append: rows only, which a batch may insert together with its neighbours


LINGER_S = 0.02
"""How long an unawaited write (``append_nowait``) may wait for company before the writer commits it.
Awaited writes, flushes and reads wake the writer at once and take every queued write along, so a
node's events ride in the same transaction as its checkpoint instead of costing a thread wake-up
each; a crash can lose at most this much of the unawaited tail (never an awaited write)."""


class _Writer:
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

    def submit(self, fn: SqlFn | None, waiter: _Waiter | None, *, urgent: bool = True,
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
            conn = _connect(self._path, synchronous=self._synchronous)
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
        deleted = _sql_purge(conn, self._retention_days or 0.0)
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


class _ReadPool:
    """Read connections shared by worker threads (each used by one thread at a time)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._closed:
                raise StoreClosedError("the run store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = _connect(self._path, reader=True)
        try:
            return fn(conn)
        finally:
            with self._lock:
                keep = not self._closed
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _shutdown(writer: _Writer, reads: _ReadPool) -> None:
    """Finalizer of an SQLiteStore nobody closed: commit what is queued (also at interpreter exit)."""
    writer.close()
    writer.join()
    reads.close()


class SQLiteStore(RunStore):
    """The durable store: one SQLite file in WAL mode.

    ``synchronous="NORMAL"`` (default): a committed transaction survives the process being killed
    (SIGKILL, a crash of Python) — the case the tests check — since it is in the WAL file in the OS page
    cache; only an OS crash or power loss may lose the last few commits (never corrupt the file). WAL
    is fsynced at checkpoints. ``"FULL"`` fsyncs the WAL at every commit (one per group-committed
    batch), so commits also survive power loss, at the cost of a disk flush per batch.

    ``retention_days``: when set, the writer thread runs ``purge(events_older_than_days=retention_days)``
    at open and then hourly.
    """

    def __init__(self, path: str | os.PathLike[str], *, retention_days: float | None = None,
                 synchronous: Literal["NORMAL", "FULL"] = "NORMAL") -> None:
        super().__init__()
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        if retention_days is not None and retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        self.path = Path(path)
        self.retention_days = retention_days
        _init_database(self.path)
        self._writer = _Writer(self.path, synchronous, retention_days, self._deferred)
        self._reads = _ReadPool(self.path)
        self._finalizer = weakref.finalize(self, _shutdown, self._writer, self._reads)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def _write(self, fn: SqlFn | None) -> Any:
        waiter = _Waiter()
        self._writer.submit(fn, waiter)
        result = await waiter.wait()
        self._deferred.raise_if_any()
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        await self.flush()  # reads see every write queued before them
        return await anyio.to_thread.run_sync(self._reads.run, fn)

    async def create_run(self, run: RunRecord) -> None:
        row = _run_row(run)
        await self._write(lambda conn: _sql_create_run(conn, row))

    async def update_run(self, run_id: str, **fields: Any) -> None:
        await self.append(run_id, run=fields)

    async def append(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                     run: dict[str, Any] | None = None) -> None:
        waiter = _Waiter()
        self._writer.submit(None, waiter, write=_prepare(run_id, events, nodes, run))
        await waiter.wait()
        self._deferred.raise_if_any()

    def append_nowait(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                      run: dict[str, Any] | None = None) -> None:
        if len(events) == 1 and not nodes and not run:  # the hot path: one event of a running node
            event = events[0]
            if event.run_id != run_id:
                raise ValueError(f"append({run_id!r}) got a record of run {event.run_id!r}")
            row = (run_id, event.seq, getattr(event, "event", type(event).__name__), event.time, event.node,
                   event.model_dump_json())
            write: _Write = _Write(run_id, [row], [], {})
        else:
            write = _prepare(run_id, events, nodes, run)
        self._writer.submit(None, None, write=write)

    def append_soon(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                    run: dict[str, Any] | None = None) -> PendingWrite:
        write = _prepare(run_id, events, nodes, run)
        pending = _Pending(self._deferred, self._writer)
        self._writer.submit(None, pending, urgent=False, write=write)
        return pending

    async def flush(self) -> None:
        if self._writer.idle:  # nothing in flight: skip the round trip through the writer thread
            self._deferred.raise_if_any()
            if self._writer.closed:
                raise StoreClosedError("the run store is closed")
            return
        await self._write(None)

    async def get_run(self, run_id: str) -> RunRecord | None:
        def read(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(f"{_SELECT_RUN} WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else _run_from_row(row)

        return await self._read(read)

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
                        cursor: str | None = None, tenant: str | None = None) -> tuple[list[RunRecord], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", status), ("workflow", workflow), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if cursor:
            where.append("(created_at, run_id) < (?, ?)")
            params.extend(_decode_cursor(cursor))
        sql = (f"{_SELECT_RUN} {'WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY created_at DESC, run_id DESC LIMIT ?")

        def read(conn: sqlite3.Connection) -> tuple[list[RunRecord], str | None]:
            rows = conn.execute(sql, [*params, limit + 1]).fetchall()
            runs = [_run_from_row(row) for row in rows[:limit]]
            return runs, (_encode_cursor(runs[-1]) if len(rows) > limit else None)

        return await self._read(read)

    async def unfinished_runs(self) -> list[RunRecord]:
        sql = f"{_SELECT_RUN} WHERE status IN ({_UNFINISHED_SQL}) ORDER BY created_at, run_id"
        return await self._read(lambda conn: [_run_from_row(row) for row in conn.execute(sql)])

    async def node_records(self, run_id: str) -> list[NodeRecord]:
        sql = "SELECT id, run_id, path, kind, attempt, output, writes FROM nodes WHERE run_id = ? ORDER BY id"
        return await self._read(lambda conn: [_node_from_row(row) for row in conn.execute(sql, (run_id,))])

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[EventBase]:
        sql = "SELECT data FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        args = (run_id, after, -1 if limit is None else limit)
        return await self._read(lambda conn: [parse_event(data) for (data,) in conn.execute(sql, args)])

    async def last_seq(self, run_id: str) -> int:
        sql = "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?"
        return int(await self._read(lambda conn: conn.execute(sql, (run_id,)).fetchone()[0]))

    async def delete_run(self, run_id: str) -> None:
        await self._write(lambda conn: _sql_delete_run(conn, run_id))

    async def purge(self, *, events_older_than_days: float) -> int:
        return int(await self._write(lambda conn: _sql_purge(conn, events_older_than_days)))

    async def put_workflow(self, record: WorkflowRecord) -> None:
        row = (record.name, record.version, json.dumps(record.spec, ensure_ascii=False), record.source,
               record.created_at)
        await self._write(lambda conn: conn.execute("INSERT OR REPLACE INTO workflows VALUES (?, ?, ?, ?, ?)", row))

    async def workflows(self) -> list[WorkflowRecord]:
        sql = "SELECT name, version, spec, source, created_at FROM workflows ORDER BY name, version"
        return await self._read(lambda conn: [WorkflowRecord(name, version, json.loads(spec), source, created_at)
                                              for name, version, spec, source, created_at in conn.execute(sql)])

    async def delete_workflow(self, name: str) -> None:
        await self._write(lambda conn: conn.execute("DELETE FROM workflows WHERE name = ?", (name,)))

    async def aclose(self) -> None:
        self._writer.close()
        await anyio.to_thread.run_sync(self._writer.join)
        self._finish_close()

    def close_sync(self) -> None:
        self._writer.close()
        self._writer.join()
        self._finish_close()

    def _finish_close(self) -> None:
        self._reads.close()
        self._finalizer.detach()
        self._deferred.raise_if_any()
