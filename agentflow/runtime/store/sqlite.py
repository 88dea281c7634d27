"""``SQLiteStore``: the durable run store (WAL; schema and migrations, reads on a pooled connection;
writes go to a writer that group-commits them: a child process, ``sqlite_process``, or a thread,
``sqlite_writer``; see ``base``)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.lowlevel
import anyio.to_thread

from agentflow.runtime.errors import (
    StoreClosedError,
    StoreError,
    StoreVersionError,
)
from agentflow.runtime.events import EventBase, parse_event
from agentflow.runtime.store.base import (
    _RUN_COLUMNS,
    DEFAULT_TENANT,
    FINISHED,
    SCHEMA_VERSION,
    UNFINISHED,
    NodeRecord,
    PendingWrite,
    RunRecord,
    RunStore,
    T,
    WorkflowRecord,
    _decode_cursor,
    _encode_cursor,
    _node_from_row,
    _prepare,
    _run_from_row,
    _run_row,
    _Write,
)
from agentflow.runtime.store.claims import Claims, lock_path
from agentflow.runtime.store.sqlite_ops import Op, connect
from agentflow.runtime.store.sqlite_process import ProcessWriter
from agentflow.runtime.store.sqlite_writer import Pending, Waiter, Writer

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
DEFAULT_SPIN_US = 100.0
"""``SQLiteStore(writer_spin_us=...)``'s default."""
_UNFINISHED_SQL = ", ".join(f"'{s}'" for s in UNFINISHED)
def _append_op(write: _Write[Any]) -> Op:
    return "append", (write.run_id, write.events, write.nodes, write.run)


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
            conn = connect(self._path, reader=True)
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


def _shutdown(writer: Writer | ProcessWriter, reads: _ReadPool) -> None:
    """Finalizer of an SQLiteStore nobody closed: commit what is queued (also at interpreter exit)."""
    writer.close()
    writer.join()
    writer.release()
    reads.close()


class SQLiteStore(RunStore):
    """The durable store: one SQLite file in WAL mode.

    ``synchronous="NORMAL"`` (default): a committed transaction survives the process being killed
    (SIGKILL, a crash of Python) — the case the tests check — since it is in the WAL file in the OS page
    cache; only an OS crash or power loss may lose the last few commits (never corrupt the file). WAL
    is fsynced at checkpoints. ``"FULL"`` fsyncs the WAL at every commit (one per group-committed
    batch), so commits also survive power loss, at the cost of a disk flush per batch.

    ``retention_days``: when set, the writer runs ``purge(events_older_than_days=retention_days)`` at
    open and then hourly.

    ``writer``: who owns the write connection. ``"process"`` (the default on POSIX): a small child
    process (``sqlite_process``), which commits while the event loop goes on running Python, since it
    does not share the loop's GIL; about 20 ms to start. ``"thread"``: a thread of this process
    (``sqlite_writer``), for platforms without it. Either way, the event loop never touches the file.
    ``writer_spin_us``: how long the writer process polls for the next op after each commit before it
    sleeps (0: never). On VMs where waking an idle CPU is slow (tens of µs), a short poll takes that off
    every durable step of a sequential run, for at most that much CPU per commit.
    """

    def __init__(self, path: str | os.PathLike[str], *, retention_days: float | None = None,
                 synchronous: Literal["NORMAL", "FULL"] = "NORMAL", writer: Literal["process", "thread"] | None = None,
                 writer_spin_us: float = DEFAULT_SPIN_US) -> None:
        super().__init__()
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        chosen, writer = writer, writer or ("process" if os.name == "posix" else "thread")
        if writer not in ("process", "thread"):
            raise ValueError(f"writer must be 'process' or 'thread', not {writer!r}")
        if not 0 <= writer_spin_us <= 10_000:
            raise ValueError(f"writer_spin_us must be between 0 and 10000, not {writer_spin_us!r}")
        if retention_days is not None and retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        self.path = Path(path)
        self.retention_days = retention_days
        _init_database(self.path)
        self._writer: Writer | ProcessWriter
        if writer == "process":
            try:
                self._writer = ProcessWriter(self.path, synchronous, retention_days, self._deferred,
                                             spin_us=writer_spin_us)
            except StoreError as exc:  # no child process here (an embedded interpreter, say)
                if chosen == "process":  # asked for by name: no quiet fallback
                    raise
                log.warning("%s; using a writer thread instead", exc)
                self._writer = Writer(self.path, synchronous, retention_days, self._deferred)
        else:
            self._writer = Writer(self.path, synchronous, retention_days, self._deferred)
        self._reads = _ReadPool(self.path)
        self._reads_closed = False
        self._finalizer = weakref.finalize(self, _shutdown, self._writer, self._reads)

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    def _make_claims(self) -> Claims:
        return Claims(lock_path(self.path))

    async def _write(self, op: Op, *, deferred: bool = True) -> Any:
        waiter = Waiter()
        self._writer.submit_op(op, waiter)
        result = await waiter.wait()
        if deferred:
            self._deferred.raise_if_any()
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # Reads see every write queued before them; a failed append_nowait is not theirs to raise. A writer
        # that died (its process killed) leaves the file readable: reads go on, only a closed store refuses.
        if self._reads_closed:
            raise StoreClosedError("the run store is closed")
        if not self._writer.idle and not self._writer.closed:
            await self._write(("barrier", ()), deferred=False)
        return await anyio.to_thread.run_sync(self._reads.run, fn)

    async def create_run(self, run: RunRecord) -> None:
        row = _run_row(run)
        await self._write(("create_run", (row,)))

    async def update_run(self, run_id: str, **fields: Any) -> None:
        await self.append(run_id, run=fields)

    async def append(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                     run: dict[str, Any] | None = None) -> None:
        await self._write(_append_op(_prepare(run_id, events, nodes, run)))

    def append_nowait(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                      run: dict[str, Any] | None = None) -> None:
        if len(events) == 1 and not nodes and not run:  # the hot path: one event of a running node
            event = events[0]
            if event.run_id != run_id:
                raise ValueError(f"append({run_id!r}) got a record of run {event.run_id!r}")
            row = (run_id, event.seq, getattr(event, "event", type(event).__name__), event.time, event.node,
                   event.model_dump_json())
            op: Op = ("append", (run_id, [row], [], {}))
        else:
            op = _append_op(_prepare(run_id, events, nodes, run))
        self._writer.submit_op(op, None)

    def append_soon(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                    run: dict[str, Any] | None = None) -> PendingWrite:
        op = _append_op(_prepare(run_id, events, nodes, run))
        pending = Pending(self._deferred, self._writer)
        if isinstance(self._writer, Writer):
            self._writer.submit_op(op, pending, urgent=False)
        else:
            self._writer.submit_op(op, pending)
        return pending

    async def flush(self) -> None:
        if self._writer.idle:  # nothing in flight: skip the round trip through the writer
            self._deferred.raise_if_any()
            if self._writer.closed:
                raise StoreClosedError("the run store is closed")
            return
        await self._write(("barrier", ()))

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
                where.append(f"({column} = ? OR {column} IS NULL)" if column == "tenant" and value == DEFAULT_TENANT
                             else f"{column} = ?")
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
        await self._write(("delete_run", (run_id,)))

    async def purge(self, *, events_older_than_days: float) -> int:
        return int(await self._write(("purge", (events_older_than_days, sorted(FINISHED)))))

    async def put_workflow(self, record: WorkflowRecord) -> None:
        row = (record.name, record.version, json.dumps(record.spec, ensure_ascii=False), record.source,
               record.created_at)
        await self._write(("put_workflow", (row,)))

    async def workflows(self) -> list[WorkflowRecord]:
        sql = "SELECT name, version, spec, source, created_at FROM workflows ORDER BY name, version"
        return await self._read(lambda conn: [WorkflowRecord(name, version, json.loads(spec), source, created_at)
                                              for name, version, spec, source, created_at in conn.execute(sql)])

    async def delete_workflow(self, name: str) -> None:
        await self._write(("delete_workflow", (name,)))

    async def aclose(self) -> None:
        self._writer.close()
        await anyio.to_thread.run_sync(self._writer.join)
        self._writer.release()
        self._finish_close()

    def close_sync(self) -> None:
        self._writer.close()
        self._writer.join()
        self._writer.release()
        self._finish_close()

    def _finish_close(self) -> None:
        self._reads_closed = True
        self._close_claims()
        self._reads.close()
        self._finalizer.detach()
        self._deferred.raise_if_any()
