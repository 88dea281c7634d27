"""Crash durability: a run survives SIGKILL at random moments and finishes exactly once.

The run executes in a real subprocess (``tests/durability_driver.py``) on a real SQLite store. The
test kills it with SIGKILL again and again (>= 20 times, at seeded random moments), restarts it on
the same files each time, and finally lets it finish. Then it checks what a user would rely on:

- the run completed with the output the workflow's semantics give (computed here independently);
- no node that had completed (checkpointed) before a kill was invoked again afterwards, and every
  node ``node.completed`` exactly once in the event log;
- only nodes in flight at a kill were invoked again, with the same idempotency key, so the
  idempotent effects store holds exactly one effect per node;
- the event log's ``seq`` is exactly 1..N and ``run.completed`` is its last event.

Kill timing: the driver prints ``ready`` when its imports are done (Python startup, ~0.5 s, exercises
nothing of ours), and each kill lands in one of three phases: during startup (a fixed delay after
spawning, before the store is touched), while the store is being opened and the run recovered (0-12 ms
after ``ready``), or while nodes execute (15-90 ms after ``ready``). Measured from spawning, kills land
~0.05-0.7 s in. A whole run takes ~0.5 s of execution, so kills are paced: when the run is ahead of
its share of progress, the next kill is an early one, so that all the kills happen before the run is
done.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from agentflow.runtime import EventBase, NodeRecord, RunRecord, SQLiteStore
from tests.durability_driver import EXIT_FORBIDDEN_IMPORT, RUN_ID

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).with_name("durability_driver.py")
KILLS = 24
SEED = 20240611
START_TIMEOUT_S = 30.0
FINISH_TIMEOUT_S = 60.0

TOOL_PATHS = {
    "a", "b", "c", "d", "side", "f1", "f2", "f3", "join", "final",
    *(f"each[{i}].{node}" for i in range(6) for node in ("w", "v")),
    *(f"rounds#{k}.{node}" for k in range(3) for node in ("x", "y")),
}
COMPOSITE_PATHS = {"each", "rounds"}
ALL_PATHS = TOOL_PATHS | COMPOSITE_PATHS


def expected_output() -> dict[str, Any]:
    """The run's output, from the workflow's semantics (``work(n)`` returns ``n + 1``)."""

    def work(n: int) -> int:
        return n + 1

    a = work(1)
    b = work(a)
    c = work(b)
    d = work(c)
    side = work(100)
    join = work(work(d * 10) + work(d * 20) + work(d * 30) + side)
    each = [work(work(join + i) * 2) for i in range(6)]
    log: list[int] = []
    for iteration in range(3):  # `iteration < 2` after iterations 0 and 1: three iterations
        x = work(sum(log) + iteration)
        log.append(work(x * 2))
    return {"chain": d, "join": join, "each": each, "seen": {str(i): v for i, v in enumerate(each)},
            "log": log, "rounds": log[-1], "final": work(log[-1] + sum(each))}


@dataclass
class Attempt:
    """One driver process."""

    pid: int
    phase: str
    done_before: set[str]
    """Paths checkpointed as completed in the store when this process started."""
    done_after: set[str] = field(default_factory=set)
    finished_after: bool = False
    """The run was finished in the store when this process ended."""
    killed: bool = False
    kill_at: float | None = None
    """Seconds from spawning to the SIGKILL."""
    returncode: int | None = None


def read_store(db: Path) -> tuple[RunRecord | None, list[NodeRecord], list[EventBase]]:
    """What the store holds (read only while no driver runs)."""
    if not db.exists():
        return None, [], []

    async def read() -> tuple[RunRecord | None, list[NodeRecord], list[EventBase]]:
        store = SQLiteStore(db)
        try:
            return await store.get_run(RUN_ID), await store.node_records(RUN_ID), await store.events(RUN_ID)
        finally:
            await store.aclose()

    return anyio.run(read)


def progress(db: Path) -> tuple[set[str], bool]:
    """The paths checkpointed as completed, and whether the run is completed."""
    record, records, _ = read_store(db)
    return {r.path for r in records if r.kind == "completed"}, record is not None and record.status == "completed"


def spawn(files: list[Path], stderr: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(DRIVER), *map(str, files)], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)


def wait_ready(proc: subprocess.Popen[str]) -> bool:
    """Block until the driver prints ``ready``; False if it exited first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        readable, _, _ = select.select([proc.stdout], [], [], 0.05)
        if readable:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return True
            if line == "":  # EOF: the driver exited
                return False
        elif proc.poll() is not None:
            return False
    raise AssertionError(f"the driver did not get ready within {START_TIMEOUT_S} s")


def kill_plan(rng: random.Random, progress: float, kills_done: int) -> tuple[str, float]:
    """(phase, delay): pace the kills so the run is still unfinished at the last one."""
    behind_schedule = progress <= (kills_done + 1) / (KILLS + 2)
    roll = rng.random()
    if roll < 0.15:
        return "startup", rng.uniform(0.05, 0.3)
    if roll < 0.3 or not behind_schedule:
        return "open", rng.uniform(0.0, 0.012)
    return "flight", rng.uniform(0.015, 0.13)  # long enough for a slow machine to finish a node or two


def read_invocations(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def read_effects(path: Path) -> list[tuple[str, str, int, int, int]]:
    """(key, path, attempt, result, pid of the process that recorded it) per effect."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT key, path, attempt, result, pid FROM effects ORDER BY key").fetchall()
    finally:
        conn.close()
    return [(str(k), str(p), int(a), int(r), int(pid)) for k, p, a, r, pid in rows]


@pytest.mark.slow
def test_run_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    db, effects, invocations = tmp_path / "runs.db", tmp_path / "effects.db", tmp_path / "invocations.jsonl"
    files = [db, effects, invocations]
    rng = random.Random(SEED)
    attempts: list[Attempt] = []
    began = time.monotonic()

    with (tmp_path / "driver.stderr").open("w") as stderr:
        # -- the kills --------------------------------------------------------------------------------
        while sum(a.killed for a in attempts) < KILLS:
            done, _ = progress(db)
            phase, delay = kill_plan(rng, len(done) / len(ALL_PATHS), sum(a.killed for a in attempts))
            spawned = time.monotonic()
            proc = spawn(files, stderr)
            attempt = Attempt(proc.pid, phase, done)
            attempts.append(attempt)
            try:
                if phase == "startup" or wait_ready(proc):  # a startup kill does not wait for `ready`
                    time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    attempt.killed = True
                    attempt.kill_at = time.monotonic() - spawned
                attempt.returncode = proc.wait(timeout=FINISH_TIMEOUT_S)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                assert proc.stdout is not None
                proc.stdout.close()
            attempt.done_after, attempt.finished_after = progress(db)
            if not attempt.killed:
                break  # the run finished on its own before this kill: the assertions below say so
        # -- and the run to its end -------------------------------------------------------------------
        final = Attempt(0, "finish", progress(db)[0])
        proc = spawn(files, stderr)
        final.pid = proc.pid
        attempts.append(final)
        try:
            final.returncode = proc.wait(timeout=FINISH_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
        final.done_after, final.finished_after = progress(db)
    elapsed = time.monotonic() - began
    driver_errors = (tmp_path / "driver.stderr").read_text()

    assert final.returncode != EXIT_FORBIDDEN_IMPORT, driver_errors
    assert final.returncode == 0, f"the last driver exited {final.returncode}:\n{driver_errors}"
    killed = [a for a in attempts if a.killed]
    assert len(killed) == KILLS, (f"the run finished after {len(killed)} kills, before all {KILLS} "
                                  f"(phases {[a.phase for a in attempts]}):\n{driver_errors}")

    # -- the run completed with the right output, its log numbered 1..N, ending in run.completed ----
    record, records, events = read_store(db)
    assert record is not None and record.status == "completed", record
    assert record.output == expected_output()
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1)), "event seqs have gaps or duplicates"
    names = [e.event for e in events]  # type: ignore[attr-defined]
    assert names[-1] == "run.completed" and names.count("run.completed") == 1
    assert events[-1].output == record.output  # type: ignore[attr-defined]

    # -- every node completed exactly once: one node.completed event and one checkpoint per path -----
    completed_events = Counter(e.node for e in events if e.event == "node.completed")  # type: ignore[attr-defined]
    assert set(completed_events) == ALL_PATHS
    assert {path: n for path, n in completed_events.items() if n != 1} == {}
    checkpoints = Counter(r.path for r in records if r.kind == "completed")
    assert checkpoints == Counter(ALL_PATHS)
    assert {e.attempt for e in events if e.event == "node.started"} == {1}  # type: ignore[attr-defined]

    # -- no node that had completed before a kill ran again ----------------------------------------
    calls = read_invocations(invocations)
    assert {c["path"] for c in calls} == TOOL_PATHS
    by_pid: dict[int, list[str]] = defaultdict(list)
    for call in calls:
        by_pid[call["pid"]].append(call["path"])
    known_pids = {a.pid for a in attempts}
    assert set(by_pid) <= known_pids
    for attempt in attempts:
        invoked = by_pid.get(attempt.pid, [])
        assert not attempt.done_before & set(invoked), (
            f"process {attempt.pid} ({attempt.phase}) re-ran nodes that had completed before it started: "
            f"{sorted(attempt.done_before & set(invoked))}")
        repeated = [path for path, n in Counter(invoked).items() if n > 1]
        assert not repeated, f"process {attempt.pid} invoked {repeated} more than once"

    # -- re-invocations: only of in-flight nodes, at most once per restart, same key ------------------
    per_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for call in calls:
        per_path[call["path"]].append(call)
    for path, path_calls in per_path.items():
        assert len(path_calls) <= 1 + len(killed), path
        assert {c["key"] for c in path_calls} == {f"{RUN_ID}:{path}:1"}, path_calls
    reinvoked = {path: len(path_calls) for path, path_calls in per_path.items() if len(path_calls) > 1}

    # -- the idempotent effects store: exactly one effect per node, the one the run used -------------
    rows = read_effects(effects)
    assert Counter(path for _, path, _, _, _ in rows) == Counter(TOOL_PATHS)
    outputs = {e.node: e.output for e in events if e.event == "node.completed"}  # type: ignore[attr-defined]
    for key, path, attempt_no, result, _ in rows:
        assert key == f"{RUN_ID}:{path}:1" and attempt_no == 1
        assert outputs[path] == result, path
    # Nodes killed after their effect was recorded but before their checkpoint committed: the process
    # that finished them found the key recorded and made no second effect (timing-dependent, reported).
    checkpointed_by = {path: a.pid for a in attempts for path in a.done_after - a.done_before}
    deduplicated = sorted(path for _, path, _, _, pid in rows if checkpointed_by.get(path, pid) != pid)

    # -- the kills were not vacuous -------------------------------------------------------------
    mid_run = [a for a in killed if a.done_after and not a.finished_after]  # after a checkpoint, before the end
    progressed = [a for a in killed if a.done_after - a.done_before]
    phases = Counter(a.phase for a in killed)
    summary = (f"{len(killed)} kills in {elapsed:.1f} s, phases {dict(phases)}, kill times "
               f"{min(a.kill_at or 0 for a in killed):.2f}-{max(a.kill_at or 0 for a in killed):.2f} s after "
               f"spawning; {len(mid_run)} after the first checkpoint, {len(progressed)} after progress; "
               f"re-invoked after a kill: {reinvoked}; {len(calls)} invocations for {len(TOOL_PATHS)} tool nodes; "
               f"effect already recorded when re-invoked: {deduplicated}")
    print(summary)
    assert len(mid_run) >= 10, summary
    assert len(progressed) >= 5, summary
    assert sum(reinvoked.values()) - len(reinvoked) >= 3, summary  # nodes in flight at a kill ran again
