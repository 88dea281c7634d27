"""One executor per run: a run claimed by one process (a server, ``agentflow run``) is left alone by
every other process on the same store, and taken over at once when its process dies (``claims``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from agentflow.runtime import Runtime
from agentflow.runtime.errors import RunExistsError, RunStateError, ToolNotFoundError
from agentflow.runtime.store import SQLiteStore
from tests.claim_holder import make_work, workflows

ROOT = Path(__file__).resolve().parent.parent
HOLDER = ROOT / "tests" / "claim_holder.py"


def spawn(store: Path, mode: str, run_id: str, until: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, str(HOLDER), str(store), mode, run_id], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != until:
        proc.kill()
        raise AssertionError(f"the holder said {line!r}: {proc.communicate(timeout=30)[1]}")
    return proc


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def calls(store: Path) -> int:
    file = Path(str(store) + ".calls")
    return len(file.read_text().split()) if file.exists() else 0


def test_a_claim_holds_against_other_processes_until_its_process_dies(tmp_path: Path,
                                                                      procs: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "runs.db"
    holder = spawn(path, "claim", "r1", "held")
    procs.append(holder)
    store = SQLiteStore(path)
    try:
        assert not store.claim("r1")
        assert store.claim("r2")  # one run's claim is not another's
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert store.claim("r1")  # the kernel dropped the dead process's lock: no stale claim
    finally:
        store.close_sync()
    assert (tmp_path / "runs.db.lock").exists()


def test_two_stores_of_one_process_do_not_share_claims(tmp_path: Path) -> None:
    a, b = SQLiteStore(tmp_path / "runs.db"), SQLiteStore(tmp_path / "runs.db")
    try:
        assert a.claim("r") and not b.claim("r") and not a.claim("r")
        a.close_sync()  # closing one store releases its claims, not the other's descriptor
        assert b.claim("r") and not b.claim("r")
        b.release("r")
        assert b.claim("r")
    finally:
        b.close_sync()


@pytest.mark.timeout(60)  # without claims, this process would wait in the other's tool
def test_a_run_executing_elsewhere_is_neither_recovered_nor_cancelled_here(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "runs.db"
    other = spawn(path, "run", "r1", "working")  # the other process is inside the tool
    procs.append(other)

    async def second_process() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            assert await rt.recover() == []  # `agentflow serve` started again on the same store
            assert (await rt.get_run("r1")).status == "running"
            with pytest.raises(RunStateError, match="executing in another process"):
                await rt.cancel("r1")
            with pytest.raises(RunExistsError):
                await rt.start("block", {}, run_id="r1")

    anyio.run(second_process)
    assert calls(path) == 1  # the tool ran once: in the process that owns the run
    Path(str(path) + ".go").touch()
    assert other.wait(timeout=60) == 0


@pytest.mark.timeout(60)  # without claims, this process would wait in the other's tool
def test_a_run_whose_process_died_is_recovered_at_once(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "runs.db"
    other = spawn(path, "run", "r1", "working")
    procs.append(other)
    other.send_signal(signal.SIGKILL)
    other.wait(timeout=30)
    Path(str(path) + ".go").touch()

    async def recovering_process() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            assert await rt.get_run("r1") is not None
            record = await rt.wait("r1")
            assert (record.status, record.output) == ("completed", 1)

    anyio.run(recovering_process)
    assert calls(path) == 2  # killed inside the tool, run again by the recovering process


@pytest.mark.timeout(60)  # without claims, this process would wait in the other's tool
def test_two_answers_to_one_interrupt_from_two_processes_run_the_next_node_once(
        tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "runs.db"

    async def ask() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            record = await rt.run("asking", {}, run_id="r1")
            assert record.status == "interrupted"

    anyio.run(ask)
    first = spawn(path, "resume", "r1", "working")  # the first answer: its process runs `work`
    procs.append(first)

    async def second_answer() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))], recover=False) as rt:
            with pytest.raises(RunStateError, match=r"executing in another process|not waiting"):
                await rt.resume("r1", True)

    anyio.run(second_answer)
    Path(str(path) + ".go").touch()
    assert first.wait(timeout=60) == 0
    assert calls(path) == 1


def test_a_run_using_a_tool_this_runtime_lacks_is_left_unchanged_for_one_that_has_it(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    Path(str(path) + ".go").touch()  # `work` returns at once

    async def scenario() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            assert (await rt.run("asking", {}, run_id="r1")).status == "interrupted"
        async with Runtime(store=path, workflows=workflows()) as rt:  # a deploy without the tool
            with pytest.raises(ToolNotFoundError, match=r"'work'.*the run is unchanged"):
                await rt.resume("r1", True)
            assert (await rt.get_run("r1")).status == "interrupted"
            await rt.store.update_run("r1", status="running")  # as if killed while running
        async with Runtime(store=path, workflows=workflows()) as rt:
            reason = rt.unrecovered["r1"]
            assert isinstance(reason, ToolNotFoundError) and "'work'" in str(reason) and not rt.executing("r1")
            assert (await rt.get_run("r1")).status == "running"
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            assert (await rt.wait("r1")).status == "interrupted"  # recovered: it asks again
            await rt.resume("r1", True)
            assert (await rt.wait("r1")).output == 1

    anyio.run(scenario)


def test_the_server_says_why_it_does_not_execute_a_run_it_could_not_resume(tmp_path: Path) -> None:
    # it used to list such a run as `running` forever, with nothing to tell it apart from one that runs
    import httpx

    from agentflow.server import ServerConfig
    from tests.serving import running_server

    path = tmp_path / "runs.db"
    Path(str(path) + ".go").touch()

    async def stopped_mid_run() -> None:
        async with Runtime(store=path, workflows=workflows(), tools=[make_work(str(path))]) as rt:
            assert (await rt.run("asking", {}, run_id="r1")).status == "interrupted"
            await rt.store.update_run("r1", status="running")  # as if the process died while it ran

    anyio.run(stopped_mid_run)
    with running_server(ServerConfig(model=None, store=str(path))) as url:  # a deploy without `work`
        run = httpx.get(f"{url}/v1/runs/r1").json()
        assert run["status"] == "running" and "'work'" in run["blocked"]
        listed = httpx.get(f"{url}/v1/runs").json()["data"]
        assert [r["blocked"] is not None for r in listed] == [True]
