"""The run store: one behavioural suite run against MemoryStore and SQLiteStore (with each of its two
writers) under asyncio and trio, plus what only the SQLite store promises — reopening, a free event
loop while it commits, and a file that survives SIGKILL at any moment."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
import typing
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from agentflow.runtime.events import Event, EventBase, LLMDelta, NodeCompleted, RunStarted
from agentflow.runtime.store import (
    DuplicateEventError,
    MemoryStore,
    NodeRecord,
    RunExistsError,
    RunNotFoundError,
    RunRecord,
    RunStore,
    SQLiteStore,
    StoreClosedError,
    StoreError,
    StoreVersionError,
    WorkflowRecord,
    open_store,
)
from agentflow.runtime.store.base import SCHEMA_VERSION
from tests.loop_turns import counting_loop_turns

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]
DAY = 86400.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["memory", "sqlite", "sqlite-thread"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    s: RunStore
    if request.param == "memory":
        s = MemoryStore()
    else:  # SQLite with its default writer (a child process), and with the writer thread
        s = SQLiteStore(tmp_path / "runs.db", writer="thread" if request.param == "sqlite-thread" else None)
    yield s
    await s.aclose()


@pytest.fixture(params=["process", "thread"])
def writer(request: pytest.FixtureRequest) -> str:
    """The SQLite store's writer, for the tests of what only that store promises."""
    return str(request.param)


def record(run_id: str, *, workflow: str = "wf", status: str = "pending", created_at: float | None = None,
           **fields: object) -> RunRecord:
    now = time.time() if created_at is None else created_at
    return RunRecord.model_validate({"run_id": run_id, "workflow": workflow, "status": status, "created_at": now,
                                     "updated_at": now, **fields})


def event(run_id: str, seq: int, text: str = "tok") -> EventBase:
    return LLMDelta(run_id=run_id, seq=seq, time=time.time(), node="gen", attempt=1, text=text)


async def test_create_get_update_run(store: RunStore) -> None:
    spec = {"nodes": [{"id": "fetch", "kind": "tool"}]}
    await store.create_run(record("r1", input={"q": "héllo"}, spec=spec, parent_run_id="p0"))
    got = await store.get_run("r1")
    assert got is not None
    assert (got.status, got.input, got.spec, got.parent_run_id, got.version) == (
        "pending", {"q": "héllo"}, spec, "p0", 1)
    assert await store.get_run("missing") is None

    before = got.updated_at
    interrupt = {"node": "approve", "prompt": "ok?", "schema": {"type": "boolean"}}
    await store.update_run("r1", status="interrupted", interrupt=interrupt)
    got = await store.get_run("r1")
    assert got is not None and got.status == "interrupted" and got.interrupt == interrupt
    assert got.updated_at >= before
    await store.update_run("r1", status="completed", output={"answer": 42}, interrupt=None, updated_at=123.0)
    got = await store.get_run("r1")
    assert got is not None and (got.status, got.output, got.interrupt, got.updated_at) == (
        "completed", {"answer": 42}, None, 123.0)


async def test_bad_run_writes_raise(store: RunStore) -> None:
    await store.create_run(record("r1"))
    with pytest.raises(RunExistsError):
        await store.create_run(record("r1"))
    with pytest.raises(RunNotFoundError):
        await store.update_run("nope", status="running")
    with pytest.raises(ValueError):
        await store.update_run("r1", status="bogus")
    with pytest.raises(ValueError):
        await store.update_run("r1", created_at=1.0)  # not an updatable field
    with pytest.raises(ValueError):
        await store.append("r1", [event("other-run", 1)])
    got = await store.get_run("r1")
    assert got is not None and got.status == "pending"


async def test_append_is_atomic(store: RunStore) -> None:
    await store.create_run(record("r1"))
    node = NodeRecord("r1", "fetch", "completed", output={"n": 1}, writes=[("docs", [1, 2]), ("count", 2)])
    await store.append("r1", [event("r1", 1), event("r1", 2)], [node], run={"status": "running"})
    got = await store.get_run("r1")
    assert got is not None and got.status == "running"
    assert [e.seq for e in await store.events("r1")] == [1, 2]

    # Seq 2 again: nothing of this append may land — not the new event, node record, or run update.
    bad = NodeRecord("r1", "next", "completed", output="x")
    with pytest.raises(DuplicateEventError):
        await store.append("r1", [event("r1", 3), event("r1", 2)], [bad], run={"status": "failed"})
    got = await store.get_run("r1")
    assert got is not None and got.status == "running"
    assert [e.seq for e in await store.events("r1")] == [1, 2]
    assert [n.path for n in await store.node_records("r1")] == ["fetch"]
    with pytest.raises(DuplicateEventError):  # two of the same seq inside one append
        await store.append("r1", [event("r1", 3), event("r1", 3)])
    assert await store.last_seq("r1") == 2


async def test_events_roundtrip_after_limit_and_last_seq(store: RunStore) -> None:
    await store.create_run(record("r1"))
    assert await store.last_seq("r1") == 0
    assert await store.events("r1") == []
    now = time.time()
    events: list[EventBase] = [RunStarted(run_id="r1", seq=1, time=now, workflow="wf", version=1, input={"a": 1})]
    events += [event("r1", seq, f"t{seq}") for seq in range(2, 11)]
    events.append(NodeCompleted(run_id="r1", seq=11, time=now, node="gen", attempt=2, output={"x": "ü"}))
    await store.append("r1", events[:5])
    await store.append("r1", events[5:])
    await store.append("r2", [event("r2", 1)])  # another run's log stays apart
    assert await store.events("r1") == events
    assert [e.seq for e in await store.events("r1", after=4)] == list(range(5, 12))
    assert [e.seq for e in await store.events("r1", after=4, limit=3)] == [5, 6, 7]
    assert await store.events("r1", after=11) == []
    assert await store.last_seq("r1") == 11
    assert await store.last_seq("r2") == 1


def _sample(annotation: object, name: str) -> object:
    """A value of a field's type, for building one event of every kind with every field set."""
    text = str(annotation)
    if "dict" in text:
        return {"type": "object", "title": name}
    if annotation is bool:
        return True
    if annotation is int or "int" in text:
        return 2
    if annotation is float:
        return 0.25
    if annotation is str or "str" in text:
        return f"{name}-ü"
    return {"nested": [1, "two", None, {"three": 3.5}], "field": name}  # Any


async def test_every_event_kind_roundtrips(store: RunStore) -> None:
    """Each kind of event comes back equal, field for field and as JSON, however the store keeps it."""
    kinds = [typing.get_args(member)[0] if typing.get_args(member) else member
             for member in typing.get_args(typing.get_args(Event)[0])]
    assert len(kinds) >= 15
    await store.create_run(record("r1"))
    sent = []
    for seq, kind in enumerate(kinds, start=1):
        fields = {name: _sample(info.annotation, name) for name, info in kind.model_fields.items()
                  if name != "event"}
        fields.update(run_id="r1", seq=seq, time=1700000000.5 + seq, node=f"n{seq}", attempt=seq)
        sent.append(kind(**fields))
    for i, one in enumerate(sent):  # checkpoint-shaped writes (one event, one node record), as a run makes them
        pending = store.append_soon("r1", [one], [NodeRecord("r1", f"n{i}", "completed", output=i)])
        await pending.wait()
    got = await store.events("r1")
    assert [type(e) for e in got] == kinds
    assert got == sent
    assert [e.model_dump_json() for e in got] == [e.model_dump_json() for e in sent]
    with pytest.raises(ValueError, match="r2"):
        store.append_soon("r1", [event("r2", 99)], [])
    with pytest.raises(ValueError, match="r2"):
        store.append_soon("r1", [event("r1", 99)], [NodeRecord("r2", "x", "completed")])
    assert await store.last_seq("r1") == len(kinds)
    assert [r.path for r in await store.node_records("r1")] == [f"n{i}" for i in range(len(kinds))]


async def test_node_records_in_order(store: RunStore) -> None:
    for run_id in ("a", "b"):
        await store.create_run(record(run_id))
    paths = ["fetch", "items[0].fetch", "items[1].fetch", "refine#2.draft", "route"]
    for i, path in enumerate(paths):
        for run_id in ("a", "b"):
            kind = "decision" if path == "route" else "completed"
            await store.append(run_id, nodes=[NodeRecord(run_id, path, kind, attempt=i + 1, output={"i": i},
                                                         writes=[("k", i), ("log", [path])])])
    for run_id in ("a", "b"):
        records = await store.node_records(run_id)
        assert [r.path for r in records] == paths
        assert [r.seq for r in records] == sorted(r.seq for r in records)
        assert len({r.seq for r in records}) == len(paths) and min(r.seq for r in records) > 0
        assert records[-1].kind == "decision"
        assert records[3] == NodeRecord(run_id, "refine#2.draft", "completed", 4, {"i": 3},
                                        [("k", 3), ("log", ["refine#2.draft"])], records[3].seq)
    a, b = await store.node_records("a"), await store.node_records("b")
    assert a[0].seq < b[0].seq < a[1].seq  # one global insertion order across runs
    assert await store.node_records("none") == []


async def test_unfinished_runs(store: RunStore) -> None:
    statuses = ["running", "completed", "pending", "interrupted", "failed", "cancelled", "running"]
    for i, status in enumerate(statuses):
        await store.create_run(record(f"r{i}", status=status, created_at=1000.0 + i))
    assert [r.run_id for r in await store.unfinished_runs()] == ["r0", "r2", "r6"]


async def test_list_runs_filters_and_pagination(store: RunStore) -> None:
    statuses = ["running", "completed", "failed", "pending"]
    runs = [record(f"r{i:02d}", workflow="ab"[i % 2], status=statuses[i % 4], created_at=1000.0 + i // 3)
            for i in range(23)]  # ties in created_at: the order must still be total
    for run in reversed(runs):
        await store.create_run(run)
    newest_first = [r.run_id for r in sorted(runs, key=lambda r: (r.created_at, r.run_id), reverse=True)]

    async def all_pages(limit: int, **filters: str) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await store.list_runs(limit=limit, cursor=cursor, **filters)
            assert len(page) <= limit
            ids += [r.run_id for r in page]
            if cursor is None:
                return ids

    assert await all_pages(5) == newest_first
    assert await all_pages(23) == newest_first
    by_filter = {"a": [i for i in newest_first if int(i[1:]) % 2 == 0]}
    assert await all_pages(4, workflow="a") == by_filter["a"]
    completed = [i for i in newest_first if statuses[int(i[1:]) % 4] == "completed"]
    assert await all_pages(2, status="completed") == completed
    assert await all_pages(3, status="completed", workflow="b") == [i for i in completed if int(i[1:]) % 2 == 1]
    page, cursor = await store.list_runs(status="interrupted")
    assert (page, cursor) == ([], None)
    with pytest.raises(ValueError):
        await store.list_runs(cursor="not a cursor")


async def test_list_runs_by_tenant(store: RunStore) -> None:
    for i in range(9):
        await store.create_run(record(f"t{i}", tenant="acme" if i % 3 == 0 else "other" if i % 3 == 1 else None,
                                      created_at=2000.0 + i))
    page, _ = await store.list_runs(tenant="acme")
    assert [r.run_id for r in page] == ["t6", "t3", "t0"]
    assert all(r.tenant == "acme" for r in page)
    assert (await store.get_run("t2")).tenant is None  # type: ignore[union-attr]
    # runs stored without a tenant (the library, the CLI) are the default tenant's
    await store.create_run(record("named-default", tenant="default", created_at=2010.0))
    page, cursor = await store.list_runs(tenant="default", limit=2)
    rest, _ = await store.list_runs(tenant="default", cursor=cursor)
    assert [r.run_id for r in page + rest] == ["named-default", "t8", "t5", "t2"]


async def test_purge_removes_only_old_finished_runs(store: RunStore) -> None:
    now = time.time()
    cases = {"old_done": ("completed", now - 10 * DAY), "old_failed": ("failed", now - 6 * DAY),
             "old_running": ("running", now - 10 * DAY), "old_waiting": ("interrupted", now - 10 * DAY),
             "new_done": ("completed", now - 1 * DAY)}
    for run_id, (status, updated) in cases.items():
        await store.create_run(record(run_id, created_at=updated - 60))
        await store.append(run_id, [event(run_id, 1), event(run_id, 2), event(run_id, 3)],
                           [NodeRecord(run_id, "n", "completed")], run={"status": status, "updated_at": updated})
    assert await store.purge(events_older_than_days=5) == 2 * (3 + 1)
    for run_id in cases:
        purged = run_id in ("old_done", "old_failed")
        assert len(await store.events(run_id)) == (0 if purged else 3)
        assert len(await store.node_records(run_id)) == (0 if purged else 1)
        assert await store.get_run(run_id) is not None  # the run row itself stays
    assert await store.purge(events_older_than_days=5) == 0


async def test_delete_run(store: RunStore) -> None:
    for run_id in ("a", "b"):
        await store.create_run(record(run_id))
        await store.append(run_id, [event(run_id, 1)], [NodeRecord(run_id, "n", "completed")])
    await store.delete_run("a")
    await store.delete_run("never-existed")
    assert await store.get_run("a") is None
    assert await store.events("a") == [] and await store.node_records("a") == []
    assert len(await store.events("b")) == 1 and len(await store.node_records("b")) == 1


async def test_append_nowait_then_flush_and_errors_surface(store: RunStore) -> None:
    await store.create_run(record("r1"))
    for seq in range(1, 201):
        store.append_nowait("r1", [event("r1", seq)], [NodeRecord("r1", f"n{seq}", "completed", output=seq)])
    store.append_nowait("r1", run={"status": "running"})
    await store.flush()
    assert await store.last_seq("r1") == 200
    assert [n.output for n in await store.node_records("r1")] == list(range(1, 201))
    got = await store.get_run("r1")
    assert got is not None and got.status == "running"

    store.append_nowait("r1", [event("r1", 200)])  # duplicate: the error waits for the next awaited call
    with pytest.raises(DuplicateEventError):
        await store.flush()
    await store.flush()  # raised once, then cleared
    store.append_nowait("r1", run={"status": "completed"}, events=[event("r1", 5)])
    with pytest.raises(DuplicateEventError):
        await store.append("r1", [event("r1", 201)])
    assert await store.last_seq("r1") == 201  # the awaited append itself committed
    got = await store.get_run("r1")
    assert got is not None and got.status == "running"
    store.append_nowait("ghost", run={"status": "running"})
    assert await store.get_run("r1") is not None  # reads are not where a write's error surfaces
    with pytest.raises(RunNotFoundError):
        await store.flush()


async def test_one_failing_write_does_not_fail_its_batch(store: RunStore) -> None:
    for i in range(20):
        await store.create_run(record(f"r{i}"))
    await store.append("r7", [event("r7", 1)])
    errors: dict[str, BaseException] = {}

    async def one(run_id: str) -> None:
        try:
            await store.append(run_id, [event(run_id, 1)], [NodeRecord(run_id, "n", "completed")])
        except DuplicateEventError as exc:
            errors[run_id] = exc

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(one, f"r{i}")
    assert list(errors) == ["r7"]
    for i in range(20):
        assert len(await store.node_records(f"r{i}")) == (0 if i == 7 else 1)


async def test_returns_copies(store: RunStore) -> None:
    run = record("r1", input={"docs": [1]})
    await store.create_run(run)
    run.input["docs"].append(2)
    got = await store.get_run("r1")
    assert got is not None and got.input == {"docs": [1]}
    got.input["docs"].append(3)
    node = NodeRecord("r1", "n", "completed", output={"x": [1]}, writes=[("k", {"v": 1})])
    store.append_nowait("r1", nodes=[node])
    node.output["x"].append(2)
    node.writes[0][1]["v"] = 2
    (stored,) = await store.node_records("r1")
    assert (stored.output, stored.writes, node.seq) == ({"x": [1]}, [("k", {"v": 1})], 0)
    again = await store.get_run("r1")
    assert again is not None and again.input == {"docs": [1]}


async def test_closed_store_refuses(store: RunStore) -> None:
    await store.create_run(record("r1"))
    store.append_nowait("r1", [event("r1", 1)])
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(StoreClosedError):
        await store.append("r1", [event("r1", 2)])
    with pytest.raises(StoreClosedError):
        store.append_nowait("r1", [event("r1", 2)])
    with pytest.raises(StoreClosedError):
        await store.get_run("r1")


# ---- SQLite only --------------------------------------------------------------------------------------------

async def test_reopen_sees_everything(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, writer=writer)
    await store.create_run(record("r1", input={"q": 1}))
    await store.create_run(record("r2", status="running"))
    store.append_nowait("r1", [event("r1", 1)], [NodeRecord("r1", "a", "completed", output="A", writes=[("s", 1)])])
    store.append_nowait("r1", [event("r1", 2)], run={"status": "completed", "output": "done"})
    await store.aclose()  # drains what append_nowait queued

    store = SQLiteStore(path, writer=writer)
    store.append_nowait("r2", [event("r2", 1)])
    store.close_sync()

    store = SQLiteStore(path, writer=writer)
    try:
        r1 = await store.get_run("r1")
        assert r1 is not None and (r1.status, r1.output, r1.input) == ("completed", "done", {"q": 1})
        assert [e.seq for e in await store.events("r1")] == [1, 2]
        assert [(n.path, n.output, n.writes) for n in await store.node_records("r1")] == [("a", "A", [("s", 1)])]
        assert [r.run_id for r in await store.unfinished_runs()] == ["r2"]
        assert await store.last_seq("r2") == 1
    finally:
        await store.aclose()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_retention_days_purges_at_open(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "runs.db"
    store = SQLiteStore(path, writer=writer)
    for run_id, status in (("old", "completed"), ("live", "running")):
        await store.create_run(record(run_id))
        await store.append(run_id, [event(run_id, 1)], run={"status": status, "updated_at": time.time() - 30 * DAY})
    await store.aclose()
    store = SQLiteStore(path, retention_days=7, writer=writer)
    try:
        await store.update_run("live", status="running")  # the writer purges before its first batch
        assert await store.events("old") == []
        assert len(await store.events("live")) == 1
    finally:
        await store.aclose()


_VERSION_1_SCHEMA = """
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, version INTEGER NOT NULL, status TEXT NOT NULL,
    input TEXT, output TEXT, error TEXT, spec TEXT, parent_run_id TEXT, interrupt TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE nodes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
    attempt INTEGER NOT NULL, output TEXT, writes TEXT NOT NULL
);
CREATE TABLE events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, time REAL NOT NULL, node TEXT,
    data TEXT NOT NULL, PRIMARY KEY (run_id, seq)
);
INSERT INTO runs VALUES ('old', 'wf', 1, 'completed', '{"a": 1}', NULL, NULL, NULL, NULL, NULL, 5.0, 6.0);
PRAGMA user_version = 1;
"""


async def test_workflow_versions_are_stored(store: RunStore) -> None:
    assert await store.workflows() == []
    for name, version in (("b", 1), ("a", 2), ("a", 1)):
        await store.put_workflow(WorkflowRecord(name, version, {"name": name, "v": version}, f"name: {name}", 1.0))
    await store.put_workflow(WorkflowRecord("b", 1, {"name": "b", "v": "again"}, None, 2.0))  # replaces
    stored = await store.workflows()
    assert [(r.name, r.version) for r in stored] == [("a", 1), ("a", 2), ("b", 1)]
    assert stored[2].spec == {"name": "b", "v": "again"} and stored[2].source is None
    stored[0].spec["v"] = "changed by the caller"
    assert (await store.workflows())[0].spec["v"] == 1
    await store.delete_workflow("a")
    await store.delete_workflow("nothing")
    assert [r.name for r in await store.workflows()] == ["b"]


async def test_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_1_SCHEMA)
    conn.close()
    store = SQLiteStore(path)
    try:
        old = await store.get_run("old")
        assert old is not None and old.input == {"a": 1} and old.tenant is None
        await store.create_run(record("new", tenant="acme"))
        assert [r.run_id for r in (await store.list_runs(tenant="acme"))[0]] == ["new"]
    finally:
        await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    conn.close()


def test_newer_schema_and_foreign_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    SQLiteStore(path).close_sync()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreVersionError, match="newer agentflow"):
        SQLiteStore(path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        SQLiteStore(junk)


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store(None), MemoryStore)
    assert isinstance(open_store(":memory:"), MemoryStore)
    memory = MemoryStore()
    assert open_store(memory) is memory
    sqlite_store = open_store(tmp_path / "deep" / "dir" / "runs.db")
    assert isinstance(sqlite_store, SQLiteStore) and (tmp_path / "deep" / "dir" / "runs.db").exists()
    sqlite_store.close_sync()
    sqlite_store.close_sync()


async def test_loop_runs_while_the_writer_commits(tmp_path: Path, writer: str) -> None:
    store = SQLiteStore(tmp_path / "runs.db", writer=writer)
    await store.create_run(record("r1"))
    events = [event("r1", seq, "x" * 64) for seq in range(1, 5001)]
    async with counting_loop_turns() as turns:
        before = turns.count
        await store.append("r1", events)  # the commit runs in the writer
        during = turns.count - before
    try:
        assert during > 0, "the event loop did not run while the writer committed"
        assert await store.last_seq("r1") == 5000
    finally:
        await store.aclose()


CHILD = r"""
import sys, time, anyio
from agentflow.runtime.events import LLMDelta
from agentflow.runtime.store import NodeRecord, RunRecord, SQLiteStore

async def writer(store, run_id):
    seq = await store.last_seq(run_id)
    i = 0
    while True:
        i += 1
        n = 1 + i % 5
        events = [LLMDelta(run_id=run_id, seq=seq + k, time=time.time(), node="gen", text="x" * 40)
                  for k in range(1, n + 1)]
        seq += n
        node = NodeRecord(run_id, f"gen#{i}", "completed", output={"last": seq})
        await store.append(run_id, events, [node], run={"status": "running"})
        print(run_id, seq, flush=True)

async def main(path, kind):
    store = SQLiteStore(path, writer=kind)
    runs = ["a", "b", "c"]
    for run_id in runs:
        if await store.get_run(run_id) is None:
            now = time.time()
            await store.create_run(RunRecord(run_id=run_id, workflow="crash", created_at=now, updated_at=now))
    print("ready", flush=True)
    async with anyio.create_task_group() as tg:
        for run_id in runs:
            tg.start_soon(writer, store, run_id)

anyio.run(main, sys.argv[1], sys.argv[2])
"""


def _check_after_kill(path: Path, acknowledged: dict[str, int]) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for run_id in ("a", "b", "c"):
            seqs = [s for (s,) in conn.execute("SELECT seq FROM events WHERE run_id = ? ORDER BY seq", (run_id,))]
            assert seqs == list(range(1, len(seqs) + 1)), f"gap in run {run_id}"
            assert len(seqs) >= acknowledged.get(run_id, 0), f"run {run_id} lost an acknowledged append"
            outputs = [o for (o,) in conn.execute("SELECT output FROM nodes WHERE run_id = ? ORDER BY id", (run_id,))]
            last = json.loads(outputs[-1])["last"] if outputs else 0
            assert last == len(seqs), f"run {run_id}: events and node records of one append were split"
    finally:
        conn.close()


def test_sigkill_leaves_a_consistent_database(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "crash.db"
    rng = random.Random(20240611)
    acknowledged: dict[str, int] = {}
    for attempt in range(5):
        stderr_path = tmp_path / f"child{attempt}.err"
        with stderr_path.open("w") as stderr:
            child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), writer], cwd=ROOT,
                                     stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == "ready\n", stderr_path.read_text()
            lines: list[str] = []
            reader = threading.Thread(target=lambda out=child.stdout, into=lines: into.extend(out.readlines()))
            reader.start()
            time.sleep(rng.uniform(0.05, 0.3))
            child.kill()
            child.wait(timeout=30)
            reader.join(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
            child.stdout.close()
        for line in lines:
            if line.endswith("\n"):  # a line cut by the kill acknowledges nothing
                run_id, seq = line.split()
                acknowledged[run_id] = max(acknowledged.get(run_id, 0), int(seq))
        assert acknowledged, "the child never committed anything"
        _check_after_kill(path, acknowledged)
    SQLiteStore(path).close_sync()  # and it still opens as a store


async def test_unawaited_writes_reach_the_file_without_any_awaited_call(tmp_path: Path, writer: str) -> None:
    """``append_nowait`` lingers briefly for company, but is written on its own soon after: a second
    connection sees it while the writer is never woken by an awaited call."""
    store = SQLiteStore(tmp_path / "runs.db", writer=writer)
    try:
        await store.create_run(record("r1"))
        store.append_nowait("r1", [event("r1", 1), event("r1", 2)])
        seen = 0
        with sqlite3.connect(tmp_path / "runs.db") as conn:
            for _ in range(500):  # up to 5 s; the linger is a few tens of ms
                seen = conn.execute("SELECT COUNT(*) FROM events WHERE run_id = 'r1'").fetchone()[0]
                if seen == 2:
                    break
                time.sleep(0.01)
        assert seen == 2
    finally:
        await store.aclose()
