"""Driver process of ``tests/test_durability.py``: runs one workflow run to its end on an SQLite store,
and is SIGKILLed by the test at random moments and started again on the same files.

    python tests/durability_driver.py RUNS_DB EFFECTS_DB INVOCATIONS_LOG

On entry the ``Runtime`` resumes the run if the store holds it unfinished; if the store has no run
yet, the driver starts it (fixed id :data:`RUN_ID`). It prints ``ready`` when its imports are done,
just before it opens the runtime (so the test can time its kills from there), waits for the run and
exits 0 when it completed.

Every tool node calls :func:`work`, which behaves like a careful user's side-effecting tool:

- it first appends one line per *invocation* to ``INVOCATIONS_LOG`` (key, path, attempt, pid), so the
  test sees every call, including the ones a kill interrupted;
- it sleeps 5-40 ms (the "network");
- it records its *effect* in ``EFFECTS_DB`` keyed by ``ctx.idempotency_key``, idempotently: a key
  already recorded returns the recorded result and records nothing new.

Only agentflow's orchestrator is imported, never the engine or torch: the driver checks
``sys.modules`` and exits 3 if either slipped in.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import yaml

from agentflow.dsl.ir import WorkflowSpec
from agentflow.runtime import Runtime
from agentflow.tool import ToolContext

RUN_ID = "durable-run"
FORBIDDEN_MODULES = ("torch", "engine")
EXIT_FORBIDDEN_IMPORT = 3
EXIT_NOT_COMPLETED = 1

# 28 tool nodes and 2 composite nodes: two start nodes (a chain and a side node), a fan-out from
# `d` to three nodes joined by `join` (which also waits for `side`), a map over 6 items (concurrency
# 3, two nodes per item, merging into state), a loop of 3 iterations whose body reads the state and
# appends to it, and a final node.
WORKFLOW = """
name: durable
state:
  log: {type: array, reducer: append}
  seen: {type: object, reducer: merge}
start: [a, side]
nodes:
  - {id: a, kind: tool, tool: work, args: {n: 1}}
  - {id: b, kind: tool, tool: work, args: {n: "{{ a }}"}}
  - {id: c, kind: tool, tool: work, args: {n: "{{ b }}"}}
  - {id: d, kind: tool, tool: work, args: {n: "{{ c }}"}}
  - {id: side, kind: tool, tool: work, args: {n: 100}}
  - {id: f1, kind: tool, tool: work, args: {n: "{{ d * 10 }}"}}
  - {id: f2, kind: tool, tool: work, args: {n: "{{ d * 20 }}"}}
  - {id: f3, kind: tool, tool: work, args: {n: "{{ d * 30 }}"}}
  - {id: join, kind: tool, tool: work, args: {n: "{{ f1 + f2 + f3 + side }}"}}
  - id: each
    kind: map
    over: "[join, join + 1, join + 2, join + 3, join + 4, join + 5]"
    concurrency: 3
    body:
      nodes:
        - {id: w, kind: tool, tool: work, args: {n: "{{ item }}"}}
        - id: v
          kind: tool
          tool: work
          args: {n: "{{ w * 2 }}"}
          writes: {seen: "{ (index | string): output }"}
      edges: [{from: w, to: v}]
  - id: rounds
    kind: loop
    condition: iteration < 2
    max_iterations: 5
    body:
      nodes:
        - {id: x, kind: tool, tool: work, args: {n: "{{ (state.log | sum) + iteration }}"}}
        - {id: y, kind: tool, tool: work, args: {n: "{{ x * 2 }}"}, writes: log}
      edges: [{from: x, to: y}]
  - {id: final, kind: tool, tool: work, args: {n: "{{ rounds + (each | sum) }}"}}
edges:
  - {from: a, to: b}
  - {from: b, to: c}
  - {from: c, to: d}
  - {from: d, to: f1}
  - {from: d, to: f2}
  - {from: d, to: f3}
  - {from: f1, to: join}
  - {from: f2, to: join}
  - {from: f3, to: join}
  - {from: side, to: join}
  - {from: join, to: each}
  - {from: each, to: rounds}
  - {from: rounds, to: final}
output: {chain: d, join: join, each: each, seen: state.seen, log: state.log, rounds: rounds, final: final}
"""


def workflow() -> WorkflowSpec:
    return WorkflowSpec.model_validate(yaml.safe_load(WORKFLOW))


def work_result(n: int) -> int:
    """What ``work`` computes (the test derives the expected output from it)."""
    return n + 1


def init_effects(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, path TEXT NOT NULL, "
                     "attempt INTEGER NOT NULL, n INTEGER NOT NULL, result INTEGER NOT NULL, pid INTEGER NOT NULL)")
    conn.close()


def make_work(effects: Path, invocations: Path) -> Callable[[int, ToolContext], int]:
    """The ``work`` tool bound to this driver's files."""

    def work(n: int, ctx: ToolContext) -> int:
        line = json.dumps({"key": ctx.idempotency_key, "path": ctx.node_id, "attempt": ctx.attempt,
                           "pid": os.getpid(), "n": n}) + "\n"
        fd = os.open(invocations, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())  # one write per line: O_APPEND keeps concurrent lines whole
        finally:
            os.close(fd)
        time.sleep(random.uniform(0.005, 0.040))
        conn = sqlite3.connect(effects, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT result FROM effects WHERE key = ?", (ctx.idempotency_key,)).fetchone()
            if row is not None:  # already done by an earlier invocation with this key: no second effect
                conn.execute("COMMIT")
                return int(row[0])
            result = work_result(n)
            conn.execute("INSERT INTO effects VALUES (?, ?, ?, ?, ?, ?)",
                         (ctx.idempotency_key, ctx.node_id, ctx.attempt, n, result, os.getpid()))
            conn.execute("COMMIT")
            return result
        finally:
            conn.close()

    return work


def forbidden_imports() -> list[str]:
    return sorted({name.split(".")[0] for name in sys.modules} & set(FORBIDDEN_MODULES))


async def drive(db: Path, effects: Path, invocations: Path) -> int:
    init_effects(effects)
    print("ready", flush=True)  # imports done; what follows opens the store and resumes the run
    async with Runtime(tools={"work": make_work(effects, invocations)}, store=db) as rt:
        assert rt.store is not None
        if await rt.store.get_run(RUN_ID) is None:
            await rt.start(workflow(), run_id=RUN_ID)
        record = await rt.wait(RUN_ID)
    if record.status != "completed":
        print(f"run ended {record.status}: {record.error}", file=sys.stderr, flush=True)
        return EXIT_NOT_COMPLETED
    return 0


def main(argv: list[str]) -> int:
    db, effects, invocations = (Path(arg) for arg in argv)
    code = anyio.run(drive, db, effects, invocations)
    loaded = forbidden_imports()
    if loaded:
        print(f"FORBIDDEN IMPORTS in the durability driver: {loaded}", file=sys.stderr, flush=True)
        return EXIT_FORBIDDEN_IMPORT
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
