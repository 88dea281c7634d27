"""Run store: runs, per-node checkpoints and the event log — durable in SQLite by default.

Three kinds of rows:

- **runs**: one per run (status, input, output, error, and the workflow IR as JSON so a restarted
  process can resume without the registry).
- **node records**: one per completed/failed node or decision, holding that node's output and the
  state writes it applied — never the whole state. Resuming replays the writes in ``seq`` order, so a
  checkpoint costs the size of one node's result instead of the whole state at every step.
- **events**: the run's event log keyed by ``(run_id, seq)``, the SSE ids; a duplicate seq raises
  ``DuplicateEventError`` because it means the orchestrator numbered two events alike.

Write path of ``SQLiteStore`` (the event loop never touches the database): ``append`` serialises
its rows on the caller's thread — a snapshot, so the caller may mutate its objects right after —
queues one op (plain values: ``sqlite_ops``), and waits on an ``anyio.Event``. One writer owns the
write connection and drains everything queued into ONE transaction (group commit: one WAL append,
and under ``synchronous=FULL`` one fsync, for however many runs wrote meanwhile); if an op fails (a
duplicate seq), the batch is replayed with each op in its own SAVEPOINT, so it rolls back alone and
the others commit. The writer is a child process by default (``sqlite_process``: its answers come
back on a pipe the event loop watches) or a thread (``sqlite_writer``: it wakes each waiter through
its loop's thread-safe "call soon", asyncio's ``call_soon_threadsafe`` or trio's ``run_sync_soon``).
Reads wait for the writes queued before them, then run on a pooled read connection in a worker
thread; WAL lets them proceed while the writer commits.

Ordering and errors: ops commit in FIFO order, so an awaited call returning means it and everything
queued before it (``append_nowait`` included) is committed. An awaited op raises its own error; an
``append_nowait`` error is logged at once and raised by the next awaited write on the store (or
``flush``/``aclose``), never by a read: a reader (an API client looking at another run) is not the
one to tell. Cancelling an awaited write does not withdraw it: it is queued and will commit.
``append_soon`` queues like ``append_nowait`` but returns a ``PendingWrite`` to await later, with the
op's own error.

Errors (defined in ``agentflow.runtime.errors``, re-exported by this package): ``StoreError`` ← ``StoreClosedError``,
``StoreVersionError``, ``RunExistsError``, ``DuplicateEventError``; and ``RunNotFoundError``, the one class
the runtime raises too.
"""

from __future__ import annotations

import abc
import base64
import itertools
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict

from agentflow.runtime.events import EventBase
from agentflow.runtime.store.claims import Claims

log = logging.getLogger(__name__)

DEFAULT_TENANT = "default"
"""The tenant of runs stored without one, and of every server request when the server has no API keys."""


T = TypeVar("T")
RunStatus = Literal["pending", "running", "interrupted", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
UNFINISHED = ("pending", "running")
"""Statuses ``unfinished_runs`` returns; interrupted runs wait for an explicit resume instead."""
SCHEMA_VERSION = 3
"""Stored in ``PRAGMA user_version``; a file with a larger number was written by a newer agentflow.
Version 2 added ``runs.tenant``, version 3 the ``workflows`` table (older files are migrated when opened)."""


class RunRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    workflow: str
    version: int = 1
    status: RunStatus = "pending"
    input: Any = None
    output: Any = None
    error: str | None = None
    spec: dict[str, Any] | None = None
    """The workflow IR as JSON, so a restarted process can resume without the registry."""
    parent_run_id: str | None = None
    interrupt: dict[str, Any] | None = None
    """``{"node": path, "prompt": ..., "schema": ...}`` while the run is interrupted."""
    created_at: float
    updated_at: float
    tenant: str | None = None
    """Who owns the run (the server's API-key tenant); None for runs started in-process."""


@dataclass
class NodeRecord:
    """One per-node checkpoint or decision. Outputs and writes go through JSON (non-JSON values become
    ``str``), so what comes back is what a restarted process would see."""

    run_id: str
    path: str
    """Node path, e.g. ``fetch``, ``items[3].fetch``, ``refine#2.draft``."""
    kind: str
    """``completed`` | ``decision`` | ``failed``."""
    attempt: int = 1
    output: Any = None
    writes: list[tuple[str, Any]] = field(default_factory=list)
    """State writes applied when the node completed, in order; resuming replays them by ``seq``."""
    seq: int = 0
    """Assigned by the store (global insertion order) on the records it returns; the caller's record
    is left untouched."""


@dataclass
class WorkflowRecord:
    """One stored version of a workflow registered over the server's API (so it outlives a restart)."""

    name: str
    version: int
    spec: dict[str, Any]
    """The IR as JSON."""
    source: str | None
    """The YAML it was registered from, if any."""
    created_at: float


@with_config(ConfigDict(extra="forbid"))
class _RunFields(TypedDict, total=False):
    """The fields ``update_run`` / ``append(run=...)`` may change, validated at the edge."""

    workflow: str
    version: int
    status: RunStatus
    input: Any
    output: Any
    error: str | None
    spec: dict[str, Any] | None
    parent_run_id: str | None
    interrupt: dict[str, Any] | None
    updated_at: float


_RUN_FIELDS: TypeAdapter[_RunFields] = TypeAdapter(_RunFields)
_RUN_COLUMNS = ("run_id", "workflow", "version", "status", "input", "output", "error", "spec", "parent_run_id",
                "interrupt", "created_at", "updated_at", "tenant")
_JSON_COLUMNS = ("input", "output", "spec", "interrupt")
EventRow = tuple[str, int, str, float, str | None, str]  # run_id, seq, name, time, node, event JSON
NodeRow = tuple[str, str, str, int, str | None, str]  # run_id, path, kind, attempt, output JSON, writes JSON


# ---- encoding: shared by both stores so they agree on what comes back --------------------------------------

def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _run_row(run: RunRecord) -> dict[str, Any]:
    row = {name: getattr(run, name) for name in _RUN_COLUMNS}
    for name in _JSON_COLUMNS:
        row[name] = _dumps(row[name])
    return row


def _run_from_row(row: Mapping[str, Any] | Sequence[Any]) -> RunRecord:
    data = dict(row) if isinstance(row, Mapping) else dict(zip(_RUN_COLUMNS, row, strict=True))
    for name in _JSON_COLUMNS:
        data[name] = _loads(data[name])
    return RunRecord.model_validate(data)


def _run_columns(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Validated, JSON-encoded column values for a run update; ``updated_at`` defaults to now."""
    checked = dict(_RUN_FIELDS.validate_python(fields))
    checked.setdefault("updated_at", time.time())
    for name in _JSON_COLUMNS:
        if name in checked:
            checked[name] = _dumps(checked[name])
    return checked


def _node_from_row(row: Sequence[Any]) -> NodeRecord:
    seq, run_id, path, kind, attempt, output, writes = row
    return NodeRecord(run_id, path, kind, attempt, _loads(output), [(k, v) for k, v in json.loads(writes)], seq)


def _encode_cursor(run: RunRecord) -> str:
    return base64.urlsafe_b64encode(json.dumps([run.created_at, run.run_id]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, run_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created_at), str(run_id)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid list_runs cursor {cursor!r}") from exc


E = TypeVar("E")


@dataclass(slots=True)
class _Write(Generic[E]):
    """One append, serialised on the caller's thread: the unit applied atomically. ``events`` are rows
    (SQLite) or the frozen event objects themselves (memory)."""

    run_id: str
    events: list[E]
    nodes: list[Any]  # NodeRow tuples (SQLite) or copied NodeRecords (memory)
    run: dict[str, Any]


def _prepare(run_id: str, events: Sequence[EventBase], nodes: Sequence[NodeRecord],
             run: Mapping[str, Any] | None, keep_events: Sequence[EventBase] = ()) -> _Write[Any]:
    """Serialise one append; ``keep_events`` are passed through as objects (the memory store)."""
    for other in itertools.chain((e.run_id for e in events), (e.run_id for e in keep_events),
                                 (n.run_id for n in nodes)):
        if other != run_id:
            raise ValueError(f"append({run_id!r}) got a record of run {other!r}")
    event_rows: list[Any] = [(run_id, e.seq, getattr(e, "event", type(e).__name__), e.time, e.node,
                              e.model_dump_json()) for e in events]
    event_rows.extend(keep_events)
    node_rows = [(run_id, n.path, n.kind, n.attempt, _dumps(n.output),
                  json.dumps(n.writes, ensure_ascii=False, default=str)) for n in nodes]
    return _Write(run_id, event_rows, node_rows, _run_columns(run) if run else {})


class _Deferred:
    """Errors of writes nobody awaited (``append_nowait``), raised by the next awaited write or flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._errors: list[BaseException] = []

    def add(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def raise_if_any(self) -> None:
        if not self._errors:
            return
        with self._lock:
            errors, self._errors = self._errors, []
        if len(errors) > 1:
            log.error("%d more append_nowait writes failed; raising the first", len(errors) - 1)
        raise errors[0]


class PendingWrite(abc.ABC):
    """A queued write: ``done()`` once committed or failed; ``wait()`` returns after the commit or raises
    the write's error (and, like every awaited store call, a pending ``append_nowait`` error)."""

    @abc.abstractmethod
    def done(self) -> bool: ...

    @abc.abstractmethod
    def error(self) -> BaseException | None:
        """The write's own error once ``done()`` (None while in flight or when it committed)."""

    @abc.abstractmethod
    async def wait(self) -> None: ...


class RunStore(abc.ABC):
    """Where runs, per-node checkpoints and event logs live. Async methods are called from an anyio
    event loop (asyncio or trio) and never block it; see the module docstring for the guarantees."""

    def __init__(self) -> None:
        self._deferred = _Deferred()
        self._claims: Claims | None = None

    # -- claims: which process executes a run (see ``claims``) --------------------------------------

    def _make_claims(self) -> Claims:
        return Claims(None)

    def claim(self, run_id: str) -> bool:
        """Take the run for this store's runtime: False when it is taken already (by another process, or
        in this one); see ``claims``."""
        if self._claims is None:
            self._claims = self._make_claims()
        return self._claims.claim(run_id)

    def release(self, run_id: str) -> None:
        """Give up the claim on the run (nothing when this store does not hold it)."""
        if self._claims is not None:
            self._claims.release(run_id)

    def _close_claims(self) -> None:
        if self._claims is not None:
            self._claims.close()

    @abc.abstractmethod
    async def create_run(self, run: RunRecord) -> None:
        """Insert a new run; ``RunExistsError`` if the id is taken."""

    @abc.abstractmethod
    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Change run fields (``updated_at`` defaults to now); ``RunNotFoundError`` for an unknown run."""

    @abc.abstractmethod
    async def append(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                     run: dict[str, Any] | None = None) -> None:
        """Insert events and node records and optionally update run fields, in ONE atomic transaction;
        returns once it is committed."""

    @abc.abstractmethod
    def append_soon(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                    run: dict[str, Any] | None = None) -> PendingWrite:
        """``append`` split in two: queue the write now (FIFO with every other write) and return a handle
        whose ``wait()`` returns once it is committed, or raises its error. The runtime queues a node's
        checkpoint this way and lets the successor prepare while the commit is in flight; the successor
        waits for the handle before it calls anything outside the process."""

    @abc.abstractmethod
    def append_nowait(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                      run: dict[str, Any] | None = None) -> None:
        """``append`` without waiting: FIFO with every other write; its error surfaces on the next awaited
        write or flush."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None: ...

    @abc.abstractmethod
    async def list_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
                        cursor: str | None = None, tenant: str | None = None) -> tuple[list[RunRecord], str | None]:
        """Newest first; the second item is an opaque cursor for the next page, or None after the last.
        Each filter given (``status``, ``workflow``, ``tenant``) must match; runs stored without a tenant
        (started by the library or the CLI) belong to :data:`DEFAULT_TENANT`."""

    @abc.abstractmethod
    async def unfinished_runs(self) -> list[RunRecord]:
        """Pending and running runs (what a restarted process resumes), oldest first."""

    @abc.abstractmethod
    async def node_records(self, run_id: str) -> list[NodeRecord]:
        """The run's checkpoints in ``seq`` (insertion) order."""

    @abc.abstractmethod
    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[EventBase]:
        """Events with ``seq > after``, ascending."""

    @abc.abstractmethod
    async def last_seq(self, run_id: str) -> int:
        """The largest stored event seq of the run, 0 when none."""

    @abc.abstractmethod
    async def delete_run(self, run_id: str) -> None:
        """Delete the run, its events and node records (no error if absent; child runs stay)."""

    @abc.abstractmethod
    async def purge(self, *, events_older_than_days: float) -> int:
        """Delete the event logs AND node records of finished runs last updated more than that many days
        ago (a finished run is never resumed, so its checkpoints are dead weight); the run rows stay.
        Returns the number of event and node rows deleted."""

    @abc.abstractmethod
    async def put_workflow(self, record: WorkflowRecord) -> None:
        """Store a workflow version (replacing one with the same name and version)."""

    @abc.abstractmethod
    async def workflows(self) -> list[WorkflowRecord]:
        """Every stored workflow version, by name then version."""

    @abc.abstractmethod
    async def delete_workflow(self, name: str) -> None:
        """Forget every stored version of ``name`` (no error if none)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Commit everything queued, then close. Idempotent."""

    @abc.abstractmethod
    def close_sync(self) -> None:
        """``aclose`` for atexit and sync code (blocks the calling thread until the queue is drained)."""

    async def __aenter__(self) -> RunStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
