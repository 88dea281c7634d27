"""The SQLite store's writes as data: an op is ``(kind, args)`` of plain values, and ``commit_batch``
applies a batch of them in one transaction on the write connection.

Both writers use it: the writer thread (``sqlite_writer``) and the writer process
(``sqlite_process``, whose child loads this module on its own). It therefore imports nothing but the
standard library, and reports failures as ``(code, message)`` pairs, which each writer's parent side
turns into the store's exception classes (``sqlite_writer.op_error``).

Kinds and their args:

- ``append``: ``(run_id, event_rows, node_rows, run_fields)``, rows already serialised by the caller;
- ``create_run``: ``(row,)``, a column -> value dict;
- ``delete_run``: ``(run_id,)``;
- ``purge``: ``(days, finished_statuses)``, returns the number of rows deleted;
- ``put_workflow``: ``(row,)``, a tuple in column order;
- ``delete_workflow``: ``(name,)``;
- ``barrier``: ``()``, nothing to apply (a flush: it returns once everything before it is committed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Op = tuple[str, tuple[Any, ...]]
Failure = tuple[str, str]
"""``(code, message)``; codes: ``duplicate_event``, ``run_not_found``, ``run_exists``, ``error`` (any other
failure of the op), ``batch`` (the transaction failed: nothing of the batch is stored), ``open`` (no write
connection)."""
Outcome = tuple[Any, Failure | None]

MAX_BATCH_OPS = 1024
"""Most queued ops a writer folds into one transaction (bounds a batch's latency)."""
PURGE_INTERVAL_S = 3600.0
"""How often a writer applies ``retention_days`` while the store is open."""

INSERT_EVENTS = "INSERT INTO events (run_id, seq, name, time, node, data) VALUES (?, ?, ?, ?, ?, ?)"
INSERT_NODES = "INSERT INTO nodes (run_id, path, kind, attempt, output, writes) VALUES (?, ?, ?, ?, ?, ?)"


class OpError(Exception):
    """A known way for an op to fail; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def connect(path: Path | str, *, synchronous: str = "NORMAL", reader: bool = False) -> sqlite3.Connection:
    # Readers live in a pool shared by anyio's worker threads, hence check_same_thread=False for them only.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not reader)
    conn.execute("PRAGMA busy_timeout = 5000")
    if reader:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA journal_size_limit = 67108864")  # truncate the WAL back to 64 MiB after checkpoints
    return conn


# ---- the ops -------------------------------------------------------------------------------------------

def _append(conn: sqlite3.Connection, run_id: str, events: Sequence[Sequence[Any]], nodes: Sequence[Sequence[Any]],
            run: dict[str, Any]) -> None:
    if events:
        try:
            conn.executemany(INSERT_EVENTS, events)
        except sqlite3.IntegrityError as exc:
            seqs = [row[1] for row in events]
            raise OpError("duplicate_event",
                          f"run {run_id!r}: event seq already stored (seqs {seqs[:5]}...)") from exc
    if nodes:
        conn.executemany(INSERT_NODES, nodes)
    if run:
        # Column names were validated by the store (base._RUN_FIELDS), never taken from caller strings.
        sets = ", ".join(f"{name} = ?" for name in run)
        cur = conn.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [*run.values(), run_id])
        if cur.rowcount == 0:
            raise OpError("run_not_found", f"run {run_id!r} not found")


def _create_run(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    try:
        conn.execute(f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    except sqlite3.IntegrityError as exc:
        raise OpError("run_exists", f"run {row['run_id']!r} already exists") from exc


def _delete_run(conn: sqlite3.Connection, run_id: str) -> None:
    for table in ("events", "nodes", "runs"):
        conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))


def purge(conn: sqlite3.Connection, days: float, finished: Sequence[str]) -> int:
    """Delete the event logs and node records of runs that finished more than ``days`` ago."""
    cutoff = time.time() - days * 86400.0
    statuses = ", ".join("?" * len(finished))
    old = f"SELECT run_id FROM runs WHERE status IN ({statuses}) AND updated_at < ?"
    deleted = conn.execute(f"DELETE FROM events WHERE run_id IN ({old})", (*finished, cutoff)).rowcount
    deleted += conn.execute(f"DELETE FROM nodes WHERE run_id IN ({old})", (*finished, cutoff)).rowcount
    return int(deleted)


def _put_workflow(conn: sqlite3.Connection, row: Sequence[Any]) -> None:
    conn.execute("INSERT OR REPLACE INTO workflows VALUES (?, ?, ?, ?, ?)", row)


def _delete_workflow(conn: sqlite3.Connection, name: str) -> None:
    conn.execute("DELETE FROM workflows WHERE name = ?", (name,))


def _barrier(conn: sqlite3.Connection) -> None:
    return None


_KINDS: dict[str, Callable[..., Any]] = {
    "append": _append, "create_run": _create_run, "delete_run": _delete_run, "purge": purge,
    "put_workflow": _put_workflow, "delete_workflow": _delete_workflow, "barrier": _barrier,
}


# ---- one batch, one transaction -------------------------------------------------------------------------

def commit_batch(conn: sqlite3.Connection | None, ops: Sequence[Op]) -> list[Outcome]:
    """One transaction for the whole batch. Optimistically without savepoints (the common case: nothing
    fails); if an op fails, the batch is rolled back and replayed with each op in its own SAVEPOINT, so
    only the failing op is lost. Returns one ``(result, failure)`` per op, in order."""
    if not any(kind != "barrier" for kind, _ in ops):
        return [(None, None)] * len(ops)
    if conn is None:
        return [(None, ("open", "the run store's write connection is not open"))] * len(ops)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = _apply_merged(conn, ops)
        except Exception:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            outcomes = [_apply_alone(conn, op) for op in ops]
        conn.execute("COMMIT")
        return outcomes
    except Exception as exc:  # the transaction itself failed: nothing of this batch is stored
        _rollback(conn)
        return [(None, ("batch", f"{type(exc).__name__}: {exc}"))] * len(ops)


def _apply_merged(conn: sqlite3.Connection, ops: Sequence[Op]) -> list[Outcome]:
    """The optimistic pass: the rows of consecutive appends go in with one statement per table (a node's
    events and checkpoint are several ops; one ``executemany`` each costs about 5 µs). Any error aborts
    the pass, and the batch is replayed op by op."""
    outcomes: list[Outcome] = []
    events: list[Any] = []
    nodes: list[Any] = []

    def insert() -> None:
        if events:
            conn.executemany(INSERT_EVENTS, events)
            events.clear()
        if nodes:
            conn.executemany(INSERT_NODES, nodes)
            nodes.clear()

    for kind, args in ops:
        if kind == "append" and not args[3]:
            events.extend(args[1])
            nodes.extend(args[2])
            outcomes.append((None, None))
            continue
        insert()
        outcomes.append((_KINDS[kind](conn, *args), None))
    insert()
    return outcomes


def _apply_alone(conn: sqlite3.Connection, op: Op) -> Outcome:
    kind, args = op
    if kind == "barrier":
        return None, None
    conn.execute("SAVEPOINT op")
    try:
        result = _KINDS[kind](conn, *args)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        if isinstance(exc, OpError):
            return None, (exc.code, str(exc))
        return None, ("error", f"{type(exc).__name__}: {exc}")
    conn.execute("RELEASE op")
    return result, None


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:  # SQLite may have rolled back by itself (e.g. on SQLITE_FULL)
        pass
