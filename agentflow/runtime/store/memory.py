"""``MemoryStore``: the run store in process memory (tests, the in-memory benchmark); same semantics."""

from __future__ import annotations

import bisect
import copy
import dataclasses
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread

from agentflow.runtime.errors import DuplicateEventError, RunExistsError, RunNotFoundError, StoreClosedError, StoreError
from agentflow.runtime.events import EventBase
from agentflow.runtime.store.base import (
    DEFAULT_TENANT,
    FINISHED,
    UNFINISHED,
    NodeRecord,
    PendingWrite,
    RunRecord,
    RunStore,
    WorkflowRecord,
    _decode_cursor,
    _dumps,
    _encode_cursor,
    _loads,
    _run_columns,
    _run_from_row,
    _run_row,
    _Write,
)

log = logging.getLogger(__name__)

# ---- MemoryStore ------------------------------------------------------------------------------------------

class _EventLog:
    """One run's events, sorted by seq. Each is kept as ``(class, field values)`` and rebuilt on read:
    a frozen model is an object, its ``__dict__`` and its fields-set, about 1 KB and three objects the
    garbage collector tracks, while the tuple is a fifth of that and, holding plain values, is
    untracked after the collector's first look. A long-lived store holds thousands of events per run;
    kept as models they made every later allocation and collection slower."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.data: dict[int, tuple[type[EventBase], tuple[Any, ...]]] = {}

    def insert(self, seq: int, event: EventBase) -> None:
        if not self.seqs or seq > self.seqs[-1]:
            self.seqs.append(seq)
        else:
            bisect.insort(self.seqs, seq)
        self.data[seq] = (type(event), tuple(event.__dict__.values()))

    def since(self, after: int, limit: int | None) -> list[EventBase]:
        start = bisect.bisect_right(self.seqs, after)
        stop = None if limit is None else start + limit
        return [_rebuild(*self.data[seq]) for seq in self.seqs[start:stop]]


def _rebuild(cls: type[EventBase], values: tuple[Any, ...]) -> EventBase:
    """The event ``_EventLog.insert`` took apart (its values were validated then; they are not again)."""
    return cls.model_construct(**dict(zip(cls.model_fields, values, strict=True)))


_SCALARS = (str, int, float, bool, type(None))


def _json_copy(value: Any) -> Any:
    """A copy of JSON-shaped data as SQLite would give it back (tuples become lists; anything else
    goes through JSON with ``default=str``), without the text round trip for the common shapes."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list or kind is tuple:
        return [_json_copy(item) for item in value]
    if kind is dict and all(type(key) is str for key in value):
        return {key: _json_copy(item) for key, item in value.items()}
    return _loads(_dumps(value))


_NodeRow = tuple[str, str, int, Any, tuple[tuple[str, Any], ...]]
"""A node record as the memory store keeps it: ``(path, kind, attempt, output, writes)``, its values
copied as JSON data, plus the store's ``seq`` at the end once stored. A tuple, for the reason
``_EventLog`` keeps tuples."""


def _node_row(node: NodeRecord) -> _NodeRow:
    return (node.path, node.kind, node.attempt, _json_copy(node.output),
            tuple([(key, _json_copy(value)) for key, value in node.writes]))


def _rows(run_id: str, events: Sequence[EventBase], nodes: Sequence[NodeRecord]) -> list[_NodeRow]:
    """The node records as rows, after checking that every record belongs to ``run_id``."""
    for event in events:
        if event.run_id != run_id:
            raise _stray(run_id, event.run_id)
    rows = []
    for node in nodes:  # a plain loop: on a checkpoint's path, cheaper than comprehensions
        if node.run_id != run_id:
            raise _stray(run_id, node.run_id)
        rows.append(_node_row(node))
    return rows


def _stray(run_id: str, other: str) -> ValueError:
    return ValueError(f"append({run_id!r}) got a record of run {other!r}")


def _node_out(run_id: str, row: tuple[Any, ...]) -> NodeRecord:
    """A stored row as a fresh record (copied again: the caller may change what it gets)."""
    path, kind, attempt, output, writes, seq = row
    return NodeRecord(run_id, path, kind, attempt, _json_copy(output),
                      [(key, _json_copy(value)) for key, value in writes], seq)


class _Applied(PendingWrite):
    """A MemoryStore write is applied when it is queued: done at once, with its error if it failed."""

    __slots__ = ("_error", "_store")

    def __init__(self, store: MemoryStore, error: BaseException | None) -> None:
        self._store, self._error = store, error

    def done(self) -> bool:
        return True

    def error(self) -> BaseException | None:
        return self._error

    async def wait(self) -> None:
        await self._store._settle()
        if self._error is not None:
            raise self._error


class MemoryStore(RunStore):
    """The same semantics in process memory, for tests and the in-memory benchmark. Runs and node
    records are copied in and out as JSON data (what SQLite would give back), so callers never share
    objects with the store; events are frozen models, kept as their field values (no JSON: the
    per-event text would dominate an in-memory node's cost). Every awaited call is a checkpoint (it
    yields once), like the SQLite store's."""

    def __init__(self) -> None:
        super().__init__()
        self._runs: dict[str, dict[str, Any]] = {}
        self._events: dict[str, _EventLog] = {}
        self._nodes: dict[str, list[tuple[Any, ...]]] = {}  # run id -> _NodeRow + (seq,), in seq order
        self._node_seq = itertools.count(1)
        self._workflows: dict[tuple[str, int], WorkflowRecord] = {}
        self._closed = False
        self._committed = _Applied(self, None)  # what every successful append_soon returns

    @staticmethod
    def _prepare(run_id: str, events: Sequence[EventBase], nodes: Sequence[NodeRecord],
                 run: dict[str, Any] | None) -> _Write[Any]:
        """Like SQLite's, but events are kept as objects and node records are copied as data instead of
        going through JSON text."""
        return _Write(run_id, list(events), _rows(run_id, events, nodes), _run_columns(run) if run else {})

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the run store is closed")

    async def _settle(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._deferred.raise_if_any()

    async def _before_read(self) -> None:
        """A read: a checkpoint like every call, but others' failed ``append_nowait`` writes are not its errors."""
        self._check_open()
        await anyio.lowlevel.checkpoint()

    def _apply(self, write: _Write[EventBase]) -> None:
        """All checks before any change, so a failing write leaves nothing behind."""
        if len(write.events) == 1 and not write.run:
            self._checkpoint(write.run_id, write.events[0], write.nodes)
            return
        if write.run and write.run_id not in self._runs:
            raise RunNotFoundError(f"run {write.run_id!r} not found")
        log_ = self._events.get(write.run_id)
        seqs = [event.seq for event in write.events]
        if len(set(seqs)) != len(seqs) or (log_ is not None and any(s in log_.data for s in seqs)):
            raise DuplicateEventError(f"run {write.run_id!r}: event seq already stored (seqs {seqs[:5]}...)")
        if write.events:
            log_ = self._events.setdefault(write.run_id, _EventLog())
            for event in write.events:
                log_.insert(event.seq, event)
        self._add_nodes(write.run_id, write.nodes)
        if write.run:
            self._runs[write.run_id].update(write.run)

    def _checkpoint(self, run_id: str, event: EventBase, rows: Sequence[_NodeRow]) -> None:
        """One event with its node records (a node's checkpoint): the hot path of ``append_soon``."""
        log_ = self._events.get(run_id)
        if log_ is None:
            log_ = self._events[run_id] = _EventLog()
        elif event.seq in log_.data:
            raise DuplicateEventError(f"run {run_id!r}: event seq {event.seq} already stored")
        log_.insert(event.seq, event)
        self._add_nodes(run_id, rows)

    def _add_nodes(self, run_id: str, rows: Sequence[_NodeRow]) -> None:
        if rows:
            stored = self._nodes.get(run_id)
            if stored is None:
                stored = self._nodes[run_id] = []
            for row in rows:
                stored.append((*row, next(self._node_seq)))

    async def create_run(self, run: RunRecord) -> None:
        self._check_open()
        if run.run_id in self._runs:
            raise RunExistsError(f"run {run.run_id!r} already exists")
        self._runs[run.run_id] = _run_row(run)
        await self._settle()

    async def update_run(self, run_id: str, **fields: Any) -> None:
        await self.append(run_id, run=fields)

    async def append(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                     run: dict[str, Any] | None = None) -> None:
        self._check_open()
        self._apply(self._prepare(run_id, events, nodes, run))
        await self._settle()

    def append_soon(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                    run: dict[str, Any] | None = None) -> PendingWrite:
        self._check_open()
        try:
            if len(events) == 1 and not run:  # a node's checkpoint: no _Write, nothing to serialise
                self._checkpoint(run_id, events[0], _rows(run_id, events, nodes))
            else:
                self._apply(self._prepare(run_id, events, nodes, run))
        except (StoreError, RunNotFoundError) as exc:
            return _Applied(self, exc)
        return self._committed

    def append_nowait(self, run_id: str, events: Sequence[EventBase] = (), nodes: Sequence[NodeRecord] = (),
                      run: dict[str, Any] | None = None) -> None:
        if self._closed:
            raise StoreClosedError("the run store is closed")
        if not nodes and not run:  # the hot path: a few events, nothing to serialise
            if len(events) == 1:  # the commonest: one event to a known log (else the checks below, in order)
                event = events[0]
                log_ = self._events.get(run_id)
                if log_ is not None and event.run_id == run_id and event.seq not in log_.data:
                    log_.insert(event.seq, event)
                    return
            self._append_events(run_id, events)
            return
        write = self._prepare(run_id, events, nodes, run)
        try:
            self._apply(write)
        except (StoreError, RunNotFoundError) as exc:  # deferred like SQLiteStore's, where the database finds it later
            log.error("append_nowait(%r) failed: %s", run_id, exc)
            self._deferred.add(exc)

    def _append_events(self, run_id: str, events: Sequence[EventBase]) -> None:
        log_ = self._events.get(run_id)
        if log_ is None:
            log_ = self._events[run_id] = _EventLog()
        for event in events:
            if event.run_id != run_id:
                raise ValueError(f"append({run_id!r}) got a record of run {event.run_id!r}")
            if event.seq in log_.data:
                exc = DuplicateEventError(f"run {run_id!r}: event seq {event.seq} already stored")
                log.error("append_nowait(%r) failed: %s", run_id, exc)
                self._deferred.add(exc)
                return
        for event in events:
            log_.insert(event.seq, event)

    async def flush(self) -> None:
        self._check_open()
        await self._settle()

    async def get_run(self, run_id: str) -> RunRecord | None:
        await self._before_read()
        row = self._runs.get(run_id)
        return None if row is None else _run_from_row(row)

    async def list_runs(self, *, status: str | None = None, workflow: str | None = None, limit: int = 50,
                        cursor: str | None = None, tenant: str | None = None) -> tuple[list[RunRecord], str | None]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        after = _decode_cursor(cursor) if cursor else None
        await self._before_read()
        rows = [row for row in self._runs.values()
                if (status is None or row["status"] == status) and (workflow is None or row["workflow"] == workflow)
                and (tenant is None or (row["tenant"] or DEFAULT_TENANT) == tenant)
                and (after is None or (row["created_at"], row["run_id"]) < after)]
        rows.sort(key=lambda row: (row["created_at"], row["run_id"]), reverse=True)
        runs = [_run_from_row(row) for row in rows[:limit]]
        return runs, (_encode_cursor(runs[-1]) if len(rows) > limit else None)

    async def unfinished_runs(self) -> list[RunRecord]:
        await self._before_read()
        rows = sorted((row for row in self._runs.values() if row["status"] in UNFINISHED),
                      key=lambda row: (row["created_at"], row["run_id"]))
        return [_run_from_row(row) for row in rows]

    async def node_records(self, run_id: str) -> list[NodeRecord]:
        await self._before_read()
        return [_node_out(run_id, row) for row in self._nodes.get(run_id, [])]

    async def events(self, run_id: str, after: int = 0, limit: int | None = None) -> list[EventBase]:
        await self._before_read()
        log_ = self._events.get(run_id)
        return [] if log_ is None else log_.since(after, limit)

    async def last_seq(self, run_id: str) -> int:
        await self._before_read()
        log_ = self._events.get(run_id)
        return log_.seqs[-1] if log_ and log_.seqs else 0

    async def delete_run(self, run_id: str) -> None:
        self._check_open()
        self._runs.pop(run_id, None)
        self._events.pop(run_id, None)
        self._nodes.pop(run_id, None)
        await self._settle()

    async def purge(self, *, events_older_than_days: float) -> int:
        self._check_open()
        cutoff = time.time() - events_older_than_days * 86400.0
        deleted = 0
        for run_id, row in self._runs.items():
            if row["status"] in FINISHED and row["updated_at"] < cutoff:
                log_ = self._events.pop(run_id, None)
                deleted += len(log_.seqs) if log_ else 0
                deleted += len(self._nodes.pop(run_id, []))
        await self._settle()
        return deleted

    async def put_workflow(self, record: WorkflowRecord) -> None:
        self._check_open()
        self._workflows[(record.name, record.version)] = dataclasses.replace(record, spec=copy.deepcopy(record.spec))

    async def workflows(self) -> list[WorkflowRecord]:
        self._check_open()
        return [dataclasses.replace(r, spec=copy.deepcopy(r.spec)) for _, r in sorted(self._workflows.items())]

    async def delete_workflow(self, name: str) -> None:
        self._check_open()
        for key in [key for key in self._workflows if key[0] == name]:
            del self._workflows[key]

    async def aclose(self) -> None:
        self.close_sync()
        await anyio.lowlevel.checkpoint()

    def close_sync(self) -> None:
        self._closed = True
        self._close_claims()
        self._deferred.raise_if_any()
