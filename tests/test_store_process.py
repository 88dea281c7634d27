"""The SQLite store's writer process (``sqlite_process`` / ``sqlite_child``): what a child process adds
to the store's promises. It goes when its parent goes, its death fails the waiting writes instead of
hanging them, a write larger than the pipe goes through whole and in order, and the event loop keeps
running while it does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from agentflow.runtime.events import EventBase, LLMDelta
from agentflow.runtime.store import RunRecord, SQLiteStore, StoreClosedError, StoreError
from tests.loop_turns import counting_loop_turns

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def record(run_id: str) -> RunRecord:
    now = time.time()
    return RunRecord(run_id=run_id, workflow="wf", created_at=now, updated_at=now)


def event(run_id: str, seq: int, text: str = "tok") -> EventBase:
    return LLMDelta(run_id=run_id, seq=seq, time=time.time(), node="gen", attempt=1, text=text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its parent, which is gone) counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


PARENT = r"""
import sys, time, anyio
from agentflow.runtime.store import RunRecord, SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    now = time.time()
    await store.create_run(RunRecord(run_id="r", workflow="wf", created_at=now, updated_at=now))
    print(store._writer._proc.pid, flush=True)
    await anyio.sleep(60)

anyio.run(main, sys.argv[1])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_writer_process_goes_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "runs.db")], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert parent.stdout is not None
    try:
        writer_pid = int(parent.stdout.readline())
        assert _alive(writer_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(writer_pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(writer_pid), "the writer process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        parent.stdout.close()
    store = SQLiteStore(tmp_path / "runs.db")  # what the parent committed is there
    try:
        assert store.path.exists()
    finally:
        store.close_sync()


async def test_a_dead_writer_fails_the_waiting_writes(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    await store.create_run(record("r1"))
    os.kill(store._writer._proc.pid, signal.SIGKILL)  # type: ignore[union-attr]
    with pytest.raises(StoreError, match="writer process"):
        await store.append("r1", [event("r1", 1)])
    with pytest.raises(StoreClosedError):  # and it refuses further writes rather than hang them
        store.append_nowait("r1", [event("r1", 2)])
    got = await store.get_run("r1")  # the file is intact: reads go on (a server still answers GETs)
    assert got is not None and got.status == "pending"
    with anyio.fail_after(10):
        await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.get_run("r1")


async def test_a_write_larger_than_the_pipe_goes_through_whole_and_in_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db")
    try:
        await store.create_run(record("r1"))
        big = [event("r1", seq, "x" * 2000) for seq in range(1, 4001)]  # about 9 MB of rows, past any pipe
        async with counting_loop_turns() as turns:
            pending = store.append_soon("r1", big)
            store.append_nowait("r1", [event("r1", 4001)])  # queued behind the big one
            after = turns.count
            await pending.wait()
            await store.flush()
        assert turns.count > after, "the event loop did not run while the big write went through"
        assert [e.seq for e in await store.events("r1")] == list(range(1, 4002))
    finally:
        await store.aclose()


async def test_writer_without_spin(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "runs.db", writer_spin_us=0)
    try:
        await store.create_run(record("r1"))
        for seq in range(1, 21):
            await store.append_soon("r1", [event("r1", seq)]).wait()
        assert await store.last_seq("r1") == 20
    finally:
        await store.aclose()


def test_bad_writer_options_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="writer must be"):
        SQLiteStore(tmp_path / "a.db", writer="fork")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="writer_spin_us"):
        SQLiteStore(tmp_path / "b.db", writer_spin_us=-1)
